"""``sdeks models push/list`` through boto3 against a moto server: a CloudFormation stack with the same
output keys the CDK stack sets, and the S3 bucket its ModelLocations name."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import boto3
import pytest

from sdeks.config.outputs import StackOutput

pytestmark = pytest.mark.slow


def _template() -> dict:
    locations = (
        '{"sd": {"location": "s3://${Models}/models/sd15/", "checkpoint": "m.safetensors"},'
        ' "comfy": {"location": "s3://${Models}/models/comfy/"}}'
    )
    return {
        "Resources": {"Models": {"Type": "AWS::S3::Bucket"}},
        "Outputs": {
            StackOutput.MODEL_BUCKET.value: {"Value": {"Ref": "Models"}},
            StackOutput.MODEL_LOCATIONS.value: {"Value": {"Fn::Sub": locations}},
        },
    }


@pytest.fixture
def deployed(moto_server, monkeypatch) -> tuple[str, str]:
    """(stack name, model bucket) of a fresh stack on the moto server."""
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_server)
    name = f"sdeks-{uuid.uuid4().hex[:8]}"
    cfn = boto3.client("cloudformation")
    cfn.create_stack(StackName=name, TemplateBody=json.dumps(_template()))
    outputs = {o["OutputKey"]: o["OutputValue"] for o in cfn.describe_stacks(StackName=name)["Stacks"][0]["Outputs"]}
    return name, outputs[StackOutput.MODEL_BUCKET]


def run(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "sdeks", "models", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "COLUMNS": "200"},
    )


def test_push_puts_a_checkpoint_where_the_runtime_reads_and_skips_it_when_unchanged(deployed, tmp_path):
    stack, bucket = deployed
    checkpoint = tmp_path / "m.safetensors"
    checkpoint.write_bytes(os.urandom(1024))
    first = run(tmp_path, "push", str(checkpoint), "--runtime", "sd", "--stack", stack)
    assert first.returncode == 0, first.stderr
    assert f"1 pushed, 0 unchanged, in s3://{bucket}/models/sd15/" in first.stdout
    s3 = boto3.client("s3")
    assert s3.get_object(Bucket=bucket, Key="models/sd15/m.safetensors")["Body"].read() == checkpoint.read_bytes()

    again = run(tmp_path, "push", str(checkpoint), "--runtime", "sd", "--stack", stack)
    assert "0 pushed, 1 unchanged" in again.stdout and "same object already there" in again.stderr

    checkpoint.write_bytes(os.urandom(1024))
    changed = run(tmp_path, "push", str(checkpoint), "--runtime", "sd", "--stack", stack)
    assert "1 pushed, 0 unchanged" in changed.stdout
    assert s3.get_object(Bucket=bucket, Key="models/sd15/m.safetensors")["Body"].read() == checkpoint.read_bytes()


def test_push_a_diffusers_directory_multipart(deployed, tmp_path):
    stack, bucket = deployed
    model = tmp_path / "tiny-sd"
    (model / "unet").mkdir(parents=True)
    (model / "model_index.json").write_text("{}")
    big = os.urandom(1024 * 1024) * 65  # above the 64 MiB multipart threshold
    (model / "unet" / "weights.safetensors").write_bytes(big)
    result = run(tmp_path, "push", str(model), "--runtime", "comfy", "--stack", stack)
    assert result.returncode == 0, result.stderr
    assert "2 pushed" in result.stdout
    s3 = boto3.client("s3")
    head = s3.head_object(Bucket=bucket, Key="models/comfy/tiny-sd/unet/weights.safetensors")
    assert head["ContentLength"] == len(big)
    assert head["ETag"].strip('"').endswith("-2"), "uploaded in two parts"
    assert s3.head_object(Bucket=bucket, Key="models/comfy/tiny-sd/model_index.json")["ContentLength"] == 2


def test_list_shows_what_each_runtime_finds_and_a_missing_checkpoint(deployed, tmp_path):
    stack, _bucket = deployed
    before = run(tmp_path, "list", "--stack", stack)
    assert before.returncode == 1
    assert "missing: m.safetensors — runtime sd cannot start" in before.stdout
    checkpoint = tmp_path / "m.safetensors"
    checkpoint.write_bytes(b"x" * 2048)
    assert run(tmp_path, "push", str(checkpoint), "--runtime", "sd", "--stack", stack).returncode == 0
    after = run(tmp_path, "list", "--stack", stack, "--runtime", "sd")
    assert after.returncode == 0, after.stdout + after.stderr
    assert "m.safetensors" in after.stdout and "2,048" in after.stdout and "loaded at start" in after.stdout
    assert "missing" not in after.stdout


def test_unknown_runtime_and_stack_are_clear_errors(deployed, tmp_path):
    stack, _bucket = deployed
    (tmp_path / "f").write_bytes(b"1")
    unknown = run(tmp_path, "push", str(tmp_path / "f"), "--runtime", "nope", "--stack", stack)
    assert unknown.returncode == 1 and "its runtimes: comfy, sd" in unknown.stderr
    missing = run(tmp_path, "list", "--stack", "no-such-stack")
    assert missing.returncode == 1 and "no-such-stack" in missing.stderr
    absent = run(tmp_path, "push", str(tmp_path / "absent"), "--runtime", "sd", "--stack", stack)
    assert absent.returncode == 2 and "does not exist" in absent.stderr
    for result in (unknown, missing, absent):
        assert "Traceback" not in result.stderr
