"""One frame of ``sdeks top``: queue depths from SQS, task activity from the status table.

Sources a deployment already has, so the view works the same locally and on AWS
without any metrics service:

- per runtime, SQS queue attributes: waiting (visible), in flight (received, not
  deleted), delayed (backing off after a transient failure), DLQ depth;
- the task table, scanned for rows running now or finished within the window:
  tasks/min, queue wait / run / end-to-end latencies, the tasks running now;
- progress of a running task: the fraction of the row's ``progress`` (the contract's
  ``TaskProgress``) when an agent records one, else — in local mode, where the runtime
  server is reachable — the runtime's own ``/sdapi/v1/progress`` while it runs exactly
  one task.

The table scan reads every row (there is no index on status); ``sdeks top``
therefore scans less often than it reads queue depths on a deployed stack.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from boto3.dynamodb.conditions import Attr
from botocore.exceptions import BotoCoreError, ClientError

from sdeks.contract import TaskProgress
from sdeks.ops.target import OpsTarget, RuntimeRef

RECENT_WINDOW = timedelta(minutes=5)
"""Finished tasks this recent count for latencies; tasks/min counts the last minute."""
QUEUE_ATTRIBUTES = [
    "ApproximateNumberOfMessages",
    "ApproximateNumberOfMessagesNotVisible",
    "ApproximateNumberOfMessagesDelayed",
]
ROW_FIELDS = ("id", "runtime", "status", "created_at", "started_at", "finished_at", "attempts", "progress")


def parse_time(value: Any) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


@dataclass(frozen=True)
class QueueStats:
    runtime: str
    waiting: int
    in_flight: int
    delayed: int
    dlq: int


@dataclass(frozen=True)
class RunningTask:
    id: str
    runtime: str
    attempt: int
    started_at: datetime | None
    progress: float | None = None


@dataclass(frozen=True)
class FinishedTask:
    id: str
    runtime: str
    status: str
    finished_at: datetime
    queued_s: float | None
    run_s: float | None
    total_s: float | None


@dataclass(frozen=True)
class RuntimeActivity:
    """Finished-task rates and latencies of one runtime over the window."""

    runtime: str
    succeeded_per_min: int = 0
    failed_per_min: int = 0
    total_p50_s: float | None = None
    total_p95_s: float | None = None


@dataclass
class Snapshot:
    taken_at: datetime
    label: str
    queues: list[QueueStats]
    running: list[RunningTask] = field(default_factory=list)
    recent: list[FinishedTask] = field(default_factory=list)
    activity: dict[str, RuntimeActivity] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)


def percentile(values: list[float], q: float) -> float | None:
    """The q-quantile (0–1) by linear interpolation; ``None`` without values."""
    if not values:
        return None
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[round(q * 100) - 1]


def queue_stats(target: OpsTarget, ref: RuntimeRef) -> QueueStats:
    main = target.sqs.get_queue_attributes(QueueUrl=ref.queue_url, AttributeNames=QUEUE_ATTRIBUTES)["Attributes"]
    dlq = target.sqs.get_queue_attributes(QueueUrl=ref.dlq_url, AttributeNames=QUEUE_ATTRIBUTES)["Attributes"]
    return QueueStats(
        runtime=ref.name,
        waiting=int(main.get("ApproximateNumberOfMessages", 0)),
        in_flight=int(main.get("ApproximateNumberOfMessagesNotVisible", 0)),
        delayed=int(main.get("ApproximateNumberOfMessagesDelayed", 0)),
        dlq=sum(int(dlq.get(a, 0)) for a in QUEUE_ATTRIBUTES),
    )


def scan_active(table: Any, since: datetime) -> list[dict[str, Any]]:
    """Rows running now or finished since ``since`` (every page of the scan)."""
    names = {f"#{n}": n for n in ROW_FIELDS}
    kwargs: dict[str, Any] = {
        "FilterExpression": Attr("status").eq("running") | Attr("finished_at").gte(_iso(since)),
        "ProjectionExpression": ", ".join(names),
        "ExpressionAttributeNames": names,
    }
    rows: list[dict[str, Any]] = []
    while True:
        page = table.scan(**kwargs)
        rows.extend(page.get("Items", []))
        if "LastEvaluatedKey" not in page:
            return rows
        kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _seconds(start: datetime | None, end: datetime | None) -> float | None:
    return max(0.0, (end - start).total_seconds()) if start and end else None


def task_activity(rows: list[dict[str, Any]], now: datetime) -> tuple[list[RunningTask], list[FinishedTask]]:
    running, finished = [], []
    for row in rows:
        created, started, ended = (parse_time(row.get(k)) for k in ("created_at", "started_at", "finished_at"))
        if row.get("status") == "running":
            progress = row.get("progress")  # a TaskProgress as the agent wrote it
            running.append(
                RunningTask(
                    id=row["id"],
                    runtime=row.get("runtime", ""),
                    attempt=int(row.get("attempts", 0)),
                    started_at=started,
                    progress=TaskProgress.model_validate(progress).fraction if progress else None,
                )
            )
        elif ended is not None and row.get("status") in ("succeeded", "failed"):
            finished.append(
                FinishedTask(
                    id=row["id"],
                    runtime=row.get("runtime", ""),
                    status=row["status"],
                    finished_at=ended,
                    queued_s=_seconds(created, started),
                    run_s=_seconds(started, ended),
                    total_s=_seconds(created, ended),
                )
            )
    running.sort(key=lambda t: t.started_at or now)
    finished.sort(key=lambda t: t.finished_at, reverse=True)
    return running, finished


def runtime_activity(runtime: str, finished: list[FinishedTask], now: datetime) -> RuntimeActivity:
    mine = [t for t in finished if t.runtime == runtime]
    last_minute = [t for t in mine if now - t.finished_at <= timedelta(minutes=1)]
    totals = [t.total_s for t in mine if t.status == "succeeded" and t.total_s is not None]
    return RuntimeActivity(
        runtime=runtime,
        succeeded_per_min=sum(1 for t in last_minute if t.status == "succeeded"),
        failed_per_min=sum(1 for t in last_minute if t.status == "failed"),
        total_p50_s=percentile(totals, 0.5),
        total_p95_s=percentile(totals, 0.95),
    )


def runtime_progress(runtime_url: str, client: httpx.Client) -> float | None:
    """The local runtime server's progress of the image it renders now (A1111 ``/sdapi/v1/progress``)."""
    try:
        body = client.get(f"{runtime_url}/sdapi/v1/progress", timeout=0.5).json()
    except (httpx.HTTPError, ValueError):
        return None
    value = body.get("progress") if isinstance(body, dict) else None
    return float(value) if isinstance(value, int | float) else None


