"""``.sdeks/local.json``: how other tools (CLI, tests, demo) find a running local stack."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

STATE_DIR = Path(".sdeks")
STATE_FILE = STATE_DIR / "local.json"


class RuntimeEndpoints(BaseModel):
    type: str
    runtime_url: str
    agent_url: str
    queue_url: str
    dlq_url: str


class LocalState(BaseModel):
    """What ``sdeks local up`` writes once every component is healthy."""

    api_url: str
    api_key: str
    aws_endpoint_url: str
    region: str
    output_bucket: str
    tasks_topic_arn: str
    results_topic_arn: str
    task_table: str
    queues: dict[str, str]
    runtimes: dict[str, RuntimeEndpoints]
    supervisor_pid: int
    log_dir: str
    stop_timeout_s: float = Field(
        default=60.0, description="how long `sdeks local down` waits: the agents' shutdown grace and the rest"
    )
    webhook_queue_url: str = ""
    webhook_secret_id: str = ""


def state_path(root: Path | None = None) -> Path:
    return (root or Path.cwd()) / STATE_FILE


def write_state(state: LocalState, path: Path) -> None:
    """Write atomically and owner-only: the file holds the local API key."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(state.model_dump_json(indent=2))
    tmp.replace(path)


def read_state(path: Path) -> LocalState | None:
    try:
        data: Any = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    try:
        return LocalState.model_validate(data)
    except ValueError:
        return None


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
