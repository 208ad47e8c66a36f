"""docs/deploy.md is the walk a user takes: every sdeks command, option and make target in it exists."""

from __future__ import annotations

import re
import shlex

import click
import typer

from sdeks.cli import app
from tests.fixtures.infra import REPO_ROOT

DOC = (REPO_ROOT / "docs" / "deploy.md").read_text()


def _command_lines() -> list[str]:
    """Shell lines of the fenced blocks (continuations joined) and inline `sdeks …` spans."""
    lines = []
    for block in re.findall(r"```(?:bash)?\n(.*?)```", DOC, flags=re.DOTALL):
        lines += [line.split("#")[0].strip() for line in block.replace("\\\n", " ").splitlines()]
    lines += re.findall(r"`(sdeks [^`]+)`", DOC)
    return [line for line in lines if line]


def _sdeks_invocations() -> list[list[str]]:
    found = []
    for line in _command_lines():
        for part in re.split(r";|&&|\$\(|\bdo\b", line):
            words = shlex.split(part.replace("$", "X"), posix=True) if part.strip() else []
            if words and words[0] == "sdeks":
                found.append(words[1:])
    return found


def test_every_sdeks_command_and_option_exists():
    root = typer.main.get_command(app)
    invocations = _sdeks_invocations()
    assert {tuple(i[:2]) for i in invocations} >= {("models", "push"), ("models", "list"), ("smoke", "--stack")}
    for words in invocations:
        command = root
        ctx = click.Context(root)
        rest = list(words)
        while hasattr(command, "get_command") and rest and not rest[0].startswith("-"):  # a group
            name = rest.pop(0)
            command = command.get_command(ctx, name)
            assert command is not None, f"sdeks {' '.join(words)}: no command {name!r}"
        options = {opt for param in command.params for opt in getattr(param, "opts", [])}
        for word in rest:
            if word.startswith("-"):
                assert word.split("=")[0] in options, f"sdeks {' '.join(words)}: no option {word}"


def test_every_make_target_and_the_cdk_cli_pin_exist():
    makefile = (REPO_ROOT / "Makefile").read_text()
    targets = set(re.findall(r"^([a-z][\w-]*):", makefile, flags=re.MULTILINE))
    used = set(re.findall(r"\bmake ([a-z][\w-]*)", DOC))
    assert used and used <= targets, used - targets
    pinned = re.search(r"aws-cdk@([\d.]+)", (REPO_ROOT / "infra" / "synth.sh").read_text()).group(1)
    assert set(re.findall(r"aws-cdk@([\d.]+)", DOC)) == {pinned}


def test_the_walk_has_every_step():
    steps = re.findall(r"^## \d\. (.+)$", DOC, flags=re.MULTILINE)
    walk = ["Prerequisites", "Configure", "Deploy", "Push the model", "Smoke test", "Watch it scale", "Tear down"]
    assert steps == walk
