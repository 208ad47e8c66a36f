"""Dead-lettered tasks: what is in a runtime's DLQ and why, and putting them back.

Listing *peeks*: messages are received with a short visibility and made visible
again at once, so a listing never delays a redrive or consumes anything.

Redriving moves messages from the DLQ to the runtime's queue and resets each
task's status row to ``queued`` (never a row that already ``succeeded``). Two ways:

- **message-move task** (``sqs:StartMessageMoveTask``): SQS moves every message
  server-side; used for a whole DLQ on AWS;
- **receive/send/delete loop**: one message at a time, send before delete, so a
  crash duplicates rather than loses (the agent is idempotent per task id); used
  for ``--id`` (a move task cannot select messages) and on endpoints other than
  AWS's own (moto, hence local mode, has no move tasks).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal
from urllib.parse import urlsplit

from botocore.exceptions import BotoCoreError, ClientError

from sdeks.config import TASK_TABLE_KEY
from sdeks.contract import event_key
from sdeks.contract.task import ID_PATTERN
from sdeks.ops.target import OpsTarget, RuntimeRef

PEEK_VISIBILITY_S = 30
"""How long a peeked or held message stays hidden if this process dies before releasing it."""
RECEIVE_WAIT_S = 1
"""Long poll (≥ 1 s) so a receive asks every SQS server: short polls may miss messages."""
MOVE_TASK_UNSUPPORTED = {"InvalidAction", "UnsupportedOperation", "AWS.SimpleQueueService.UnsupportedOperation"}

_ID = re.compile(ID_PATTERN)
RedriveMethod = Literal["auto", "move-task", "loop"]


@dataclass(frozen=True)
class DeadLetter:
    """One message in a DLQ, with what the status row (or stored event) says about its task."""

    message_id: str
    task_id: str | None
    runtime: str | None
    sent_at: datetime | None
    status: str | None
    attempts: int | None
    error: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "message_id": self.message_id,
            "task_id": self.task_id,
            "runtime": self.runtime,
            "sent_at": self.sent_at.isoformat() if self.sent_at else None,
            "status": self.status,
            "attempts": self.attempts,
            "error": self.error,
        }


@dataclass(frozen=True)
class RedriveResult:
    method: Literal["move-task", "loop"]
    moved: list[str]
    """Task ids (or message ids of messages without one) put back on the queue."""
    reset: list[str]
    """Task ids whose status row went back to ``queued``."""
    move_task_handle: str | None = None


def _identify(body: str) -> tuple[str | None, str | None, str | None]:
    """(task id, runtime, why not a task) of a message body, trusting only well-formed fields."""
    try:
        data = json.loads(body)
    except (TypeError, ValueError):
        return None, None, "not a task message: body is not JSON"
    if not isinstance(data, dict) or not isinstance(data.get("id"), str) or not _ID.match(data["id"]):
        return None, None, "not a task message: no valid task id"
    runtime = data.get("runtime")
    return data["id"], runtime if isinstance(runtime, str) else None, None


def _sent_at(message: dict[str, Any]) -> datetime | None:
    sent = message.get("Attributes", {}).get("SentTimestamp", "")
    return datetime.fromtimestamp(int(sent) / 1000, UTC) if sent.isdigit() else None


class DeadLetters:
    """The DLQ of one runtime of a target."""

    def __init__(self, target: OpsTarget, runtime: RuntimeRef) -> None:
        self.target = target
        self.runtime = runtime
        self.sqs = target.sqs

    # --- reading -----------------------------------------------------------------

    def _receive(self, visibility_s: int) -> list[dict[str, Any]]:
        return self.sqs.receive_message(
            QueueUrl=self.runtime.dlq_url,
            MaxNumberOfMessages=10,
            WaitTimeSeconds=RECEIVE_WAIT_S,
            VisibilityTimeout=visibility_s,
            MessageSystemAttributeNames=["All"],
            MessageAttributeNames=["All"],
        ).get("Messages", [])

    def _hold_all(self, limit: int | None) -> list[dict[str, Any]]:
        """Receive every message (up to ``limit``) and keep them hidden; the caller releases or deletes."""
        held: dict[str, dict[str, Any]] = {}
        while limit is None or len(held) < limit:
            batch = [m for m in self._receive(PEEK_VISIBILITY_S) if m["MessageId"] not in held]
            if not batch:
                break
            held.update((m["MessageId"], m) for m in batch)
        return list(held.values())

    def _release(self, messages: list[dict[str, Any]]) -> None:
        for start in range(0, len(messages), 10):
            chunk = messages[start : start + 10]
            self.sqs.change_message_visibility_batch(
                QueueUrl=self.runtime.dlq_url,
                Entries=[
                    {"Id": str(n), "ReceiptHandle": m["ReceiptHandle"], "VisibilityTimeout": 0}
                    for n, m in enumerate(chunk)
                ],
            )

    def peek(self, limit: int | None = None) -> list[DeadLetter]:
        """Every dead-lettered message (up to ``limit``) with its task's last error; consumes nothing."""
        messages = self._hold_all(limit)
        try:
            return sorted(
                (self._describe(m) for m in messages),
                key=lambda d: d.sent_at or datetime.min.replace(tzinfo=UTC),
            )
        finally:
            self._release(messages)

    def _describe(self, message: dict[str, Any]) -> DeadLetter:
        task_id, runtime, problem = _identify(message.get("Body", ""))
        status = attempts = None
        error = problem or ""
        if task_id is not None:
            row = self.target.table.get_item(Key={TASK_TABLE_KEY: task_id}, ConsistentRead=True).get("Item")
            if row is not None:
                status, attempts = row.get("status"), int(row.get("attempts", 0))
                error = row.get("error") or ""
            if not error:
                error = self._stored_event_error(task_id) or ("no status row" if row is None else "no error recorded")
        return DeadLetter(message["MessageId"], task_id, runtime, _sent_at(message), status, attempts, error)

    def _stored_event_error(self, task_id: str) -> str | None:
        """The error of the completion event the agent stored for the task, if any."""
        try:
            body = self.target.s3.get_object(Bucket=self.target.output_bucket, Key=event_key(task_id))["Body"].read()
            error = json.loads(body).get("error")
        except (ClientError, BotoCoreError, ValueError, AttributeError):
            return None
        return error if isinstance(error, str) else None

    # --- redrive -----------------------------------------------------------------

    def redrive(self, task_ids: set[str] | None = None, method: RedriveMethod = "auto") -> RedriveResult:
        """Move dead-lettered tasks back to the queue (all, or those in ``task_ids``); reset their rows."""
        if task_ids is None and (method == "move-task" or (method == "auto" and _is_aws(self.sqs))):
            try:
                return self._redrive_by_move_task()
            except ClientError as exc:
                if method == "move-task" or exc.response.get("Error", {}).get("Code") not in MOVE_TASK_UNSUPPORTED:
                    raise
        return self._redrive_by_loop(task_ids)

    def _redrive_by_move_task(self) -> RedriveResult:
        ids = [d.task_id for d in self.peek() if d.task_id]
        handle = self.sqs.start_message_move_task(
            SourceArn=self.target.queue_arn(self.runtime.dlq_url),
            DestinationArn=self.target.queue_arn(self.runtime.queue_url),
        )["TaskHandle"]
        reset = [task_id for task_id in ids if self.reset_row(task_id)]
        return RedriveResult("move-task", moved=ids, reset=reset, move_task_handle=handle)

    def _redrive_by_loop(self, task_ids: set[str] | None) -> RedriveResult:
        held = self._hold_all(None)
        keep, moved, reset = [], [], []
        done: set[str] = set()
        try:
            for message in held:
                task_id, _, _ = _identify(message.get("Body", ""))
                if task_ids is not None and task_id not in task_ids:
                    keep.append(message)
                    continue
                self.sqs.send_message(
                    QueueUrl=self.runtime.queue_url,
                    MessageBody=message["Body"],
                    MessageAttributes=_sendable(message.get("MessageAttributes", {})),
                )
                self.sqs.delete_message(QueueUrl=self.runtime.dlq_url, ReceiptHandle=message["ReceiptHandle"])
                done.add(message["MessageId"])
                moved.append(task_id or message["MessageId"])
                if task_id and self.reset_row(task_id):
                    reset.append(task_id)
        except BaseException:
            self._release([m for m in held if m["MessageId"] not in done])
            raise
        self._release(keep)
        return RedriveResult("loop", moved=moved, reset=reset)

    def reset_row(self, task_id: str) -> bool:
        """``queued`` again, error cleared; never a row that succeeded meanwhile. ``False`` if unchanged."""
        try:
            self.target.table.update_item(
                Key={TASK_TABLE_KEY: task_id},
                UpdateExpression="SET #s = :queued, redriven_at = :now REMOVE #e, finished_at, started_at",
                ConditionExpression="attribute_exists(#k) AND #s <> :succeeded",
                ExpressionAttributeNames={"#s": "status", "#e": "error", "#k": TASK_TABLE_KEY},
                ExpressionAttributeValues={
                    ":queued": "queued",
                    ":succeeded": "succeeded",
                    ":now": datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
                },
            )
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") == "ConditionalCheckFailedException":
                return False
            raise
        return True


def _is_aws(client: Any) -> bool:
    """Whether ``client`` talks to AWS itself (moto, LocalStack and other look-alikes lack move tasks)."""
    host = urlsplit(client.meta.endpoint_url).hostname or ""
    return host.endswith((".amazonaws.com", ".amazonaws.com.cn"))


def _sendable(attributes: dict[str, Any]) -> dict[str, Any]:
    """Received message attributes in the shape ``SendMessage`` accepts."""
    out = {}
    for name, value in attributes.items():
        kept = {k: value[k] for k in ("DataType", "StringValue", "BinaryValue") if k in value}
        if "DataType" in kept:
            out[name] = kept
    return out