def _reason(exc: Exception) -> str:
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        return f"{error.get('Code', 'error')}: {error.get('Message', '')}".rstrip(": ")
    return f"{type(exc).__name__}: {exc}"


class Collector:
    """Takes snapshots of one target; keeps the last table scan between scans."""

    def __init__(self, target: OpsTarget, table_every_s: float = 0.0) -> None:
        self.target = target
        self.table_every_s = table_every_s
        self._rows: list[dict[str, Any]] = []
        self._scanned_at: datetime | None = None
        self._http = httpx.Client()

    def close(self) -> None:
        self._http.close()

    def snapshot(self, now: datetime | None = None) -> Snapshot:
        now = now or datetime.now(UTC)
        snap = Snapshot(taken_at=now, label=self.target.label, queues=[])
        for ref in self.target.runtimes.values():
            try:
                snap.queues.append(queue_stats(self.target, ref))
            except (ClientError, BotoCoreError) as exc:  # one unreadable queue must not blank the view
                snap.errors.append(f"queues of {ref.name}: {_reason(exc)}")
        if self._scanned_at is None or (now - self._scanned_at).total_seconds() >= self.table_every_s:
            try:
                self._rows = scan_active(self.target.table, now - RECENT_WINDOW)
                self._scanned_at = now
            except (ClientError, BotoCoreError) as exc:
                snap.errors.append(f"task table: {_reason(exc)}")
        running, finished = task_activity(self._rows, now)
        snap.running = self._with_live_progress(running)
        snap.recent = finished
        snap.activity = {name: runtime_activity(name, finished, now) for name in self.target.runtimes}
        return snap

    def _with_live_progress(self, running: list[RunningTask]) -> list[RunningTask]:
        out = []
        for task in running:
            ref = self.target.runtimes.get(task.runtime)
            alone = sum(1 for t in running if t.runtime == task.runtime) == 1
            if task.progress is None and ref is not None and ref.runtime_url and alone:
                progress = runtime_progress(ref.runtime_url, self._http)
                if progress is not None:
                    task = RunningTask(task.id, task.runtime, task.attempt, task.started_at, progress)
            out.append(task)
        return out
