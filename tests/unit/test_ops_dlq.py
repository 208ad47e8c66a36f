"""The redrive method choice: a message-move task on AWS, the loop for --id and where move tasks are missing."""

from __future__ import annotations

import json

import boto3
import pytest
from botocore.exceptions import ClientError
from botocore.stub import ANY, Stubber

from sdeks.ops.dlq import DeadLetters, _sendable
from sdeks.ops.target import OpsTarget, RuntimeRef

DLQ = "https://sqs.us-east-1.amazonaws.com/123456789012/p-rt-dlq"
QUEUE = "https://sqs.us-east-1.amazonaws.com/123456789012/p-rt"


class Rows:
    """Status rows keyed by id; update_item honours the redrive's condition (not succeeded)."""

    def __init__(self, rows: dict[str, dict]) -> None:
        self.rows = rows

    def get_item(self, Key, ConsistentRead):  # noqa: N803 (boto3 names)
        row = self.rows.get(Key["id"])
        return {"Item": row} if row else {}

    def update_item(self, Key, ExpressionAttributeValues, **_):  # noqa: N803
        row = self.rows.get(Key["id"])
        if row is None or row["status"] == "succeeded":
            raise ClientError({"Error": {"Code": "ConditionalCheckFailedException"}}, "UpdateItem")
        row.update(status="queued")
        row.pop("error", None)


def target(rows: dict[str, dict], endpoint: str = "https://sqs.us-east-1.amazonaws.com") -> tuple[OpsTarget, Stubber]:
    sqs = boto3.client("sqs", region_name="us-east-1", endpoint_url=endpoint)
    target = OpsTarget("test", sqs, None, Rows(rows), "bucket", {"rt": RuntimeRef("rt", QUEUE, DLQ)})
    return target, Stubber(sqs)


def message(task_id: str, n: int) -> dict:
    return {
        "MessageId": f"m{n}",
        "ReceiptHandle": f"r{n}",
        "Body": json.dumps({"id": task_id, "runtime": "rt"}),
        "Attributes": {"SentTimestamp": "1700000000000"},
        "MessageAttributes": {"runtime": {"DataType": "String", "StringValue": "rt", "StringListValues": []}},
    }


def expect_peek(stub: Stubber, messages: list[dict]) -> None:
    if messages:
        stub.add_response("receive_message", {"Messages": messages}, {"QueueUrl": DLQ, **_any_receive()})
    stub.add_response("receive_message", {}, {"QueueUrl": DLQ, **_any_receive()})


def _any_receive() -> dict:
    keys = ("MaxNumberOfMessages", "WaitTimeSeconds", "VisibilityTimeout", "MessageSystemAttributeNames")
    return {k: ANY for k in (*keys, "MessageAttributeNames")}


def arns(stub: Stubber) -> None:
    for url in (DLQ, QUEUE):
        stub.add_response(
            "get_queue_attributes",
            {"Attributes": {"QueueArn": "arn:aws:sqs:us-east-1:123456789012:" + url.rsplit("/", 1)[1]}},
            {"QueueUrl": url, "AttributeNames": ["QueueArn"]},
        )


def test_whole_dlq_on_aws_uses_a_message_move_task_and_resets_rows():
    rows = {"a": {"id": "a", "status": "failed", "error": "x"}, "b": {"id": "b", "status": "succeeded"}}
    tgt, stub = target(rows)
    expect_peek(stub, [message("a", 1), message("b", 2)])
    stub.add_response("change_message_visibility_batch", {"Successful": [], "Failed": []})
    arns(stub)
    stub.add_response(
        "start_message_move_task",
        {"TaskHandle": "handle-1"},
        {
            "SourceArn": "arn:aws:sqs:us-east-1:123456789012:p-rt-dlq",
            "DestinationArn": "arn:aws:sqs:us-east-1:123456789012:p-rt",
        },
    )
    with stub:
        result = DeadLetters(tgt, tgt.runtime("rt")).redrive()
        stub.assert_no_pending_responses()
    assert result.method == "move-task" and result.move_task_handle == "handle-1"
    assert result.moved == ["a", "b"]
    assert result.reset == ["a"], "a row that succeeded meanwhile is left alone"
    assert rows["a"]["status"] == "queued" and "error" not in rows["a"]


def test_endpoint_without_move_tasks_falls_back_to_the_loop():
    rows = {"a": {"id": "a", "status": "failed"}}
    tgt, stub = target(rows)
    expect_peek(stub, [message("a", 1)])
    stub.add_response("change_message_visibility_batch", {"Successful": [], "Failed": []})
    arns(stub)
    stub.add_client_error("start_message_move_task", "UnsupportedOperation")
    expect_peek(stub, [message("a", 1)])
    stub.add_response(
        "send_message",
        {"MessageId": "new"},
        {
            "QueueUrl": QUEUE,
            "MessageBody": json.dumps({"id": "a", "runtime": "rt"}),
            "MessageAttributes": {"runtime": {"DataType": "String", "StringValue": "rt"}},
        },
    )
    stub.add_response("delete_message", {}, {"QueueUrl": DLQ, "ReceiptHandle": "r1"})
    with stub:
        result = DeadLetters(tgt, tgt.runtime("rt")).redrive()
        stub.assert_no_pending_responses()
    assert (result.method, result.moved, result.reset) == ("loop", ["a"], ["a"])


def test_endpoints_other_than_aws_use_the_loop_without_trying_a_move_task():
    tgt, stub = target({}, endpoint="http://127.0.0.1:4566")
    expect_peek(stub, [])  # the loop's receive; a start_message_move_task call would fail the stub
    with stub:
        result = DeadLetters(tgt, tgt.runtime("rt")).redrive()
        stub.assert_no_pending_responses()
    assert (result.method, result.moved) == ("loop", [])


def test_other_move_task_errors_are_not_hidden_by_the_fallback():
    tgt, stub = target({})
    expect_peek(stub, [])
    arns(stub)
    stub.add_client_error("start_message_move_task", "AccessDenied", http_status_code=403)
    with stub, pytest.raises(ClientError, match="AccessDenied"):
        DeadLetters(tgt, tgt.runtime("rt")).redrive()


def test_sendable_keeps_only_what_send_message_accepts():
    received = {"runtime": {"DataType": "String", "StringValue": "rt", "StringListValues": [], "BinaryListValues": []}}
    assert _sendable(received) == {"runtime": {"DataType": "String", "StringValue": "rt"}}
