"""The task status table: one row per task id, shared by the API and the queue agent.

Every write is conditional, because two writers race on a row: duplicate
submissions at the front door, and redelivered messages at the back. The
rules are few and monotonic:

- a row is created once (``attribute_not_exists(id)``); a duplicate submission
  reads the existing row and compares fingerprints;
- ``succeeded`` is final: nothing overwrites it, so a redelivered task that
  already succeeded is acknowledged without running again;
- ``failed`` can still become ``succeeded`` (a retry after a failure report
  from a dying agent must not be lost), never the other way round;
- ``cancelled`` (a client's cancel of a queued or running task) is final too:
  the agent can no longer mark the task running, succeeded or failed.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from botocore.exceptions import ClientError

from sdeks.contract import TASK_TABLE_KEY, TASK_TABLE_TTL_ATTRIBUTE, TaskProgress, TaskStatus

DEFAULT_ROW_TTL = timedelta(days=30)
"""Status rows expire (DynamoDB TTL) after this long unless the owner passes the configured output expiry."""

REPUBLISH_AFTER = timedelta(seconds=30)
"""A row never marked enqueued this long after creation means its publisher died."""


def utcnow() -> datetime:
    return datetime.now(UTC)


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _conditional_failed(exc: ClientError) -> bool:
    return exc.response.get("Error", {}).get("Code") == "ConditionalCheckFailedException"


@dataclass(frozen=True)
class Submission:
    """Outcome of recording a submission.

    ``created``: this call created the row and must publish. ``must_publish``
    also covers a duplicate whose original publisher evidently died.
    """

    status: TaskStatus
    fingerprint: str
    created: bool
    must_publish: bool


class TaskTable:
    """Typed access to the task table through a boto3 ``Table`` resource."""

    def __init__(self, table: Any, row_ttl: timedelta = DEFAULT_ROW_TTL) -> None:
        """``row_ttl``: how long a row outlives its creation; the API passes the configured output
        expiry, so a status row never points at images the bucket's lifecycle already deleted."""
        self._table = table
        self._row_ttl = row_ttl

    @classmethod
    def from_name(
        cls, name: str, session: Any = None, endpoint_url: str | None = None, row_ttl: timedelta = DEFAULT_ROW_TTL
    ) -> TaskTable:
        import boto3

        resource = (session or boto3).resource("dynamodb", endpoint_url=endpoint_url)
        return cls(resource.Table(name), row_ttl)

    # --- reads -----------------------------------------------------------------

    def get(self, task_id: str) -> TaskStatus | None:
        item = self._table.get_item(Key={TASK_TABLE_KEY: task_id}, ConsistentRead=True).get("Item")
        return _to_status(item) if item else None

    def get_item(self, task_id: str) -> dict[str, Any] | None:
        """The raw row, for callers that need bookkeeping fields (fingerprint, prefix)."""
        return self._table.get_item(Key={TASK_TABLE_KEY: task_id}, ConsistentRead=True).get("Item")

    # --- front door ------------------------------------------------------------

    def record_submission(
        self,
        task_id: str,
        runtime: str,
        fingerprint: str,
        extra: dict[str, Any] | None = None,
        now: datetime | None = None,
    ) -> Submission:
        """Create the ``queued`` row, or report the existing one (idempotency)."""
        now = now or utcnow()
        item = {
            TASK_TABLE_KEY: task_id,
            "runtime": runtime,
            "status": "queued",
            "fingerprint": fingerprint,
            "created_at": _iso(now),
            "attempts": 0,
            "images": [],
            TASK_TABLE_TTL_ATTRIBUTE: int((now + self._row_ttl).timestamp()),
            **(extra or {}),
        }
        try:
            self._table.put_item(
                Item=item,
                ConditionExpression="attribute_not_exists(#k)",
                ExpressionAttributeNames={"#k": TASK_TABLE_KEY},
            )
        except ClientError as exc:
            if not _conditional_failed(exc):
                raise
            existing = self.get_item(task_id)
            if existing is None:  # deleted between the put and the read: try once more
                return self.record_submission(task_id, runtime, fingerprint, extra, now)
            return Submission(
                status=_to_status(existing),
                fingerprint=existing.get("fingerprint", ""),
                created=False,
                must_publish=existing.get("fingerprint") == fingerprint and self._claim_stale_publish(existing, now),
            )
        return Submission(status=_to_status(item), fingerprint=fingerprint, created=True, must_publish=True)

    def _claim_stale_publish(self, item: dict[str, Any], now: datetime) -> bool:
        if item.get("enqueued_at") or item.get("status") != "queued":
            return False
        created = datetime.fromisoformat(item["created_at"].replace("Z", "+00:00"))
        if now - created < REPUBLISH_AFTER and not item.get("publish_failed"):
            return False
        try:
            self._table.update_item(
                Key={TASK_TABLE_KEY: item[TASK_TABLE_KEY]},
                UpdateExpression="SET created_at = :now REMOVE publish_failed",
                ConditionExpression="attribute_not_exists(enqueued_at) AND created_at = :seen",
                ExpressionAttributeValues={":now": _iso(now), ":seen": item["created_at"]},
            )
        except ClientError as exc:
            if _conditional_failed(exc):
                return False
            raise
        return True

    def release_publish(self, task_id: str) -> None:
        """The publisher failed: let the next duplicate submission publish at once, not after REPUBLISH_AFTER."""
        try:
            self._table.update_item(
                Key={TASK_TABLE_KEY: task_id},
                UpdateExpression="SET publish_failed = :t",
                ConditionExpression="attribute_exists(#k) AND attribute_not_exists(enqueued_at)",
                ExpressionAttributeNames={"#k": TASK_TABLE_KEY},
                ExpressionAttributeValues={":t": True},
            )
        except ClientError as exc:
            if not _conditional_failed(exc):
                raise

    def mark_enqueued(self, task_id: str, now: datetime | None = None) -> None:
        self._table.update_item(
            Key={TASK_TABLE_KEY: task_id},
            UpdateExpression="SET enqueued_at = :now",
            ExpressionAttributeValues={":now": _iso(now or utcnow())},
        )

    def cancel(self, task_id: str, now: datetime | None = None) -> TaskStatus | None:
        """Cancel a queued or running task; the row as it now stands, ``None`` when there is no such task.

        One conditional write decides against the agent's concurrent writes. The caller reads
        the outcome from the returned status: ``cancelled`` (now, or by an earlier cancel:
        idempotent), or the finished state that made the cancel too late.
        """
        moment = _iso(now or utcnow())
        try:
            attrs = self._table.update_item(
                Key={TASK_TABLE_KEY: task_id},
                UpdateExpression="SET #s = :cancelled, finished_at = :now, cancelled_at = :now",
                ConditionExpression="attribute_exists(#k) AND #s IN (:queued, :running)",
                ExpressionAttributeNames={"#s": "status", "#k": TASK_TABLE_KEY},
                ExpressionAttributeValues={
                    ":cancelled": "cancelled",
                    ":queued": "queued",
                    ":running": "running",
                    ":now": moment,
                },
                ReturnValues="ALL_NEW",
            )["Attributes"]
        except ClientError as exc:
            if not _conditional_failed(exc):
                raise
            item = self.get_item(task_id)
            return _to_status(item) if item else None
        return _to_status(attrs)

    def is_cancelled(self, task_id: str) -> bool:
        """Whether a client cancelled the task: what the agent checks before and while running it."""
        item = self._table.get_item(
            Key={TASK_TABLE_KEY: task_id},
            ConsistentRead=True,
            ProjectionExpression="#s",
            ExpressionAttributeNames={"#s": "status"},
        ).get("Item")
        return bool(item) and item.get("status") == "cancelled"

    # --- agent -----------------------------------------------------------------

    def mark_running(self, task_id: str, runtime: str, attempt: int, now: datetime | None = None) -> TaskStatus | None:
        """Record an attempt; return ``None`` when the task already succeeded or was cancelled (skip it).

        Creates the row when absent: tasks may be published to the topic directly,
        bypassing the API, as the AWS sample's tools do.
        """
        now = now or utcnow()
        try:
            attrs = self._table.update_item(
                Key={TASK_TABLE_KEY: task_id},
                UpdateExpression=(
                    "SET #s = :running, started_at = :now, attempts = :attempt, runtime = :rt, "
                    "created_at = if_not_exists(created_at, :now), images = if_not_exists(images, :empty), "
                    f"{TASK_TABLE_TTL_ATTRIBUTE} = if_not_exists({TASK_TABLE_TTL_ATTRIBUTE}, :ttl) "
                    "REMOVE #e, finished_at, progress"
                ),
                ConditionExpression="attribute_not_exists(#s) OR NOT #s IN (:succeeded, :cancelled)",
                ExpressionAttributeNames={"#s": "status", "#e": "error"},
                ExpressionAttributeValues={
                    ":running": "running",
                    ":succeeded": "succeeded",
                    ":cancelled": "cancelled",
                    ":now": _iso(now),
                    ":attempt": attempt,
                    ":rt": runtime,
                    ":empty": [],
                    ":ttl": int((now + self._row_ttl).timestamp()),
                },
                ReturnValues="ALL_NEW",
            )["Attributes"]
        except ClientError as exc:
            if _conditional_failed(exc):
                return None
            raise
        return _to_status(attrs)

    def set_progress(self, task_id: str, progress: TaskProgress) -> bool:
        """Record a running task's progress; ``False`` (nothing written) once the row is no longer ``running``."""
        try:
            self._table.update_item(
                Key={TASK_TABLE_KEY: task_id},
                UpdateExpression="SET progress = :p",
                ConditionExpression="#s = :running",
                ExpressionAttributeNames={"#s": "status"},
                ExpressionAttributeValues={
                    ":p": progress.model_dump(exclude={"fraction"}, exclude_none=True)
                    | {"fraction": Decimal(str(round(progress.fraction, 4)))},
                    ":running": "running",
                },
            )
        except ClientError as exc:
            if _conditional_failed(exc):
                return False
            raise
        return True

    def mark_succeeded(self, task_id: str, images: list[str], now: datetime | None = None) -> bool:
        """Record the images unless the task was cancelled meanwhile; ``False`` when it was.

        A row this creates (its earlier writes failed) expires like any other: with ``row_ttl``.
        """
        return self._finish(
            task_id,
            "succeeded",
            "images = :images",
            {":images": images},
            unless=("cancelled",),
            remove_error=True,
            now=now,
        )

    def mark_failed(self, task_id: str, error: str, now: datetime | None = None) -> bool:
        """Record a failure unless the task already succeeded or was cancelled; ``False`` when it had.

        A task rejected before it ran (published straight to the topic) gets its row here, with ``row_ttl``.
        """
        return self._finish(
            task_id, "failed", "#e = :error", {":error": error[:2000]}, unless=("succeeded", "cancelled"), now=now
        )

    def _finish(
        self,
        task_id: str,
        state: str,
        assignment: str,
        values: dict[str, Any],
        *,
        unless: tuple[str, ...],
        remove_error: bool = False,
        now: datetime | None = None,
    ) -> bool:
        """One conditional terminal write: ``state`` + ``assignment``, refused when the row is in ``unless``."""
        now = now or utcnow()
        blocked = {f":unless{i}": blocked_state for i, blocked_state in enumerate(unless)}
        try:
            self._table.update_item(
                Key={TASK_TABLE_KEY: task_id},
                UpdateExpression=(
                    f"SET #s = :state, finished_at = :now, {assignment}, "
                    f"{TASK_TABLE_TTL_ATTRIBUTE} = if_not_exists({TASK_TABLE_TTL_ATTRIBUTE}, :ttl)"
                    + (" REMOVE #e" if remove_error else "")
                ),
                ConditionExpression=f"attribute_not_exists(#s) OR NOT #s IN ({', '.join(blocked)})",
                ExpressionAttributeNames={"#s": "status", "#e": "error"},
                ExpressionAttributeValues={
                    ":state": state,
                    ":now": _iso(now),
                    ":ttl": int((now + self._row_ttl).timestamp()),
                    **blocked,
                    **values,
                },
            )
        except ClientError as exc:
            if _conditional_failed(exc):
                return False
            raise
        return True


def _to_status(item: dict[str, Any]) -> TaskStatus:
    return TaskStatus(
        id=item[TASK_TABLE_KEY],
        runtime=item.get("runtime", ""),
        status=item.get("status", "queued"),
        created_at=item.get("created_at") or item.get("started_at"),
        started_at=item.get("started_at"),
        finished_at=item.get("finished_at"),
        attempts=int(item.get("attempts", 0)),
        images=list(item.get("images", [])),
        error=item.get("error"),
        progress=_progress(item) if item.get("status") == "running" else None,
    )


def _progress(item: dict[str, Any]) -> TaskProgress | None:
    """The stored progress (DynamoDB numbers come back as Decimal: the fraction a float, counts integers)."""
    stored = item.get("progress")
    if not isinstance(stored, dict):
        return None
    return TaskProgress.model_validate(
        {
            key: (float(value) if key == "fraction" else int(value)) if isinstance(value, Decimal) else value
            for key, value in stored.items()
        }
    )
