"""Local mode: ``local down`` waits as long as the agents' shutdown grace needs, ``local up`` reuses ports
left in TIME_WAIT — through the real CLI and a real local stack."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from sdeks.local.state import LocalState, read_state, write_state
from tests.fixtures.aws import free_port
from tests.fixtures.local import sdeks

pytestmark = pytest.mark.slow

CONFIG = """
project: hardenlocal
runtimes:
  - name: sdruntime
    shutdown_grace_s: 20
"""

SLOW_TO_STOP = """
import signal, sys, time
def stop(*_):
    time.sleep(3)  # an agent finishing its task within the grace
    sys.exit(0)
signal.signal(signal.SIGTERM, stop)
print("ready", flush=True)
time.sleep(600)
"""


def _fake_state(pid: int, stop_timeout_s: float) -> LocalState:
    return LocalState(
        api_url="http://127.0.0.1:1",
        api_key="k",
        aws_endpoint_url="http://127.0.0.1:2",
        region="us-east-1",
        output_bucket="b",
        tasks_topic_arn="t",
        results_topic_arn="r",
        task_table="tt",
        queues={},
        runtimes={},
        supervisor_pid=pid,
        log_dir="/tmp",
        stop_timeout_s=stop_timeout_s,
    )


@pytest.mark.parametrize(("budget", "clean"), [(1.0, False), (20.0, True)])
def test_down_waits_the_budget_the_stack_recorded(tmp_path: Path, budget, clean):
    proc = subprocess.Popen([sys.executable, "-c", SLOW_TO_STOP], stdout=subprocess.PIPE, start_new_session=True)
    try:
        assert proc.stdout.readline().strip() == b"ready"
        threading.Thread(target=proc.wait, daemon=True).start()  # reap it as init reaps a detached stack
        write_state(_fake_state(proc.pid, budget), tmp_path / ".sdeks" / "local.json")
        result = sdeks(tmp_path, "local", "down", timeout=60, check=True)
        output = result.stdout + result.stderr
        assert ("did not stop within" not in output) == clean, output
        assert proc.wait(10) == (0 if clean else -9)
    finally:
        if proc.poll() is None:
            proc.kill()


def test_down_then_up_again_on_the_same_ports(tmp_path: Path, tiny_model_dir):
    (tmp_path / "sdeks.yaml").write_text(CONFIG)
    api_port, aws_port = free_port(), free_port()
    up = ("local", "up", "--detach", "--config", "sdeks.yaml", "--api-port", str(api_port), "--aws-port", str(aws_port))
    up += ("--model", str(Path(tiny_model_dir) / "tiny-sd"))
    sdeks(tmp_path, *up, check=True)
    try:
        state = read_state(tmp_path / ".sdeks" / "local.json")
        assert state is not None and state.stop_timeout_s >= 20 + 5  # the agent gets its shutdown grace
        for url in (f"{state.api_url}/healthz", f"{state.aws_endpoint_url}/moto-api/"):
            for _ in range(3):  # the servers close these connections first: their ports go to TIME_WAIT
                httpx.get(url, headers={"Connection": "close"}, timeout=10)
        sdeks(tmp_path, "local", "down", check=True)
        started = time.monotonic()
        again = sdeks(tmp_path, *up)
        assert again.returncode == 0, again.stdout + again.stderr
        assert time.monotonic() - started < 240
    finally:
        sdeks(tmp_path, "local", "down")
