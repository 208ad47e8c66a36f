"""Local mode with a ``comfyui`` runtime: a ``pipeline`` task flows API → queue → agent → sd_runtime
(ComfyUI dialect) → S3 → event, driven by the CLI like a user would."""

from __future__ import annotations

import base64
import io
import json
import subprocess
import time
from pathlib import Path

import boto3
import httpx
import pytest
from PIL import Image

from tests.fixtures.local import local_stack, sdeks
from tests.integration.test_comfyui_api import default_workflow, img2img_workflow

pytestmark = pytest.mark.slow

CONFIG = """
project: comfytest
runtimes:
  - name: comfy
    type: comfyui
"""


@pytest.fixture(scope="module")
def stack(tmp_path_factory, tiny_model_dir):
    with local_stack(tmp_path_factory.mktemp("local-comfy"), CONFIG, Path(tiny_model_dir)) as running:
        yield running


def submit(root: Path, tmp_path: Path, task_id: str, workflow: dict, check: bool = True) -> subprocess.CompletedProcess:
    task = tmp_path / f"{task_id}.json"
    task.write_text(
        json.dumps(
            {"task": {"metadata": {"id": task_id, "runtime": "comfy", "tasktype": "pipeline"}, "content": workflow}}
        )
    )
    return sdeks(root, "submit", str(task), "--wait", "--out", str(tmp_path / "out"), check=check, timeout=240)


def test_pipeline_task_end_to_end(stack, tmp_path):
    root, state = stack
    result = submit(root, tmp_path, "wf-1", default_workflow(seed=11))
    (path,) = [Path(line) for line in result.stdout.split()]
    assert path.name == "wf-1-1.png"
    assert Image.open(path).size == (64, 64)
    assert "succeeded" in result.stderr
    s3 = boto3.client("s3", endpoint_url=state.aws_endpoint_url, region_name=state.region)
    keys = {o["Key"] for o in s3.list_objects_v2(Bucket=state.output_bucket, Prefix="output/wf-1/")["Contents"]}
    assert keys == {"output/wf-1/wf-1-1.png", "output/wf-1/wf-1.json"}
    info = json.loads(s3.get_object(Bucket=state.output_bucket, Key="output/wf-1/wf-1.json")["Body"].read())
    assert info


def test_img2img_pipeline_with_inline_image(stack, tmp_path):
    root, _ = stack
    buf = io.BytesIO()
    Image.new("RGB", (64, 64), "green").save(buf, format="PNG")
    inline = "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()
    result = submit(root, tmp_path, "wf-2", img2img_workflow(inline))
    (path,) = [Path(line) for line in result.stdout.split()]
    assert Image.open(path).size == (64, 64)


def test_workflow_the_runtime_rejects_fails_the_task_with_the_node_error(stack, tmp_path):
    root, _ = stack
    wf = default_workflow()
    wf["3"]["inputs"]["sampler_name"] = "no_such_sampler"
    result = submit(root, tmp_path, "wf-3", wf, check=False)
    assert result.returncode != 0
    status = json.loads(sdeks(root, "status", "wf-3", check=True).stdout)
    assert status["status"] == "failed"
    assert "rejected" in status["error"] and "KSampler" in status["error"], status


def test_progress_rises_while_a_workflow_runs(stack):
    """The agent reads ComfyUI's own ``/ws`` progress messages of its prompt and writes them to the status."""
    _, state = stack
    workflow = default_workflow(seed=5, steps=150, size=128)
    workflow["5"]["inputs"]["batch_size"] = 4  # several seconds on the tiny model: many reports
    metadata = {"id": "wf-progress", "runtime": "comfy", "tasktype": "pipeline"}
    body = {"task": {"metadata": metadata, "content": workflow}}
    headers = {"x-api-key": state.api_key}
    assert httpx.post(f"{state.api_url}/v1alpha2", json=body, headers=headers, timeout=30).status_code == 202
    seen: list[dict] = []
    deadline = time.monotonic() + 90
    while len({p["step"] for p in seen}) < 3 and time.monotonic() < deadline:
        current = httpx.get(f"{state.api_url}/v1alpha2/tasks/wf-progress", headers=headers, timeout=30).json()
        assert current["status"] in ("queued", "running"), current
        if current["status"] == "running" and current["progress"]:
            seen.append(current["progress"])
        time.sleep(0.2)
    steps = [p["step"] for p in seen]
    assert len(set(steps)) >= 3, seen
    assert steps == sorted(steps) and steps[-1] > steps[0], steps
    last = seen[-1]
    assert last["steps"] == 150 and last["node"] == "3"  # the KSampler's own steps, as ComfyUI reports them
    assert last["fraction"] == pytest.approx(last["step"] / 150, abs=1e-3)
    assert (last["image"], last["images"]) == (0, 0)  # ComfyUI does not say which image of a batch
    assert httpx.post(f"{state.api_url}/v1alpha2/tasks/wf-progress/cancel", headers=headers, timeout=30).is_success
