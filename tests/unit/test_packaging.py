"""pyproject.toml declares what requirements/*.txt pins: every exact pin satisfies the declared range."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[2]
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def _declared() -> dict[str, list[Requirement]]:
    """Distribution → every requirement on it, core and extras (self-references left out)."""
    out: dict[str, list[Requirement]] = {}
    groups = [PROJECT["dependencies"], *PROJECT["optional-dependencies"].values()]
    for group in groups:
        for line in group:
            req = Requirement(line)
            if canonicalize_name(req.name) != "sdeks":
                out.setdefault(canonicalize_name(req.name), []).append(req)
    return out


def _pins() -> dict[str, tuple[str, str]]:
    """Distribution → (pinned version, file) from requirements/*.txt."""
    out = {}
    for path in sorted((ROOT / "requirements").glob("*.txt")):
        for line in path.read_text().splitlines():
            line = line.split("#", 1)[0].strip()
            if line:
                req = Requirement(line)
                [spec] = req.specifier
                assert spec.operator == "==", f"{path.name}: {line} must be an exact pin"
                out[canonicalize_name(req.name)] = (spec.version, path.name)
    return out


@pytest.mark.parametrize("dist", sorted(_pins()))
def test_every_pin_is_declared_and_within_its_range(dist):
    version, source = _pins()[dist]
    declared = _declared()
    assert dist in declared, f"{dist} (pinned in {source}) is not declared in pyproject.toml"
    for req in declared[dist]:
        assert req.specifier.contains(version, prereleases=True), f"{dist}=={version} ({source}) outside {req}"


def test_every_declared_dependency_is_pinned():
    assert sorted(set(_declared()) - set(_pins())) == []


def test_extras_per_component_and_a_root_requirements_file_for_cdk():
    assert {"api", "agent", "runtime", "cdk", "dev"} <= set(PROJECT["optional-dependencies"])
    lines = (ROOT / "requirements.txt").read_text().splitlines()
    included = [line.removeprefix("-r ").strip() for line in lines if line.startswith("-r ")]
    assert "requirements/cdk.txt" in included
    assert all((ROOT / path).is_file() for path in included)
