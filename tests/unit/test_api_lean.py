"""The Lambda imports only what it needs, and its bundle carries exactly that.

The handler is imported the way the Lambda runtime does (lambda/api/handler.py by path) in a
fresh interpreter, so nothing this test process already loaded can hide an import.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from importlib.metadata import PackageNotFoundError, packages_distributions, requires

from infra.bundle import HANDLER_SOURCES, PROVIDED_BY_LAMBDA, lambda_requirements
from tests.fixtures.api import LAMBDA_HANDLER, ROOT

PROBE = f"""
import importlib.util, json, sys
at_start = set(sys.modules)  # the interpreter's own (site hooks such as _distutils_hack)
spec = importlib.util.spec_from_file_location("handler", {str(LAMBDA_HANDLER)!r})
spec.loader.exec_module(importlib.util.module_from_spec(spec))
print(json.dumps({{n: getattr(m, "__file__", None) for n, m in sys.modules.items() if n not in at_start}}))
"""

FORBIDDEN = ("yaml", "sdeks.config", "sdeks.config.loader", "sdeks.local", "sdeks.cli", "typer", "rich", "uvicorn")


def _handler_modules() -> dict[str, str | None]:
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, check=True, cwd=ROOT)
    return json.loads(out.stdout)


def test_handler_does_not_load_config_loader_yaml_local_mode_or_cli():
    modules = _handler_modules()
    assert "sdeks.api.handler" in modules
    assert [name for name in FORBIDDEN if name in modules] == []


def test_bundle_sources_cover_every_sdeks_module_the_handler_imports():
    modules = _handler_modules()
    for name, file in modules.items():
        if name == "sdeks" or name.startswith("sdeks."):
            rel = file.removeprefix(str(ROOT) + "/")
            assert any(rel == src or rel.startswith(src + "/") for src in HANDLER_SOURCES), f"{rel} not bundled"


def _distribution_closure(names: list[str]) -> set[str]:
    seen: set[str] = set()
    todo = [re.split(r"[=<>~\[ ;]", n, maxsplit=1)[0] for n in names]
    while todo:
        dist = todo.pop().lower().replace("_", "-")
        if dist in seen:
            continue
        seen.add(dist)
        try:
            reqs = requires(dist) or []
        except PackageNotFoundError:
            continue
        todo += [re.split(r"[=<>~\[ ;(!]", r, maxsplit=1)[0] for r in reqs if "extra ==" not in r]
    return seen


def test_bundle_pins_cover_every_third_party_import():
    shipped = _distribution_closure(lambda_requirements()) | _distribution_closure(list(PROVIDED_BY_LAMBDA))
    dists = packages_distributions()
    top_level = {name.split(".")[0] for name in _handler_modules()} - set(sys.stdlib_module_names)
    missing = []
    for module in sorted(top_level - {"sdeks", "__main__"}):
        owners = {d.lower().replace("_", "-") for d in dists.get(module, [])}
        if owners and not owners & shipped:
            missing.append(module)
    assert missing == [], f"imported by the handler but not in requirements/api.txt: {missing}"
    assert "pyyaml" not in shipped
