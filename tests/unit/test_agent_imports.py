"""The agent's import graph stays lean: a pod runs the agent, not the config loader, local mode or the CLI."""

from __future__ import annotations

import json
import subprocess
import sys

FORBIDDEN = ("yaml", "sdeks.config.loader", "sdeks.local", "sdeks.cli", "typer")


def test_importing_the_agent_does_not_pull_local_mode_config_loader_or_cli():
    probe = (
        "import json, sys\n"
        "import queue_agent.__main__, queue_agent.worker, queue_agent.server, queue_agent.settings\n"
        f"print(json.dumps([m for m in {FORBIDDEN!r} if m in sys.modules]))\n"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True)
    assert json.loads(out.stdout) == []
