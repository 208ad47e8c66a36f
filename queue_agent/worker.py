"""The agent loop: receive (with prefetch) → run → store → announce → delete.

Three threads share the work so the runtime never waits on AWS:

- the **receiver** waits for the runtime's health probe, long-polls SQS while
  fewer than ``1 + prefetch`` tasks are waiting or running, parses each message
  (claim check included) and fetches its inputs;
- the **runner** takes prepared tasks one at a time, marks them running and
  calls the runtime — nothing else, so the next task starts the moment the
  previous one returns;
- the **finisher** stores outputs, announces, updates the status row and
  deletes (or releases the message with a backoff).

A heartbeat thread extends the visibility of every held message.

Failure classes (:mod:`queue_agent.errors`): permanent → status failed, failed
event, delete; transient → visibility set to a backoff, message kept; on the
last delivery before the DLQ (``ApproximateReceiveCount >= maxReceiveCount``)
a failed event says the task goes to the DLQ and the status row is marked failed,
the message is not deleted. Unparseable messages are never deleted either.
Nothing is deleted before its result is stored and announced.
"""

from __future__ import annotations

import json
import math
import queue
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import boto3
from botocore.config import Config as BotoConfig

from queue_agent import events, messages
from queue_agent.adapters import Adapter, RuntimeResult, make_adapter
from queue_agent.errors import AWS_ERRORS, PermanentError, RuntimeUnavailable, TaskError, TransientError, aws_error
from queue_agent.fetch import InputFetcher
from queue_agent.heartbeat import Heartbeat
from queue_agent.logs import log
from queue_agent.messages import ClaimChecks, Identity, Job, Received, Rejected, Routing, Unparseable
from queue_agent.metrics import Metrics
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


@dataclass
class Held:
    """A message this agent holds, and what became of it."""

    msg: Received
    state: str = "preparing"  # preparing → ready → running → finishing
    job: Job | None = None
    identity: Identity | None = None
    outcome: str = ""  # success | permanent | transient | skip | replay
    error: TaskError | None = None
    result: RuntimeResult | None = None
    stored_event: bytes | None = None
    started_at: datetime | None = None

    @property
    def task_id(self) -> str | None:
        return self.identity.task_id if self.identity else None

    def fields(self) -> dict[str, Any]:
        return {"task_id": self.task_id, "message_id": self.msg.message_id, "receive_count": self.msg.receive_count}


