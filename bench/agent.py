"""Queue agent benchmark: how busy does the agent keep a runtime, with and without AWS latency? Prints JSON.

A fake runtime takes a fixed time per task and executes one task at a time, like
one GPU. Tasks are queued on a moto server stack; one real ``python -m queue_agent``
process (production defaults but short long polls) works through them, talking to
AWS through a proxy that adds a fixed latency to every request (0 ms, and 30 ms —
about what a pod sees to SQS/S3/SNS/DynamoDB in-region).

Per run, measured by the runtime: busy ratio = executing time / span from the first
execution start to the last end; tasks/s over that span; the gaps between one
execution's end and the next one's start (p50, max).

    .venv/bin/python bench/agent.py [--task-s 0.1,0.25,2] [--latency-ms 0,30] [--span-s 8]
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from sdeks.local.provision import provision  # noqa: E402
from tests.fixtures.agent import FakeRuntime, FlakyProxy, StackClient, agent_env, launch_agent, task_message  # noqa: E402
from tests.fixtures.aws import AWS_ENV, free_port, stack_config, wait_http  # noqa: E402

MIN_TASKS = 10


def run(moto: str, task_s: float, latency_ms: int, span_s: float, prefetch: int, logdir: Path) -> dict:
    resources = provision(stack_config(), moto)
    stack = StackClient(resources)
    runtime = FakeRuntime(delay_s=task_s).start()
    proxy = FlakyProxy(moto, latency_s=latency_ms / 1000).start()
    tasks = max(MIN_TASKS, round(span_s / task_s))
    ids = [stack.publish(task_message()) for _ in range(tasks)]
    env = agent_env(resources, runtime.url, wait_time_s=2, prefetch=prefetch, visibility_s=60)
    env["AWS_ENDPOINT_URL"] = proxy.url
    started = time.monotonic()
    agent = launch_agent(env, logdir / f"agent-{task_s}-{latency_ms}.log")
    try:
        for task_id in ids:
            stack.wait_events(task_id, timeout=60 + tasks * task_s * 3)
        done = time.monotonic()
    finally:
        agent.terminate()
        runtime.stop()
        proxy.stop()
    busy = sorted(runtime.busy)
    span = busy[-1][1] - busy[0][0]
    executing = sum(end - start for start, end in busy)
    gaps_ms = [max(0.0, (later[0] - earlier[1]) * 1000) for earlier, later in itertools.pairwise(busy)]
    failed = [e["id"] for e in stack.events if e.get("status") != "succeeded"]
    return {
        "task_s": task_s,
        "aws_latency_ms": latency_ms,
        "tasks": tasks,
        "busy_ratio": round(executing / span, 4),
        "tasks_per_s": round(tasks / span, 2),
        "gap_p50_ms": round(statistics.median(gaps_ms), 1),
        "gap_max_ms": round(max(gaps_ms), 1),
        "first_task_latency_s": round(busy[0][0] - started, 2),
        "wall_s": round(done - started, 2),
        "failed": len(failed),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--task-s", default="0.1,0.25,2", help="runtime seconds per task, comma-separated")
    parser.add_argument("--latency-ms", default="0,30", help="added to every AWS request, comma-separated")
    parser.add_argument("--span-s", type=float, default=8.0, help="runtime work per run (tasks = span / task time)")
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
    results = []
    try:
        wait_http(f"{endpoint}/moto-api/", proc=moto)
        with tempfile.TemporaryDirectory() as tmp:
            for latency in (int(x) for x in args.latency_ms.split(",")):
                for task_s in (float(x) for x in args.task_s.split(",")):
                    results.append(run(endpoint, task_s, latency, args.span_s, args.prefetch, Path(tmp)))
                    print(json.dumps(results[-1]), file=sys.stderr)
    finally:
        moto.terminate()
        moto.wait(10)
    load = os.getloadavg()
    print(
        json.dumps(
            {
                "benchmark": "queue_agent",
                "backend": "moto server behind a latency proxy",
                "cpus": os.cpu_count(),
                "load_average_after": [round(x, 2) for x in load],
                "results": results,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
