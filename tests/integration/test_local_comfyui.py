"""Local mode with a ``comfyui`` runtime: a ``pipeline`` task flows API → queue → agent → sd_runtime
(ComfyUI dialect) → S3 → event, driven by the CLI like a user would."""

from __future__ import annotations

import base64
import io
import json
import subprocess
from pathlib import Path

import boto3
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
