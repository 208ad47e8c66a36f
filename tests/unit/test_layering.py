"""The shared library sits at the bottom: ``sdeks`` never imports an application package.

Application packages (the agent, the runtime, the webhook deliverer, the CDK app) import the
contract and the config from ``sdeks``; an import the other way would drag an application's
dependencies into every process that only wants the contract.
"""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
APPLICATIONS = ("queue_agent", "sd_runtime", "webhooks", "infra")


def imported_modules(path: Path) -> set[str]:
    modules: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            modules.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            modules.add(node.module)
    return modules


def test_sdeks_imports_no_application_package():
    offenders = {
        f"{path.relative_to(REPO)}: {module}"
        for path in sorted((REPO / "sdeks").rglob("*.py"))
        for module in imported_modules(path)
        if module.split(".")[0] in APPLICATIONS
    }
    assert not offenders, sorted(offenders)


def test_the_check_sees_an_upward_import(tmp_path):
    probe = tmp_path / "probe.py"
    probe.write_text("def f():\n    from queue_agent.settings import Settings\n")
    assert "queue_agent.settings" in imported_modules(probe)
