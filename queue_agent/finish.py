"""The finishing side: carry out a held message's verdict, then report its one outcome.

Several tasks finish at once (the agent's finish pool), and within one task
independent AWS calls run together: images and info are written in parallel,
the completion event is stored (the commit record), then the status row (whose
conditional write may say the task was cancelled meanwhile: it is then
announced cancelled), then the publish, then the acknowledgement (batched with
other tasks' deletes by the consumer). A transient failure anywhere keeps the message: it is released
with a backoff, or on its last delivery the DLQ move is announced.

Failure classes (:mod:`queue_agent.errors`): permanent → status failed, failed
event, delete; transient → visibility set to a backoff, message kept; on the
last delivery before the DLQ (``ApproximateReceiveCount >= maxReceiveCount``)
a failed event says the task goes to the DLQ and the status row is marked failed,
the message is not deleted. Unparseable messages are never deleted either.
Nothing is deleted before its result is stored and announced.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

from queue_agent import events
from queue_agent.adapters import RuntimeResult
from queue_agent.consumer import SqsConsumer
from queue_agent.errors import AWS_ERRORS, TransientError, aws_error
from queue_agent.held import Held, Verdict
from queue_agent.logs import log
from queue_agent.messages import Job
from queue_agent.metrics import Metrics
from queue_agent.outcomes import Latencies, Outcome, Reporter
from queue_agent.settings import Settings
from queue_agent.storage import Storage
from sdeks.contract import CompletionEvent, Timings
from sdeks.tasks_table import TaskTable

MAX_VISIBILITY_S = 43200


def backoff_s(receive_count: int, base_s: float, cap_s: float) -> int:
    """Visibility before the next attempt: ``min(base · 2^(n-1), cap)`` whole seconds."""
    if base_s <= 0:
        return 0
    exponent = min(max(receive_count, 1) - 1, 30)
    return int(min(MAX_VISIBILITY_S, cap_s, math.ceil(base_s * 2**exponent)))


class Finisher:
    """Carries out verdicts; the agent lends it its release/forget so the held registry stays the agent's."""

    def __init__(
        self,
        settings: Settings,
        consumer: SqsConsumer,
        storage: Storage,
        publisher: events.Publisher,
        table: TaskTable,
        metrics: Metrics,
        reporter: Reporter,
        release: Callable[[Held, int], None],
        forget: Callable[[Held], None],
    ) -> None:
        self.settings = settings
        self.consumer = consumer
        self.storage = storage
        self.publisher = publisher
        self.table = table
        self.metrics = metrics
        self.reporter = reporter
        self.max_receive_count: int | None = None
        self._release = release
        self._forget = forget
        self._io_pool = ThreadPoolExecutor(max_workers=16, thread_name_prefix="store")

    def finish(self, held: Held) -> None:
        """Carry out a verdict; report exactly one outcome."""
        if held.released:  # given back at shutdown while it ran; another agent owns it now
            return
        handlers: dict[Verdict, Callable[[Held], tuple[Outcome, dict[str, Any]]]] = {
            Verdict.RAN: self._succeed,
            Verdict.REJECTED: self._fail,
            Verdict.RETRY: self._retry,
            Verdict.ALREADY_SUCCEEDED: self._acknowledge(Outcome.SKIPPED),
            Verdict.ANNOUNCED_BEFORE: self._replay,
            Verdict.CANCELLED: self._cancelled,
            Verdict.UNPARSEABLE: self._unparseable,
            Verdict.DUPLICATE: self._defer,
        }
        self._settle(held)
        assert held.verdict is not None
        try:
            outcome, fields = handlers[held.verdict](held)
        except TransientError as exc:  # storing/announcing/acknowledging failed: keep the message
            held.error = exc
            outcome, fields = self._retry(held)
        except Exception:  # a bug must not lose the message: it is retried
            log.exception("finishing a task failed unexpectedly", extra=held.fields())
            held.error = TransientError("finishing the task failed unexpectedly")
            outcome, fields = self._retry(held)
        finally:
            self._forget(held)
            self.metrics.total_duration.observe(time.time() - held.msg.received_at)
        self.reporter.report(outcome, held.fields(**fields), self._latencies(held))

    @staticmethod
    def _latencies(held: Held) -> Latencies:
        """What the task's record can say: queue wait and run time once it started, end to end once parsed."""
        job = held.job
        if job is None:
            return Latencies()
        started = held.started_at
        return Latencies(
            queue_wait_s=max(0.0, (started - job.submitted_at).total_seconds()) if started else None,
            run_s=held.slot.run_s if held.slot is not None and held.slot.finished_at is not None else None,
            total_s=max(0.0, (datetime.now(UTC) - job.submitted_at).total_seconds()),
        )

    def _timings(self, held: Held) -> Timings:
        job = held.job
        assert job is not None and held.started_at is not None
        queued = max(0.0, (held.started_at - job.submitted_at).total_seconds())
        total = max(0.0, (datetime.now(UTC) - job.submitted_at).total_seconds())
        run_s = held.slot.run_s if held.slot else 0.0
        return Timings(queued_s=round(queued, 3), run_s=round(run_s, 3), total_s=round(total, 3))

    def _put_outputs(self, job: Job, result: RuntimeResult) -> tuple[list[str], str]:
        """Every image and the info JSON at once: one round trip of wall time, not one per object."""
        puts = [
            self._io_pool.submit(self.storage.put_image, job.prefix, job.task_id, n, data)
            for n, data in enumerate(result.images, start=1)
        ]
        info = self._io_pool.submit(self.storage.put_info, job.prefix, job.task_id, result.info)
        return [put.result() for put in puts], info.result()

    def _succeed(self, held: Held) -> tuple[Outcome, dict[str, Any]]:
        job, result = held.job, held.result
        assert job is not None and result is not None
        uris, info_uri = self._put_outputs(job, result)
        presign = self.settings.presign_images
        event = events.build_event(
            task_id=job.task_id,
            runtime=job.runtime,
            status="succeeded",
            attempt=held.msg.receive_count,
            context=job.task.metadata.context,
            image_url=uris,
            image_urls=self.storage.presign(uris, self.settings.presign_expires_s) if presign else None,
            output_url=info_uri,
            timings=self._timings(held),
        )
        body = events.encode(event)
        self.storage.put_event(job.task_id, body)
        # The row decides before anything is announced: a cancel that lands while the result is
        # stored wins, and the task is announced cancelled (never succeeded, then cancelled).
        if not self._status(self.table.mark_succeeded, job.task_id, uris):
            return self._cancelled(held)
        self.publisher.publish(body, job.runtime, "succeeded")
        self.consumer.ack(held.msg)
        return Outcome.SUCCEEDED, {"images": len(uris), "run_s": round(held.slot.run_s if held.slot else 0.0, 3)}

    def _cancelled(self, held: Held) -> tuple[Outcome, dict[str, Any]]:
        """Cancelled before or while it ran: announce ``cancelled`` (no images), acknowledge.

        The event is stored like any other, so a redelivered copy re-announces it identically.
        """
        if held.identity is not None:
            timings = self._timings(held) if held.started_at is not None else None
            self._announce(held, "cancelled", timings=timings)
        self.consumer.ack(held.msg)
        return Outcome.CANCELLED, {"ran": held.started_at is not None}

    def _fail(self, held: Held) -> tuple[Outcome, dict[str, Any]]:
        assert held.error is not None and held.identity is not None
        reason = held.error.reason
        if self._status(self.table.mark_failed, held.identity.task_id, reason):
            self._announce(held, "failed", error=reason)
        self.consumer.ack(held.msg)
        return Outcome.FAILED, {"reason": reason}

    def _retry(self, held: Held) -> tuple[Outcome, dict[str, Any]]:
        reason = held.error.reason if held.error else "unknown"
        count = held.msg.receive_count
        mrc = self.max_receive_count
        if mrc is not None and count >= mrc and held.identity is not None:
            self._announce_dlq(held, reason)
            self._release(held, 0)
            return Outcome.DLQ, {"reason": reason}
        delay = backoff_s(count, self.settings.backoff_base_s, self.settings.backoff_max_s)
        self._release(held, delay)
        return Outcome.RETRIED, {"reason": reason, "backoff_s": delay}

    def _announce_dlq(self, held: Held, reason: str) -> None:
        """Last delivery: say so, mark failed, leave the message for SQS to move to the DLQ."""
        assert held.identity is not None
        error = f"moved to the dead-letter queue after {held.msg.receive_count} attempts: {reason}"
        try:
            if self._status(self.table.mark_failed, held.identity.task_id, error):
                self._announce(held, "failed", error=error, store=False)
        except TransientError as exc:
            log.warning("cannot announce the DLQ move", extra=held.fields(error=exc.reason))

    def _announce(
        self, held: Held, status: str, *, error: str | None = None, timings: Timings | None = None, store: bool = True
    ) -> None:
        """Publish the task's event (``failed`` or ``cancelled``), stored first when ``store``.

        A stored event is what a redelivered copy re-announces identically; the DLQ notice is not
        stored, so the copy SQS moves to the DLQ and later redrives still runs.
        """
        ident = held.identity
        assert ident is not None
        runtime = ident.runtime or self.settings.runtime_name
        event = events.build_event(
            task_id=ident.task_id,
            runtime=runtime,
            status=status,
            attempt=held.msg.receive_count,
            context=ident.context,
            error=error,
            timings=timings,
        )
        body = events.encode(event)
        if store:
            self.storage.put_event(ident.task_id, body)
        self.publisher.publish(body, runtime, status)

    def _acknowledge(self, outcome: Outcome) -> Callable[[Held], tuple[Outcome, dict[str, Any]]]:
        def acknowledge(held: Held) -> tuple[Outcome, dict[str, Any]]:
            self.consumer.ack(held.msg)
            return outcome, {}

        return acknowledge

    def _replay(self, held: Held) -> tuple[Outcome, dict[str, Any]]:
        """The task was announced before (the agent died before deleting): announce the same event again."""
        assert held.stored_event is not None
        event = CompletionEvent.model_validate_json(held.stored_event)
        if event.status == "succeeded" and not self._status(self.table.mark_succeeded, event.id, event.image_url):
            return self._cancelled(held)  # cancelled between storing the event and the row's write
        if event.status == "failed":
            self._status(self.table.mark_failed, event.id, event.error or "failed")
        self.publisher.publish(held.stored_event, event.runtime, event.status)
        self.consumer.ack(held.msg)
        return Outcome.REPLAYED, {}

    def _unparseable(self, held: Held) -> tuple[Outcome, dict[str, Any]]:
        self._release(
            held, backoff_s(held.msg.receive_count, self.settings.backoff_base_s, self.settings.backoff_max_s)
        )
        return Outcome.UNPARSEABLE, {"reason": held.unparseable, "max_receive_count": self.max_receive_count}

    def _defer(self, held: Held) -> tuple[Outcome, dict[str, Any]]:
        delay = backoff_s(1, self.settings.backoff_base_s, self.settings.backoff_max_s)
        self._release(held, delay)
        return Outcome.DEFERRED, {"backoff_s": delay}

    @staticmethod
    def _status(update: Callable[..., Any], *args: Any) -> Any:
        """One status-row write, its AWS failure mapped to a transient error."""
        try:
            return update(*args)
        except AWS_ERRORS as exc:
            raise aws_error("status update failed", exc) from None

    def _settle(self, held: Held) -> None:
        """Fold in what the status row and the cancel watch said while the task ran (on the finishing side,
        so a slow status write never holds up the runtime lane)."""
        try:
            if held.marking is not None and held.marking.result() is None:
                held.verdict, held.result = Verdict.ALREADY_SUCCEEDED, None
        except AWS_ERRORS as exc:
            if held.verdict is Verdict.RAN:  # a failure is announced anyway; a success needs its row
                held.verdict, held.error = Verdict.RETRY, aws_error("status update failed", exc)
        if held.cancelled:
            held.verdict, held.result = Verdict.CANCELLED, None
