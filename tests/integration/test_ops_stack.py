"""``sdeks dlq`` and ``sdeks top`` against a deployed stack found by name (``--stack``).

The "deployment" is a CloudFormation stack on a moto server: queues, DLQs, task
table and bucket named as :func:`sdeks.config.resource_layout` names them, and
the two outputs the CLI reads (``OutputBucket``, ``TaskTableName``). The CLI
finds it through CloudFormation and SQS exactly as on AWS; ``AWS_ENDPOINT_URL``
points its boto3 clients at the moto server.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import boto3
import pytest

from sdeks.config import TASK_TABLE_KEY, parse_config, resource_layout
from sdeks.tasks_table import TaskTable
from tests.fixtures.agent import task_message

pytestmark = pytest.mark.slow

CONFIG = """
runtimes:
  - name: alpha
  - name: beta
"""


def template(project: str) -> dict:
    layout = resource_layout(parse_config({"project": project, "runtimes": [{"name": "alpha"}, {"name": "beta"}]}))
    resources: dict = {
        "Table": {
            "Type": "AWS::DynamoDB::Table",
            "Properties": {
                "TableName": layout.task_table_name,
                "BillingMode": "PAY_PER_REQUEST",
                "AttributeDefinitions": [{"AttributeName": TASK_TABLE_KEY, "AttributeType": "S"}],
                "KeySchema": [{"AttributeName": TASK_TABLE_KEY, "KeyType": "HASH"}],
            },
        },
        "Bucket": {"Type": "AWS::S3::Bucket", "Properties": {"BucketName": f"{project}-output"}},
    }
    for n, rq in enumerate(layout.runtimes):
        resources[f"Dlq{n}"] = {"Type": "AWS::SQS::Queue", "Properties": {"QueueName": rq.dlq_name}}
        resources[f"Queue{n}"] = {
            "Type": "AWS::SQS::Queue",
            "Properties": {
                "QueueName": rq.queue_name,
                "RedrivePolicy": {
                    "deadLetterTargetArn": {"Fn::GetAtt": [f"Dlq{n}", "Arn"]},
                    "maxReceiveCount": rq.max_receive_count,
                },
            },
        }
    return {
        "Resources": resources,
        "Outputs": {"OutputBucket": {"Value": {"Ref": "Bucket"}}, "TaskTableName": {"Value": {"Ref": "Table"}}},
    }


@pytest.fixture(scope="module")
def deployed(moto_server, tmp_path_factory):
    project = f"dep{uuid.uuid4().hex[:8]}"
    cfn = boto3.client("cloudformation", endpoint_url=moto_server, region_name="us-east-1")
    cfn.create_stack(StackName=project, TemplateBody=json.dumps(template(project)))
    root = tmp_path_factory.mktemp("ops-stack")
    (root / "deployed.yaml").write_text(CONFIG)
    return project, root, moto_server


def run_sdeks(root: Path, endpoint: str, *args: str) -> subprocess.CompletedProcess:
    """The CLI with its AWS clients pointed at the moto server."""
    return subprocess.run(
        [sys.executable, "-m", "sdeks", *args, "--region", "us-east-1"],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "AWS_ENDPOINT_URL": endpoint, "COLUMNS": "200"},
    )


def cli(deployed, *args: str) -> subprocess.CompletedProcess:
    project, root, endpoint = deployed
    return run_sdeks(root, endpoint, *args, "--stack", project, "--config", "deployed.yaml")


def sqs(endpoint: str):
    return boto3.client("sqs", endpoint_url=endpoint, region_name="us-east-1")


def queue_url(endpoint: str, name: str) -> str:
    return sqs(endpoint).get_queue_url(QueueName=name)["QueueUrl"]


def test_dlq_list_and_redrive_on_a_stack_found_by_name(deployed):
    project, _, endpoint = deployed
    rows = TaskTable.from_name(f"{project}-tasks", endpoint_url=endpoint)
    rows.record_submission("dep-1", "beta", "fp")
    rows.mark_failed("dep-1", "moved to the dead-letter queue after 3 attempts: runtime unavailable")
    sqs(endpoint).send_message(
        QueueUrl=queue_url(endpoint, f"{project}-beta-dlq"), MessageBody=json.dumps(task_message(task_id="dep-1"))
    )

    listed = cli(deployed, "dlq", "list", "--runtime", "beta", "--json")
    assert listed.returncode == 0, listed.stderr
    (entry,) = [json.loads(line) for line in listed.stdout.splitlines()]
    assert (entry["task_id"], entry["status"]) == ("dep-1", "failed")
    assert entry["error"].endswith("runtime unavailable")
    assert cli(deployed, "dlq", "list", "--runtime", "alpha", "--json").stdout == ""

    redriven = cli(deployed, "dlq", "redrive", "--runtime", "beta")
    assert redriven.returncode == 0, redriven.stderr
    assert redriven.stdout.split() == ["dep-1"]
    assert "receive/send/delete" in redriven.stderr, "moto is not AWS: no message-move task"
    assert rows.get("dep-1").status == "queued"
    got = sqs(endpoint).receive_message(QueueUrl=queue_url(endpoint, f"{project}-beta"), WaitTimeSeconds=1)
    assert json.loads(got["Messages"][0]["Body"])["id"] == "dep-1"
    sqs(endpoint).change_message_visibility(
        QueueUrl=queue_url(endpoint, f"{project}-beta"),
        ReceiptHandle=got["Messages"][0]["ReceiptHandle"],
        VisibilityTimeout=0,
    )


def test_top_once_on_a_stack_found_by_name(deployed):
    frame = cli(deployed, "top", "--once")
    assert frame.returncode == 0, frame.stderr
    project = deployed[0]
    assert f"sdeks top — stack {project}" in frame.stdout
    rows = {}
    for line in frame.stdout.splitlines():
        cells = [c.strip() for c in line.split("│")[1:-1]]
        if cells and cells[0] in ("alpha", "beta"):
            rows[cells[0]] = cells
    assert rows["alpha"][1:5] == ["0", "0", "0", "0"]
    assert rows["beta"][1] == "1", "the redriven task waits in beta's queue"
    assert "! " not in frame.stdout, "no source failed"


def test_unknown_stack_and_wrong_runtimes_are_clear_errors(deployed):
    project, root, endpoint = deployed
    result = run_sdeks(root, endpoint, "top", "--once", "--stack", "nosuchstack")
    assert result.returncode == 1
    assert "stack 'nosuchstack' not found" in result.stderr and "Traceback" not in result.stderr

    (root / "other.yaml").write_text("runtimes: [{name: gamma}]\n")
    result = run_sdeks(root, endpoint, "dlq", "list", "-r", "gamma", "--stack", project, "--config", "other.yaml")
    assert result.returncode == 1
    assert f"queue {project}-gamma not found" in result.stderr
    assert "does --config list the runtimes this stack was deployed with?" in result.stderr


def test_top_once_prints_the_frame_and_fails_when_a_source_is_unreadable(deployed):
    project, _, endpoint = deployed
    boto3.client("dynamodb", endpoint_url=endpoint, region_name="us-east-1").delete_table(TableName=f"{project}-tasks")
    frame = cli(deployed, "top", "--once")
    assert frame.returncode == 1
    assert "! task table: ResourceNotFoundException: Requested resource not found" in frame.stdout
    assert any(line.split("│")[1].strip() == "beta" for line in frame.stdout.splitlines() if "│" in line)
