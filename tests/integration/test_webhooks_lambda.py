"""The deliverer's Lambda entry against a moto server: SQS records in, partial batch failures out.

The records are real messages from the provisioned webhook queue (subscribed to the
results topic), shaped as the SQS event source hands them to Lambda.
"""

from __future__ import annotations

import json
import time

import boto3
import pytest
import standardwebhooks

from sdeks.contract import CompletionEvent, WebhookPayload
from sdeks.tasks_table import TaskTable
from sdeks.webhook_retries import max_receives, retry_delay_s
from sdeks.webhook_secret import read_secret
from tests.fixtures.webhooks import Receiver
from webhooks import lambda_handler

pytestmark = pytest.mark.slow


def lambda_records(sqs, queue, wait_s: int = 2) -> list[dict]:
    """Receive as the event source mapping does and shape the messages as Lambda records."""
    messages = sqs.receive_message(
        QueueUrl=queue.url, MaxNumberOfMessages=10, WaitTimeSeconds=wait_s, MessageSystemAttributeNames=["All"]
    ).get("Messages", [])
    return [
        {
            "messageId": m["MessageId"],
            "receiptHandle": m["ReceiptHandle"],
            "body": m["Body"],
            "attributes": m["Attributes"],
            "eventSource": "aws:sqs",
            "eventSourceARN": queue.arn,
        }
        for m in messages
    ]


@pytest.fixture
def wired(aws_stack, monkeypatch):
    _, res = aws_stack
    for name, value in {
        "SDEKS_WEBHOOK_QUEUE_URL": res.webhook_queue.url,
        "SDEKS_WEBHOOK_SECRET_ID": res.webhook_secret_id,
        "SDEKS_TASK_TABLE": res.task_table,
        "SDEKS_WEBHOOK_ALLOW_LOOPBACK": "1",
        "AWS_ENDPOINT_URL": res.aws_endpoint_url,
    }.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(lambda_handler, "_state", {})
    return res


def publish_completion(res, task_id: str) -> CompletionEvent:
    event = CompletionEvent(id=task_id, runtime="sdruntime", status="succeeded", result=True, attempt=1)
    boto3.client("sns", endpoint_url=res.aws_endpoint_url).publish(
        TopicArn=res.results_topic_arn,
        Message=event.model_dump_json(),
        MessageAttributes={
            "runtime": {"DataType": "String", "StringValue": "sdruntime"},
            "status": {"DataType": "String", "StringValue": "succeeded"},
        },
    )
    return event


def test_failed_try_is_postponed_and_reported_then_delivered(wired, receiver: Receiver):
    res = wired
    table = TaskTable.from_name(res.task_table, endpoint_url=res.aws_endpoint_url)
    table.record_submission(
        "lam-1", "sdruntime", "fp", extra={"webhook": {"url": receiver.url(), "events": ["completed"]}}
    )
    event = publish_completion(res, "lam-1")
    sqs = boto3.client("sqs", endpoint_url=res.aws_endpoint_url)
    receiver.statuses = [502]

    records = lambda_records(sqs, res.webhook_queue)
    assert len(records) == 1
    assert lambda_handler.handler({"Records": records}) == {
        "batchItemFailures": [{"itemIdentifier": records[0]["messageId"]}]
    }
    assert lambda_records(sqs, res.webhook_queue, wait_s=1) == []  # hidden for the first retry delay
    time.sleep(retry_delay_s(1))
    records = lambda_records(sqs, res.webhook_queue, wait_s=5)
    assert [r["attributes"]["ApproximateReceiveCount"] for r in records] == ["2"]
    assert lambda_handler.handler({"Records": records}) == {"batchItemFailures": []}

    secret = read_secret(boto3.client("secretsmanager", endpoint_url=res.aws_endpoint_url), res.webhook_secret_id)
    assert receiver.answered == [502, 200]
    payload = standardwebhooks.Webhook(secret).verify(receiver.deliveries[1].body, receiver.deliveries[1].headers)
    assert WebhookPayload.model_validate(payload).data == event


def test_events_of_tasks_without_webhooks_succeed_without_a_request(wired, receiver: Receiver):
    res = wired
    publish_completion(res, "plain-1")
    sqs = boto3.client("sqs", endpoint_url=res.aws_endpoint_url)
    records = lambda_records(sqs, res.webhook_queue)
    assert len(records) == 1 and json.loads(records[0]["body"])["id"] == "plain-1"
    assert lambda_handler.handler({"Records": records}) == {"batchItemFailures": []}
    assert receiver.deliveries == []


def test_webhook_queue_redrives_to_its_dlq_after_the_schedule(aws_stack):
    _, res = aws_stack
    sqs = boto3.client("sqs", endpoint_url=res.aws_endpoint_url)
    attrs = sqs.get_queue_attributes(QueueUrl=res.webhook_queue.url, AttributeNames=["All"])["Attributes"]
    policy = json.loads(attrs["RedrivePolicy"])
    assert policy == {"deadLetterTargetArn": res.webhook_queue.dlq_arn, "maxReceiveCount": max_receives()}
