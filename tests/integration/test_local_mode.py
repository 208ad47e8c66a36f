"""Local mode end to end: real processes (moto server, API, sd_runtime, queue agents) driven by the CLI.

One stack per module, started with ``sdeks local up --detach`` in a temp dir on
free ports, with two sdwebui runtimes so fan-out by runtime name is visible.
"""

from __future__ import annotations

import io
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import boto3
import pytest
from PIL import Image

from sdeks.local.state import LocalState
from tests.fixtures.aws import free_port
from tests.fixtures.local import local_stack, sdeks

pytestmark = pytest.mark.slow

CONFIG = """
project: localtest
runtimes:
  - name: sdruntime
    type: sdwebui
    max_receive_count: 5
  - name: second
    type: sdwebui
"""


def children_of(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                found.append(int(entry.name))
    return found


def agent_pid(state: LocalState, runtime: str) -> int:
    for pid in children_of(state.supervisor_pid):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"queue_agent" in cmdline and f"SDEKS_RUNTIME_NAME={runtime}".encode() in environ:
            return pid
    raise AssertionError(f"no agent process for {runtime}")


@pytest.fixture(scope="module")
def stack(tmp_path_factory, tiny_model_dir):
    with local_stack(tmp_path_factory.mktemp("local"), CONFIG, Path(tiny_model_dir)) as running:
        yield running


def s3(state: LocalState):
    return boto3.client("s3", endpoint_url=state.aws_endpoint_url, region_name=state.region)


def png(color: str, size: int = 64) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (size, size), color).save(buffer, format="PNG")
    return buffer.getvalue()


def submitted_id(result: subprocess.CompletedProcess) -> str:
    return result.stderr.split(":", 1)[0].strip().splitlines()[-1]


def test_status_reports_every_component_healthy(stack):
    root, _ = stack
    result = sdeks(root, "local", "status")
    assert result.returncode == 0, result.stdout + result.stderr
    for component in ("api", "aws", "runtime sdruntime", "agent sdruntime", "runtime second", "agent second"):
        assert component in result.stdout


def test_text_to_image_downloads_png(stack, tmp_path):
    root, state = stack
    result = sdeks(
        root,
        "submit",
        "--prompt",
        "a red bicycle",
        "--size",
        "64",
        "--steps",
        "4",
        "--id",
        "t2i-1",
        "--wait",
        "--out",
        str(tmp_path),
        check=True,
    )
    paths = [Path(line) for line in result.stdout.split()]
    assert [p.name for p in paths] == ["t2i-1-1.png"]
    assert Image.open(paths[0]).size == (64, 64)
    keys = {o["Key"] for o in s3(state).list_objects_v2(Bucket=state.output_bucket, Prefix="output/t2i-1/")["Contents"]}
    assert keys == {"output/t2i-1/t2i-1-1.png", "output/t2i-1/t2i-1.json"}
    assert "queued" in result.stderr and "succeeded" in result.stderr


def test_image_to_image_with_init_image_from_s3(stack, tmp_path):
    root, state = stack
    s3(state).put_object(Bucket=state.output_bucket, Key="inputs/blue.png", Body=png("blue"))
    result = sdeks(
        root,
        "submit",
        "--prompt",
        "make it green",
        "--tasktype",
        "image-to-image",
        "--init-image",
        f"s3://{state.output_bucket}/inputs/blue.png",
        "--steps",
        "4",
        "--size",
        "64",
        "--wait",
        "--out",
        str(tmp_path),
        check=True,
    )
    (path,) = [Path(line) for line in result.stdout.split()]
    assert Image.open(path).size == (64, 64)


@pytest.mark.parametrize("upscaler", ["Lanczos", "R-ESRGAN 4x+"])  # the sample's extras task names R-ESRGAN 4x+
def test_extras_upscales_a_local_file(stack, tmp_path, upscaler):
    root, _ = stack
    source = tmp_path / "in.png"
    source.write_bytes(png("yellow", 64))
    task = tmp_path / "task.json"
    task.write_text(
        json.dumps(
            {
                "task": {
                    "metadata": {"runtime": "sdruntime", "tasktype": "extra-single-image"},
                    "content": {"upscaling_resize": 2, "upscaler_1": upscaler},
                }
            }
        )
    )
    result = sdeks(
        root, "submit", str(task), "--init-image", str(source), "--wait", "--out", str(tmp_path / "o"), check=True
    )
    (path,) = [Path(line) for line in result.stdout.split()]
    assert Image.open(path).size == (128, 128)


