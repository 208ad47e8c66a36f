"""From an SQS message to a :class:`Task`: parse, classify, resolve the claim check.

Three outcomes:

- :class:`Job` — a valid task, ready to run;
- :class:`PermanentError` with an id — the message names a task but its content
  is invalid: the task fails (event, status row) and the message is deleted;
- :class:`Unparseable` — no task id can be trusted: nothing can be announced,
  so the message is left to reach the DLQ after the queue's maxReceiveCount.
"""

from __future__ import annotations

import contextlib
import json
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError

from queue_agent.errors import PermanentError
from queue_agent.fetch import read_s3
from sdeks.contract import (
    TASKTYPES_BY_RUNTIME_TYPE,
    Task,
    TaskMessage,
    TaskRequest,
    parse_image_ref,
    summarize,
)
from sdeks.contract.task import ID_PATTERN

_ID = re.compile(ID_PATTERN)


class Unparseable(Exception):  # noqa: N818
    """The body is not a task message; ``reason`` never contains the body."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass
class Received:
    """One SQS message as the agent holds it."""

    message_id: str
    receipt_handle: str
    body: str
    receive_count: int
    sent_at: float | None = None
    received_at: float = 0.0

    @classmethod
    def from_sqs(cls, message: dict[str, Any], now: float) -> Received:
        attrs = message.get("Attributes", {})
        sent = attrs.get("SentTimestamp")
        return cls(
            message_id=message["MessageId"],
            receipt_handle=message["ReceiptHandle"],
            body=message.get("Body", ""),
            receive_count=int(attrs.get("ApproximateReceiveCount", "1")),
            sent_at=int(sent) / 1000 if sent and sent.isdigit() else None,
            received_at=now,
        )


@dataclass
class Job:
    """A task the agent may run; ``payload`` is the runtime request once inputs are fetched."""

    task_id: str
    runtime: str
    submitted_at: datetime
    task: Task
    payload: dict[str, Any] | None = None
    inputs: dict[str, str] = field(default_factory=dict)

    @property
    def prefix(self) -> str:
        return self.task.metadata.prefix

    @property
    def tasktype(self) -> str:
        return self.task.metadata.tasktype


@dataclass
class Identified:
    """What is known about a message whose task is invalid: enough to announce the failure."""

    task_id: str
    runtime: str
    submitted_at: datetime | None
    context: Any = None


def identify(body: str) -> Identified:
    """The id/runtime of a message, trusting only well-formed fields; :class:`Unparseable` otherwise."""
    try:
        data = json.loads(body)
    except (ValueError, TypeError):
        raise Unparseable("body is not JSON") from None
    if not isinstance(data, dict):
        raise Unparseable("body is not a JSON object")
    task_id = data.get("id")
    if not isinstance(task_id, str) or not _ID.match(task_id):
        raise Unparseable("message has no valid task id")
    runtime = data.get("runtime") if isinstance(data.get("runtime"), str) else ""
    submitted = None
    with contextlib.suppress(ValueError):
        submitted = datetime.fromisoformat(str(data.get("submitted_at")).replace("Z", "+00:00"))
    context = None
    task = data.get("task")
    if isinstance(task, dict) and isinstance(task.get("metadata"), dict):
        context = task["metadata"].get("context")
    return Identified(task_id, runtime[:40], submitted, context)


def parse(
    body: str,
    *,
    runtime_name: str,
    runtime_type: str,
    s3: Any = None,
    claim_bucket: str = "",
    claim_max_bytes: int = 8 * 1024 * 1024,
) -> Job:
    """Validate a message into a :class:`Job`, resolving a claim check from the output bucket.

    Raises :class:`Unparseable` or :class:`PermanentError` (invalid task);
    S3 trouble while resolving raises :class:`TransientError`.
    """
    identify(body)  # Unparseable before anything else
    try:
        message = TaskMessage.model_validate_json(body)
    except ValidationError as exc:
        raise PermanentError(f"invalid task message: {summarize(exc)}") from None
    task = message.task
    if task is None:
        task = resolve_claim_check(message.claim_check or "", s3, claim_bucket, claim_max_bytes)
    if task.metadata.id and task.metadata.id != message.id:
        raise PermanentError(f"task id {task.metadata.id!r} does not match message id {message.id!r}")
    if message.runtime != runtime_name or task.metadata.runtime != runtime_name:
        raise PermanentError(f"task for runtime {task.metadata.runtime!r} delivered to runtime {runtime_name!r}")
    if task.metadata.tasktype not in TASKTYPES_BY_RUNTIME_TYPE[runtime_type]:
        raise PermanentError(
            f"runtime {runtime_name!r} is of type {runtime_type!r} and cannot serve tasktype {task.metadata.tasktype!r}"
        )
    submitted = message.submitted_at
    if submitted.tzinfo is None:
        submitted = submitted.replace(tzinfo=UTC)
    return Job(task_id=message.id, runtime=message.runtime, submitted_at=submitted, task=task)


def resolve_claim_check(uri: str, s3: Any, claim_bucket: str, max_bytes: int) -> Task:
    """Read the stored :class:`TaskRequest` a claim check points at (output bucket only)."""
    try:
        ref = parse_image_ref(uri)
    except ValueError as exc:
        raise PermanentError(f"claim check: {exc}") from None
    if ref.kind != "s3" or ref.bucket != claim_bucket:
        raise PermanentError("claim check: refused, only the output bucket holds claim checks")
    raw = read_s3(s3, ref.bucket, ref.key or "", max_bytes, "claim check")
    try:
        return TaskRequest.model_validate_json(raw).task
    except ValidationError as exc:
        raise PermanentError(f"claim check: invalid task: {summarize(exc)}") from None
