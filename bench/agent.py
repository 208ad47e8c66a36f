"""Queue agent benchmark: how busy does the agent keep a runtime? Prints JSON.

A fake runtime takes a fixed time per task (0.5 s and 2 s); N tasks are queued
on a moto server stack, then one real ``python -m queue_agent`` process works
through them. Busy ratio = time the runtime spent executing / span from the
first execution start to the last execution end, measured by the runtime.

    .venv/bin/python bench/agent.py [--tasks 12] [--delays 0.5,2]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from sdeks.local.provision import provision  # noqa: E402
from tests.fixtures.agent import FakeRuntime, StackClient, agent_env, launch_agent, task_message  # noqa: E402
from tests.fixtures.aws import AWS_ENV, free_port, stack_config, wait_http  # noqa: E402


def run(endpoint: str, delay: float, tasks: int, prefetch: int, logdir: Path) -> dict:
    resources = provision(stack_config(), endpoint)
    stack = StackClient(resources)
    runtime = FakeRuntime(delay_s=delay).start()
    ids = [stack.publish(task_message()) for _ in range(tasks)]
    env = agent_env(resources, runtime.url, wait_time_s=2, prefetch=prefetch, visibility_s=60)
    started = time.monotonic()
    agent = launch_agent(env, logdir / f"agent-{delay}.log")
    try:
        for task_id in ids:
            stack.wait_events(task_id, timeout=60 + tasks * delay * 2)
        done = time.monotonic()
    finally:
        agent.terminate()
        runtime.stop()
    busy = runtime.busy
    span = busy[-1][1] - busy[0][0]
    executing = sum(end - start for start, end in busy)
    return {
        "task_s": delay,
        "tasks": tasks,
        "prefetch": prefetch,
        "busy_ratio": round(executing / span, 4),
        "tasks_per_s": round(tasks / span, 3),
        "agent_overhead_per_task_ms": round((span - executing) / max(1, tasks - 1) * 1000, 1),
        "first_task_latency_s": round(busy[0][0] - started, 2),
        "wall_s": round(done - started, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tasks", type=int, default=12)
    parser.add_argument("--delays", default="0.5,2")
    parser.add_argument("--prefetch", type=int, default=1)
    args = parser.parse_args()
    os.environ.update(AWS_ENV)
    port = free_port()
    moto = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    endpoint = f"http://127.0.0.1:{port}"
    try:
        wait_http(f"{endpoint}/moto-api/", proc=moto)
        with tempfile.TemporaryDirectory() as tmp:
            results = [run(endpoint, float(d), args.tasks, args.prefetch, Path(tmp)) for d in args.delays.split(",")]
    finally:
        moto.terminate()
        moto.wait(10)
    print(json.dumps({"benchmark": "queue_agent", "backend": "moto server", "results": results}, indent=2))


if __name__ == "__main__":
    main()
