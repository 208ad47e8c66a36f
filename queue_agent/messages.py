"""From an SQS message to a :class:`Job`: validated once, routing included, claim check resolved.

Three outcomes of :func:`parse`:

- a :class:`Job` — a valid task for this runtime, ready to prepare and run;
- :class:`Rejected` — the message names a task (its :class:`Identity` is known)
  but the task cannot run: ``error`` is permanent (invalid content, wrong
  runtime, refused claim check: the task fails and the message is deleted) or
  transient (S3 trouble resolving a claim check: retried);
- :class:`Unparseable` — no task id can be trusted: nothing can be announced,
  so the message is left to reach the DLQ after the queue's maxReceiveCount.

The body is validated once, by the contract's models with the routing context
(``{"runtimes": {name: type}}``), so the contract decides what this runtime
serves and reports it with a typed error; only a body that fails validation is
looked at a second time, to salvage the identity its failure is announced under.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from pydantic import JsonValue, ValidationError

from queue_agent.errors import PermanentError, TaskError
from queue_agent.fetch import read_s3
from sdeks.contract import (
    ErrorCode,
    RuntimeType,
    Task,
    TaskMessage,
    TaskRequest,
    parse_image_ref,
    summarize,
)
from sdeks.contract.limits import MAX_JSON_DEPTH, JsonTooDeepError, check_json_depth
from sdeks.contract.task import ID_PATTERN

_ID = re.compile(ID_PATTERN)


class Unparseable(Exception):  # noqa: N818
    """The body is not a task message; ``reason`` never contains the body."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class Identity:
    """What a failure is announced under: the task id, its runtime and its context."""

    task_id: str
    runtime: str
    context: JsonValue = None


class Rejected(Exception):  # noqa: N818
    """A message that names a task which cannot run; ``error`` says whether retrying may help."""

    def __init__(self, identity: Identity, error: TaskError) -> None:
        super().__init__(error.reason)
        self.identity = identity
        self.error = error


@dataclass
class Received:
    """One SQS message as the agent holds it."""

    message_id: str
    receipt_handle: str
    body: str
    receive_count: int
    received_at: float = 0.0

    @classmethod
    def from_sqs(cls, message: dict[str, Any], now: float) -> Received:
        attrs = message.get("Attributes", {})
        return cls(
            message_id=message["MessageId"],
            receipt_handle=message["ReceiptHandle"],
            body=message.get("Body", ""),
            receive_count=int(attrs.get("ApproximateReceiveCount", "1")),
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
    ignored: list[str] = field(default_factory=list)

    @property
    def prefix(self) -> str:
        return self.task.metadata.prefix

    @property
    def tasktype(self) -> str:
        return self.task.metadata.tasktype

    @property
    def identity(self) -> Identity:
        return Identity(self.task_id, self.runtime, self.task.metadata.context)


@dataclass(frozen=True)
class Routing:
    """Who this agent serves, as the contract's routing validation context."""

    runtime_name: str
    runtime_type: RuntimeType

    @property
    def context(self) -> dict[str, Any]:
        return {"runtimes": {self.runtime_name: self.runtime_type}}

    def reason(self, exc: ValidationError, what: str, runtime: str) -> str:
        """A user-facing reason, mapping the contract's typed routing errors by type, never by text.

        ``runtime`` is the one the message names: a task for another runtime reached this
        queue (a subscription filter gone wrong), which says more than "unknown runtime".
        """
        if any(err["type"] == ErrorCode.UNKNOWN_RUNTIME for err in exc.errors()):
            return f"task for runtime {runtime!r} delivered to runtime {self.runtime_name!r}"
        return f"{what}: {summarize(exc)}"


@dataclass(frozen=True)
class ClaimChecks:
    """Where claim checks may be read from (the output bucket only) and how much of one."""

    s3: Any
    bucket: str
    max_bytes: int = 8 * 1024 * 1024


def identify(body: str) -> Identity:
    """The identity of a message, trusting only well-formed fields; :class:`Unparseable` otherwise."""
    try:
        data = json.loads(body)
    except (ValueError, TypeError, RecursionError):
        raise Unparseable("body is not JSON") from None
    if not isinstance(data, dict):
        raise Unparseable("body is not a JSON object")
    task_id = data.get("id")
    if not isinstance(task_id, str) or not _ID.match(task_id):
        raise Unparseable("message has no valid task id")
    runtime = data.get("runtime") if isinstance(data.get("runtime"), str) else ""
    context = None
    task = data.get("task")
    if isinstance(task, dict) and isinstance(task.get("metadata"), dict):
        context = task["metadata"].get("context")
    return Identity(task_id, runtime[:40], context)


def parse(body: str, routing: Routing, claims: ClaimChecks | None = None) -> Job:
    """Validate a message into a :class:`Job`; raises :class:`Unparseable` or :class:`Rejected`."""
    too_deep = json_too_deep(body)
    if too_deep is not None:
        raise Rejected(identify(body), PermanentError(f"invalid task message: {too_deep}"))
    try:
        message = TaskMessage.model_validate_json(body, context=routing.context)
    except ValidationError as exc:
        identity = identify(body)
        raise Rejected(
            identity, PermanentError(routing.reason(exc, "invalid task message", identity.runtime))
        ) from None
    identity = Identity(message.id, message.runtime, message.task.metadata.context if message.task else None)
    try:
        task = message.task or resolve_claim_check(message.claim_check or "", message.runtime, routing, claims)
        if task.metadata.id and task.metadata.id != message.id:
            raise PermanentError(f"task id {task.metadata.id!r} does not match message id {message.id!r}")
        if task.metadata.runtime != message.runtime:
            raise PermanentError(
                f"task for runtime {task.metadata.runtime!r} delivered to runtime {routing.runtime_name!r}"
            )
    except TaskError as exc:
        raise Rejected(identity, exc) from None
    return Job(task_id=message.id, runtime=message.runtime, submitted_at=_aware(message.submitted_at), task=task)


def resolve_claim_check(uri: str, runtime: str, routing: Routing, claims: ClaimChecks | None) -> Task:
    """Read the stored :class:`TaskRequest` a claim check points at (output bucket only)."""
    try:
        ref = parse_image_ref(uri)
    except ValueError as exc:
        raise PermanentError(f"claim check: {exc}") from None
    if claims is None or ref.kind != "s3" or ref.bucket != claims.bucket:
        raise PermanentError("claim check: refused, only the output bucket holds claim checks")
    raw = read_s3(claims.s3, ref.bucket, ref.key or "", claims.max_bytes, "claim check")
    too_deep = json_too_deep(raw)
    if too_deep is not None:
        raise PermanentError(f"claim check: invalid task: {too_deep}")
    try:
        return TaskRequest.model_validate_json(raw, context=routing.context).task
    except ValidationError as exc:
        raise PermanentError(routing.reason(exc, "claim check: invalid task", runtime)) from None


def json_too_deep(raw: str | bytes) -> JsonTooDeepError | None:
    """The contract's depth limit, checked before the models see the document (their limits differ and fail late).

    Malformed JSON is left to the models, which report it with the rest of the validation.
    """
    try:
        check_json_depth(json.loads(raw))
    except JsonTooDeepError as exc:
        return exc
    except RecursionError:
        return JsonTooDeepError(MAX_JSON_DEPTH + 1)
    except (ValueError, TypeError):
        pass
    return None


def _aware(moment: datetime) -> datetime:
    """Timestamps without a zone are UTC (the API writes UTC)."""
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)