def test_invalid_task_gets_clear_error_and_nothing_is_enqueued(stack):
    root, state = stack
    result = sdeks(root, "submit", "--prompt", "x", "--size", "65")
    assert result.returncode == 1
    assert "task.content.width" in result.stderr and "multiple of 8" in result.stderr
    assert "Traceback" not in result.stderr
    sqs = boto3.client("sqs", endpoint_url=state.aws_endpoint_url, region_name=state.region)
    for url in state.queues.values():
        attrs = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
        assert attrs["ApproximateNumberOfMessages"] == "0"


def test_fan_out_by_runtime_and_events_reach_a_subscriber(stack, tmp_path):
    root, _ = stack
    follower = subprocess.Popen(
        [sys.executable, "-m", "sdeks", "events", "--runtime", "second", "--count", "1", "--timeout", "120"],
        cwd=root,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    time.sleep(3)  # the subscription exists before the task is sent
    result = sdeks(
        root,
        "submit",
        "--prompt",
        "fan out",
        "--runtime",
        "second",
        "--size",
        "64",
        "--steps",
        "2",
        "--id",
        "fan-1",
        "--wait",
        "--out",
        str(tmp_path),
        check=True,
    )
    assert Path(result.stdout.split()[0]).name == "fan-1-1.png"
    out, _ = follower.communicate(timeout=150)
    event = json.loads(out.strip().splitlines()[0])
    assert (event["id"], event["runtime"], event["status"], event["result"]) == ("fan-1", "second", "succeeded", True)
    status = json.loads(sdeks(root, "status", "fan-1", check=True).stdout)
    assert status["runtime"] == "second"


def test_killed_agent_is_restarted_and_every_task_completes_once(stack, tmp_path):
    root, state = stack
    ids = [f"kill-{n}" for n in range(5)]
    for task_id in ids:
        sdeks(root, "submit", "--prompt", task_id, "--size", "64", "--steps", "6", "--id", task_id, check=True)
    time.sleep(1.5)
    os.kill(agent_pid(state, "sdruntime"), signal.SIGKILL)
    for task_id in ids:
        status = json.loads(sdeks(root, "status", task_id, check=True).stdout)
        deadline = time.monotonic() + 240
        while status["status"] not in ("succeeded", "failed") and time.monotonic() < deadline:
            time.sleep(1)
            status = json.loads(sdeks(root, "status", task_id, check=True).stdout)
        assert status["status"] == "succeeded", status
        objects = s3(state).list_objects_v2(Bucket=state.output_bucket, Prefix=f"output/{task_id}/")["Contents"]
        assert sorted(o["Key"] for o in objects) == [
            f"output/{task_id}/{task_id}-1.png",
            f"output/{task_id}/{task_id}.json",
        ]
    log = (Path(state.log_dir) / "supervisor.log").read_text()
    assert "agent-sdruntime killed by signal 9; restarting it" in log


def test_up_refuses_a_busy_port_with_a_clear_message(tmp_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = sdeks(tmp_path, "local", "up", "--api-port", str(port), "--aws-port", str(free_port()), timeout=60)
    assert result.returncode == 1
    assert f"port {port} on 127.0.0.1 is already in use" in result.stderr
    assert "Traceback" not in result.stderr


def test_down_leaves_no_process_behind(stack):
    root, state = stack
    children = children_of(state.supervisor_pid)
    assert len(children) >= 6  # moto, api, 2 runtimes, 2 agents
    result = sdeks(root, "local", "down", check=True)
    assert "stopped" in result.stderr
    deadline = time.monotonic() + 10
    alive = [pid for pid in [state.supervisor_pid, *children] if Path(f"/proc/{pid}").exists()]
    while alive and time.monotonic() < deadline:
        time.sleep(0.2)
        alive = [pid for pid in alive if Path(f"/proc/{pid}").exists()]
    assert alive == []
    assert not (root / ".sdeks" / "local.json").exists()