class Agent:
    def __init__(self, settings: Settings, adapter: Adapter | None = None) -> None:
        self.settings = settings
        session = boto3.session.Session(region_name=settings.aws_region)
        aws = BotoConfig(
            retries={"max_attempts": 2, "mode": "standard"},
            connect_timeout=5,
            read_timeout=settings.wait_time_s + 15,
            max_pool_connections=20,
        )
        self.sqs = session.client("sqs", config=aws)
        self.s3 = session.client("s3", config=aws)
        self.sns = session.client("sns", config=aws)
        self.table = TaskTable(session.resource("dynamodb", config=aws).Table(settings.task_table))
        self.storage = Storage(self.s3, settings.output_bucket)
        self.publisher = events.Publisher(self.sns, settings.results_topic_arn)
        self.fetcher = InputFetcher(
            s3=self.s3,
            allowed_buckets=settings.input_buckets,
            allowed_hosts=tuple(settings.allowed_input_hosts),
            max_bytes=settings.input_max_bytes,
            timeout_s=settings.input_timeout_s,
        )
        self.adapter = adapter or make_adapter(
            settings.runtime_type, settings.runtime_url, settings.task_timeout_s, settings.health_path
        )
        self.metrics = Metrics(settings.runtime_name)
        self.routing = Routing(settings.runtime_name, settings.runtime_type)
        self.claims = ClaimChecks(self.s3, settings.output_bucket, settings.claim_check_max_bytes)

        self.stopping = threading.Event()
        self.runtime_ready = threading.Event()
        self.stopped = threading.Event()
        self.vis_lock = threading.Lock()
        self._lock = threading.Condition()
        self._held: dict[str, Held] = {}
        self._ready: queue.Queue[Held] = queue.Queue()
        self._finish: queue.Queue[Held] = queue.Queue(maxsize=4)
        self.max_receive_count: int | None = None
        self.heartbeat = Heartbeat(
            self.sqs, settings.queue_url, settings.visibility_s, self._handles, self.vis_lock, self.stopped
        )
        self._threads: list[threading.Thread] = []
        self._marker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="status")

    # --- held messages ----------------------------------------------------------

    def _handles(self) -> list[tuple[str, str]]:
        with self._lock:
            return [(h.msg.message_id, h.msg.receipt_handle) for h in self._held.values()]

    def _hold(self, held: Held) -> None:
        with self._lock:
            self._held[held.msg.message_id] = held
            self.metrics.held.set(len(self._held))

    def _drop(self, held: Held) -> None:
        with self._lock:
            self._held.pop(held.msg.message_id, None)
            self.metrics.held.set(len(self._held))
            self._lock.notify_all()

    def _set_state(self, held: Held, state: str) -> None:
        with self._lock:
            held.state = state
            self._lock.notify_all()

    def _slots(self) -> int:
        with self._lock:
            busy = sum(1 for h in self._held.values() if h.state in ("preparing", "ready", "running"))
        return 1 + self.settings.prefetch - busy

    def held_count(self) -> int:
        with self._lock:
            return len(self._held)

    # --- lifecycle --------------------------------------------------------------

    def read_queue_policy(self) -> None:
        """maxReceiveCount from the queue's RedrivePolicy (``None`` without a DLQ)."""
        try:
            attrs = self.sqs.get_queue_attributes(QueueUrl=self.settings.queue_url, AttributeNames=["RedrivePolicy"])
            policy = attrs.get("Attributes", {}).get("RedrivePolicy")
            self.max_receive_count = int(json.loads(policy)["maxReceiveCount"]) if policy else None
        except (*AWS_ERRORS, ValueError, KeyError) as exc:
            log.warning("cannot read the queue's redrive policy", extra={"error": type(exc).__name__})
        log.info("queue policy", extra={"max_receive_count": self.max_receive_count})

    def start(self) -> None:
        self.read_queue_policy()
        self._threads = [
            threading.Thread(target=self._guard(self.receive_loop), name="receiver", daemon=True),
            threading.Thread(target=self._guard(self.run_loop), name="runner", daemon=True),
            threading.Thread(target=self._guard(self.finish_loop), name="finisher", daemon=True),
        ]
        for thread in self._threads:
            thread.start()
        self.heartbeat.start()

    def alive(self) -> bool:
        return all(t.is_alive() for t in self._threads) and self.heartbeat.is_alive()

    def _guard(self, loop: Any) -> Any:
        def run() -> None:
            while not self.stopped.is_set():
                try:
                    loop()
                    return
                except Exception:  # the agent survives anything; a loop restarts after a pause
                    log.exception("loop crashed; restarting", extra={"loop": loop.__name__})
                    time.sleep(1.0)

        return run

    def shutdown(self, grace_s: float | None = None) -> None:
        """Stop receiving; release prefetched messages now; finish or release the running task; stop."""
        grace = self.settings.shutdown_grace_s if grace_s is None else grace_s
        deadline = time.monotonic() + grace
        log.info("shutting down", extra={"grace_s": grace, "held": self.held_count()})
        self.stopping.set()
        self.runtime_ready.set()  # wake waiters
        self._release_ready()
        while time.monotonic() < deadline:
            with self._lock:
                if not any(h.state in ("running", "finishing") for h in self._held.values()):
                    break
                self._lock.wait(min(max(0.0, deadline - time.monotonic()), 0.2))
            self._release_ready()
        receiver = self._threads[0] if self._threads else None
        if receiver is not None:
            receiver.join(max(0.0, min(deadline - time.monotonic(), self.settings.wait_time_s + 1)))
        self._release_ready()
        with self._lock:
            left = list(self._held.values())
        for held in left:
            log.warning("releasing unfinished task", extra={**held.fields(), "state": held.state})
            self._release(held, 0)
        self.stopped.set()
        self.adapter.close()
        log.info("stopped")

    def _release_ready(self) -> None:
        while True:
            try:
                held = self._ready.get_nowait()
            except queue.Empty:
                return
            log.info("releasing prefetched task", extra=held.fields())
            self._release(held, 0)

    def _release(self, held: Held, visibility_s: int) -> None:
        """Give a message back to the queue after ``visibility_s``; never raises."""
        with self.vis_lock:
            self._drop(held)
            try:
                self.sqs.change_message_visibility(
                    QueueUrl=self.settings.queue_url,
                    ReceiptHandle=held.msg.receipt_handle,
                    VisibilityTimeout=visibility_s,
                )
            except AWS_ERRORS as exc:
                log.warning("cannot change visibility", extra={**held.fields(), "error": type(exc).__name__})

    # --- receiver ---------------------------------------------------------------

    def wait_runtime(self) -> bool:
        """Block until the runtime answers its health probe (or we stop)."""
        logged = False
        while not self.stopping.is_set():
            if self.adapter.healthy():
                if not self.runtime_ready.is_set():
                    log.info("runtime ready", extra={"runtime_url": self.settings.runtime_url})
                self.metrics.ready.set(1)
                self.metrics.start_clock()
                self.runtime_ready.set()
                return True
            self.metrics.ready.set(0)
            if not logged:
                log.info("waiting for the runtime", extra={"runtime_url": self.settings.runtime_url})
                logged = True
            self.stopping.wait(0.5)
        return False

    def receive_loop(self) -> None:
        error_pause = 1.0
        while not self.stopping.is_set():
            if not self.runtime_ready.is_set() and not self.wait_runtime():
                break
            slots = self._slots()
            if slots <= 0:
                with self._lock:
                    self._lock.wait(0.5)
                continue
            try:
                resp = self.sqs.receive_message(
                    QueueUrl=self.settings.queue_url,
                    MaxNumberOfMessages=min(10, slots),
                    WaitTimeSeconds=self.settings.wait_time_s,
                    VisibilityTimeout=self.settings.visibility_s,
                    MessageSystemAttributeNames=["ApproximateReceiveCount"],
                )
                error_pause = 1.0
            except AWS_ERRORS as exc:
                log.warning("receive failed", extra={"error": aws_error("receive", exc).reason})
                self.stopping.wait(error_pause)
                error_pause = min(error_pause * 2, 30.0)
                continue
            now = time.time()
            for raw in resp.get("Messages", []):
                held = Held(Received.from_sqs(raw, now))
                self._hold(held)
                self.metrics.receive_count.observe(held.msg.receive_count)
                if self.stopping.is_set():
                    self._release(held, 0)
                    continue
                self.prepare(held)

    def prepare(self, held: Held) -> None:
        """Parse, resolve, check for an earlier completion, fetch inputs; then queue it for the runner."""
        try:
            held.job = messages.parse(held.msg.body, self.routing, self.claims)
        except Unparseable as exc:
            self._unparseable(held, exc.reason)
            return
        except Rejected as exc:
            held.identity, held.error = exc.identity, exc.error
            held.outcome = "permanent" if isinstance(exc.error, PermanentError) else "transient"
            self._to_finisher(held)
            return
        held.identity = held.job.identity
        try:
            stored = self.storage.get_event(held.job.task_id)
            if stored is not None:
                held.outcome, held.stored_event = "replay", stored
                self._to_finisher(held)
                return
            self.adapter.prepare(held.job, self.fetcher)
        except TaskError as exc:
            held.outcome, held.error = ("permanent" if isinstance(exc, PermanentError) else "transient"), exc
            self._to_finisher(held)
            return
        log.info("task received", extra={**held.fields(), "tasktype": held.job.tasktype})
        self._set_state(held, "ready")
        self._ready.put(held)

    def _unparseable(self, held: Held, reason: str) -> None:
        log.warning(
            "unparseable message left for the DLQ",
            extra={**held.fields(), "reason": reason, "max_receive_count": self.max_receive_count},
        )
        self.metrics.task("unparseable")
        self._release(
            held, backoff_s(held.msg.receive_count, self.settings.backoff_base_s, self.settings.backoff_max_s)
        )

    def _to_finisher(self, held: Held) -> None:
        self._set_state(held, "finishing")
        self._finish.put(held)

    # --- runner -----------------------------------------------------------------

    def run_loop(self) -> None:
        while not self.stopping.is_set():
            if not self.runtime_ready.wait(0.5):
                continue
            try:
                held = self._ready.get(timeout=0.2)
            except queue.Empty:
                continue
            if self.stopping.is_set():
                self._release(held, 0)
                continue
            self.run_one(held)

    def run_one(self, held: Held) -> None:
        job = held.job
        assert job is not None
        self._set_state(held, "running")
        now = datetime.now(UTC)
        held.started_at = now
        # The status row is written while the runtime already works: its round trip stays off the
        # runtime's critical path. If the row says the task already succeeded, the result is discarded
        # (nothing has been stored yet) and the message acknowledged.
        marking = self._marker.submit(self.table.mark_running, job.task_id, job.runtime, held.msg.receive_count, now)
        try:
            self.metrics.queue_wait.observe(max(0.0, (now - job.submitted_at).total_seconds()))
            log.info("task running", extra=held.fields())
            started = time.monotonic()
            try:
                held.result = self.adapter.run(job)
            finally:
                self.metrics.add_busy(time.monotonic() - started)
            held.outcome = "success"
        except TaskError as exc:
            held.outcome, held.error = ("permanent" if isinstance(exc, PermanentError) else "transient"), exc
            if isinstance(exc, RuntimeUnavailable):
                self.runtime_ready.clear()
                self.metrics.ready.set(0)
        try:
            if marking.result() is None:
                held.outcome, held.result = "skip", None
        except AWS_ERRORS as exc:
            if held.outcome == "success":  # a failure is announced anyway; a success needs its row
                held.outcome, held.error = "transient", aws_error("status update failed", exc)
        self._to_finisher(held)

    # --- finisher ---------------------------------------------------------------

    def finish_loop(self) -> None:
        while not self.stopped.is_set():
            try:
                held = self._finish.get(timeout=0.2)
            except queue.Empty:
                continue
            self.finish(held)

    def finish(self, held: Held) -> None:
        try:
            handler = {
                "success": self._succeed,
                "permanent": self._fail,
                "transient": self._retry,
                "skip": self._skip,
                "replay": self._replay,
            }[held.outcome]
            handler(held)
        except TransientError as exc:
            # storing/announcing failed: keep the message, try again later
            held.error = exc
            self._retry(held)
        finally:
            self._drop(held)
            total = time.time() - held.msg.received_at
            self.metrics.total_duration.observe(total)

    def _timings(self, held: Held, run_s: float) -> Timings:
        job = held.job
        assert job is not None and held.started_at is not None
        queued = max(0.0, (held.started_at - job.submitted_at).total_seconds())
        total = max(0.0, (datetime.now(UTC) - job.submitted_at).total_seconds())
        return Timings(queued_s=round(queued, 3), run_s=round(run_s, 3), total_s=round(total, 3))

    def _succeed(self, held: Held) -> None:
        job, result = held.job, held.result
        assert job is not None and result is not None
        uris, info_uri = self.storage.put_outputs(job.prefix, job.task_id, result.images, result.info)
        event = events.build_event(
            task_id=job.task_id,
            runtime=job.runtime,
            status="succeeded",
            attempt=held.msg.receive_count,
            context=job.task.metadata.context,
            image_url=uris,
            output_url=info_uri,
            timings=self._timings(held, result.run_s),
        )
        body = events.encode(event)
        self.storage.put_event(job.task_id, body)
        self.publisher.publish(body, job.runtime, "succeeded")
        self._mark_succeeded(job.task_id, uris)
        self._delete(held)
        self.metrics.task("succeeded")
        log.info("task succeeded", extra={**held.fields(), "images": len(uris), "run_s": round(result.run_s, 3)})

    def _fail(self, held: Held) -> None:
        assert held.error is not None and held.identity is not None
        reason = held.error.reason
        task_id = held.identity.task_id
        runtime = held.identity.runtime or self.settings.runtime_name
        context = held.identity.context
        try:
            still_open = self.table.mark_failed(task_id, reason)
        except AWS_ERRORS as exc:
            raise aws_error("status update failed", exc) from None
        if still_open:
            event = events.build_event(
                task_id=task_id,
                runtime=runtime,
                status="failed",
                attempt=held.msg.receive_count,
                context=context,
                error=reason,
            )
            body = events.encode(event)
            self.storage.put_event(task_id, body)
            self.publisher.publish(body, runtime, "failed")
        self._delete(held)
        self.metrics.task("failed")
        log.warning("task failed", extra={**held.fields(), "reason": reason})

    def _retry(self, held: Held) -> None:
        reason = held.error.reason if held.error else "unknown"
        count = held.msg.receive_count
        mrc = self.max_receive_count
        if mrc is not None and count >= mrc and held.identity is not None:
            self._announce_dlq(held, reason)
            self._release(held, 0)
            return
        delay = backoff_s(count, self.settings.backoff_base_s, self.settings.backoff_max_s)
        self.metrics.task("retried")
        log.warning("task will be retried", extra={**held.fields(), "reason": reason, "backoff_s": delay})
        self._release(held, delay)

    def _announce_dlq(self, held: Held, reason: str) -> None:
        """Last delivery: say so, mark failed, leave the message for SQS to move to the DLQ."""
        ident = held.identity
        assert ident is not None
        runtime = ident.runtime or self.settings.runtime_name
        error = f"moved to the dead-letter queue after {held.msg.receive_count} attempts: {reason}"
        self.metrics.task("dlq")
        log.error("task goes to the DLQ", extra={**held.fields(), "reason": reason})
        try:
            if self.table.mark_failed(ident.task_id, error):
                event = events.build_event(
                    task_id=ident.task_id,
                    runtime=runtime,
                    status="failed",
                    attempt=held.msg.receive_count,
                    context=ident.context,
                    error=error,
                )
                self.publisher.publish(events.encode(event), runtime, "failed")
        except (*AWS_ERRORS, TransientError) as exc:
            log.warning("cannot announce the DLQ move", extra={**held.fields(), "error": type(exc).__name__})

    def _skip(self, held: Held) -> None:
        log.info("task already succeeded; acknowledging", extra=held.fields())
        self._delete(held)
        self.metrics.task("skipped")

    def _replay(self, held: Held) -> None:
        """The task was announced before (the agent died before deleting): announce the same event again."""
        assert held.stored_event is not None
        event = CompletionEvent.model_validate_json(held.stored_event)
        self.publisher.publish(held.stored_event, event.runtime, event.status)
        try:
            if event.status == "succeeded":
                self.table.mark_succeeded(event.id, event.image_url)
            else:
                self.table.mark_failed(event.id, event.error or "failed")
        except AWS_ERRORS as exc:
            raise aws_error("status update failed", exc) from None
        self._delete(held)
        self.metrics.task("skipped")
        log.info("task completed earlier; event re-announced", extra=held.fields())

    def _mark_succeeded(self, task_id: str, uris: list[str]) -> None:
        try:
            self.table.mark_succeeded(task_id, uris)
        except AWS_ERRORS as exc:
            raise aws_error("status update failed", exc) from None

    def _delete(self, held: Held) -> None:
        try:
            self.sqs.delete_message(QueueUrl=self.settings.queue_url, ReceiptHandle=held.msg.receipt_handle)
        except AWS_ERRORS as exc:
            raise aws_error("delete failed", exc) from None
