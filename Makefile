# Every target installs what it needs into .venv, idempotently (stamp files per requirements file).
SHELL := /bin/bash
PY_BOOT ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
STAMPS := $(VENV)/.stamps
export JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION := 20
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: install install-cdk install-dev test demo lint bench synth clean

$(PY):
	$(PY_BOOT) -m venv $(VENV)
	$(PIP) install -q --upgrade pip

$(STAMPS)/%: requirements/%.txt | $(PY)
	@mkdir -p $(STAMPS)
	$(PIP) install -q -r $<
	@touch $@

# torch and its matching torchvision go in first, alone, so runtime.txt never pulls another torch build
# (DESIGN.md "Known traps"). torch 2.14.1 is the PyPI (CUDA) build; it runs on the CPU where no GPU is.
$(STAMPS)/runtime: $(STAMPS)/torch

$(STAMPS)/package: pyproject.toml $(STAMPS)/base | $(PY)
	$(PIP) install -q --no-deps -e .
	@touch $@

install: $(STAMPS)/package $(STAMPS)/base $(STAMPS)/api $(STAMPS)/agent $(STAMPS)/webhooks $(STAMPS)/runtime $(STAMPS)/local
install-cdk: install $(STAMPS)/cdk
install-dev: install install-cdk $(STAMPS)/dev

test: install-dev
	$(VENV)/bin/ruff check .
	$(PY) -m pytest

lint: install-dev
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

demo: install
	$(PY) -m sdeks.demo

CONFIG ?= config/default.yaml
synth: install-cdk
	infra/synth.sh $(CONFIG)

bench: install-dev
	@for b in bench/*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache cdk.out .sdeks
