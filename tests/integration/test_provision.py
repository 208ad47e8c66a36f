"""Local provisioning builds the cloud topology on a real moto server."""

from __future__ import annotations

import json

import boto3
import pytest

from sdeks.tasks_table import TaskTable

pytestmark = pytest.mark.slow


def test_fan_out_reaches_only_the_named_runtime_queue(two_runtime_stack):
    _config, res = two_runtime_stack
    sns = boto3.client("sns", endpoint_url=res.aws_endpoint_url)
    sqs = boto3.client("sqs", endpoint_url=res.aws_endpoint_url)
    sns.publish(
        TopicArn=res.tasks_topic_arn,
        Message=json.dumps({"hello": "comfy"}),
        MessageAttributes={"runtime": {"DataType": "String", "StringValue": "comfy"}},
    )
    got = sqs.receive_message(QueueUrl=res.queues["comfy"].url, WaitTimeSeconds=2).get("Messages", [])
    assert [json.loads(m["Body"]) for m in got] == [{"hello": "comfy"}]  # raw delivery
    assert sqs.receive_message(QueueUrl=res.queues["sda"].url, WaitTimeSeconds=1).get("Messages", []) == []


def test_queue_has_dlq_with_configured_receive_count(aws_stack):
    config, res = aws_stack
    sqs = boto3.client("sqs", endpoint_url=res.aws_endpoint_url)
    attrs = sqs.get_queue_attributes(QueueUrl=res.queues["sdruntime"].url, AttributeNames=["All"])["Attributes"]
    redrive = json.loads(attrs["RedrivePolicy"])
    assert redrive == {"deadLetterTargetArn": res.queues["sdruntime"].dlq_arn, "maxReceiveCount": 2}
    assert int(attrs["VisibilityTimeout"]) == config.runtimes[0].visibility_timeout_s


def test_status_rows_follow_the_monotonic_rules(aws_stack):
    _, res = aws_stack
    table = TaskTable.from_name(res.task_table, endpoint_url=res.aws_endpoint_url)
    first = table.record_submission("t1", "sdruntime", "fp-a")
    assert first.created and first.must_publish and first.status.status == "queued"
    again = table.record_submission("t1", "sdruntime", "fp-a")
    assert not again.created and not again.must_publish and again.fingerprint == "fp-a"
    other = table.record_submission("t1", "sdruntime", "fp-b")
    assert other.fingerprint == "fp-a"  # caller answers 409
    assert table.mark_running("t1", "sdruntime", 1).status == "running"
    assert table.mark_failed("t1", "runtime exploded")
    assert table.mark_running("t1", "sdruntime", 2).error is None
    table.mark_succeeded("t1", ["s3://b/output/t1/t1-1.png"])
    assert table.mark_running("t1", "sdruntime", 3) is None  # succeeded is final
    assert not table.mark_failed("t1", "late failure report")
    status = table.get("t1")
    assert (status.status, status.attempts, status.images) == ("succeeded", 2, ["s3://b/output/t1/t1-1.png"])
    assert table.get("missing") is None


def test_row_created_by_agent_when_task_bypassed_the_api(aws_stack):
    _, res = aws_stack
    table = TaskTable.from_name(res.task_table, endpoint_url=res.aws_endpoint_url)
    status = table.mark_running("direct", "sdruntime", 1)
    assert status.status == "running" and status.created_at is not None


def test_duplicate_republishes_only_when_the_original_publisher_died(aws_stack):
    from datetime import timedelta

    from sdeks.tasks_table import utcnow

    _, res = aws_stack
    table = TaskTable.from_name(res.task_table, endpoint_url=res.aws_endpoint_url)
    start = utcnow()
    table.record_submission("t2", "sdruntime", "fp", now=start)
    assert not table.record_submission("t2", "sdruntime", "fp", now=start + timedelta(seconds=5)).must_publish
    later = start + timedelta(seconds=60)
    assert table.record_submission("t2", "sdruntime", "fp", now=later).must_publish  # never marked enqueued
    assert not table.record_submission("t2", "sdruntime", "fp", now=later).must_publish  # claim taken once
    table.mark_enqueued("t2")
    assert not table.record_submission("t2", "sdruntime", "fp", now=later + timedelta(minutes=5)).must_publish
