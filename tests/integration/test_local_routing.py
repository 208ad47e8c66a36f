"""Fan-out by model name in local mode: two runtimes serving different checkpoints, real processes.

The tiny model is copied under two checkpoint names, one per runtime (each runtime sees only its own
models directory), so a task that lands on the wrong runtime fails there with an unknown model.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import boto3
import httpx
import pytest

from tests.fixtures.local import local_stack, sdeks

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def stack(tmp_path_factory, tiny_model_dir):
    root = tmp_path_factory.mktemp("routing")
    for runtime in ("alpha", "beta"):
        shutil.copytree(Path(tiny_model_dir) / "tiny-sd", root / "models" / runtime / f"{runtime}-sd")
    config = "project: routetest\nruntimes:\n" + "".join(
        f"  - name: {runtime}\n"
        f"    model: {{local_path: {root / 'models' / runtime / f'{runtime}-sd'}}}\n"
        f"    models: [{runtime}-sd]\n"
        for runtime in ("alpha", "beta")
    )
    with local_stack(root, config, None) as running:
        yield running


def task_file(root: Path, checkpoint: str, task_id: str) -> Path:
    path = root / f"{task_id}.json"
    content = {"prompt": "routed", "steps": 2, "width": 64, "height": 64}
    content["alwayson_scripts"] = {"sd_model_checkpoint": checkpoint}
    path.write_text(
        json.dumps({"task": {"metadata": {"id": task_id, "tasktype": "text-to-image"}, "content": content}})
    )
    return path


def test_runtimes_show_the_models_each_serves(stack):
    _, state = stack
    answer = httpx.get(f"{state.api_url}/v1alpha2/runtimes", headers={"x-api-key": state.api_key})
    assert {r["name"]: r["models"] for r in answer.json()} == {"alpha": ["alpha-sd"], "beta": ["beta-sd"]}


def test_a_task_naming_only_a_checkpoint_runs_on_the_runtime_that_serves_it(stack, tmp_path):
    root, state = stack
    for runtime in ("beta", "alpha"):
        task_id = f"by-model-{runtime}"
        result = sdeks(
            root, "submit", str(task_file(tmp_path, f"{runtime}-sd", task_id)), "--wait", "--out", str(tmp_path),
            check=True,
        )  # fmt: skip
        assert Path(result.stdout.split()[0]).name == f"{task_id}-1.png"
        status = json.loads(sdeks(root, "status", task_id, check=True).stdout)
        assert (status["runtime"], status["status"]) == (runtime, "succeeded")
        s3 = boto3.client("s3", endpoint_url=state.aws_endpoint_url, region_name=state.region)
        info = json.loads(
            s3.get_object(Bucket=state.output_bucket, Key=f"output/{task_id}/{task_id}.json")["Body"].read()
        )
        assert f"{runtime}-sd" in json.dumps(info)


def test_an_unknown_checkpoint_is_a_400_listing_what_exists_and_nothing_is_enqueued(stack, tmp_path):
    root, state = stack
    result = sdeks(root, "submit", str(task_file(tmp_path, "gamma-sd.safetensors", "by-model-gamma")))
    assert result.returncode == 1
    assert "'gamma-sd.safetensors'" in result.stderr and "alpha: alpha-sd; beta: beta-sd" in result.stderr
    assert "Traceback" not in result.stderr
    sqs = boto3.client("sqs", endpoint_url=state.aws_endpoint_url, region_name=state.region)
    for url in state.queues.values():
        attrs = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
        assert (attrs["ApproximateNumberOfMessages"], attrs["ApproximateNumberOfMessagesNotVisible"]) == ("0", "0")
    assert sdeks(root, "status", "by-model-gamma").returncode != 0
