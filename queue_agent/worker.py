"""The agent's state machine: receive → prepare → run → finish, each stage overlapping the others.

The runtime (the GPU) must never wait on AWS, so no AWS round trip sits between
two runtime calls:

- the **receiver** waits for the runtime's health probe, then long-polls SQS
  (through the :class:`~queue_agent.consumer.SqsConsumer`) whenever fewer tasks are
  prepared beyond the two in flight at the runtime than the prefetch target — a
  count (``SDEKS_PREFETCH``) raised to cover :data:`PREFETCH_HORIZON_S` of runtime
  work at the recent task duration, so short tasks get a deeper buffer;
- the **prepare pool** parses each message once (claim check included), checks
  for an earlier completion and a cancellation, and fetches inputs, several at once;
- the **dispatcher** sends prepared tasks in receive order to the
  :class:`~queue_agent.lane.RuntimeLane`, which keeps two in flight: the next
  task already waits at the runtime while the current one executes;
- the **finish pool** hands each task to the :class:`~queue_agent.finish.Finisher`,
  several at once.

Every held message stays invisible through the consumer's heartbeat. Each path
ends in one :class:`~queue_agent.outcomes.Outcome`, counted and logged in one place;
:mod:`queue_agent.finish` documents the failure classes and the order of the
finishing steps (nothing is deleted before its result is stored and announced).
"""

from __future__ import annotations

import functools
import math
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
from botocore.config import Config as BotoConfig

from queue_agent import events, messages
from queue_agent.adapters import Adapter, RuntimeResult, make_adapter
from queue_agent.cancel import CancelCheck, StatusRowCancels
from queue_agent.consumer import SqsConsumer
from queue_agent.emf import EmfEmitter
from queue_agent.errors import AWS_ERRORS, PermanentError, RuntimeUnavailable, TaskError, TransientError, aws_code
from queue_agent.fetch import InputFetcher
from queue_agent.finish import Finisher
from queue_agent.held import Held, Stage, Verdict
from queue_agent.lane import DEPTH, RuntimeLane, Slot
from queue_agent.logs import log
from queue_agent.messages import ClaimChecks, Job, Rejected, Routing, Unparseable
from queue_agent.metrics import Metrics
from queue_agent.outcomes import Outcome, Reporter
from queue_agent.settings import Settings
from queue_agent.storage import Storage
from sdeks.contract import STARTED_STATUS, TaskStartedEvent, TaskStatus
from sdeks.tasks_table import TaskTable

PREFETCH_HORIZON_S = 2.0
"""Prepare at least this much runtime work ahead (at the recent task duration), so short tasks never starve."""
MAX_AHEAD = 10
"""At most this many tasks prepared ahead of the executing one (one SQS receive's worth)."""
MAX_FINISHING = 32
"""Stop receiving while this many tasks are still being stored and announced (AWS is slower than the GPU)."""
RUN_AVERAGE_WEIGHT = 0.2
WATCH_S = 0.5
"""How often the agent asks whether a running task was cancelled: a cancel interrupts it within about this."""
PROGRESS_EVERY_S = 1.0
"""At most this often the agent reads the runtime's progress and writes it to the running task's status row."""
INTERRUPT_WAIT_S = 3.0
"""Past the grace, how long the agent waits for the interrupted tasks to come back before it exits.

The chart's terminationGracePeriodSeconds leaves at least 5 s beyond the grace (agent.terminationMarginSeconds)."""


@dataclass
class AwsClients:
    """The AWS clients the agent uses; injected in tests (moto in-process, Stubber)."""

    sqs: Any
    s3: Any
    sns: Any
    table: TaskTable

    @classmethod
    def from_settings(cls, settings: Settings) -> AwsClients:
        session = boto3.session.Session(region_name=settings.aws_region)
        config = BotoConfig(
            retries={"max_attempts": 2, "mode": "standard"},
            connect_timeout=5,
            read_timeout=settings.wait_time_s + 15,
            max_pool_connections=64,
        )
        return cls(
            sqs=session.client("sqs", config=config),
            # SigV4: what presigned image URLs need (every region accepts it)
            s3=session.client("s3", config=config.merge(BotoConfig(signature_version="s3v4"))),
            sns=session.client("sns", config=config),
            table=TaskTable(
                session.resource("dynamodb", config=config).Table(settings.task_table),
                row_ttl=timedelta(days=settings.status_ttl_days),
            ),
        )


class Agent:
    def __init__(
        self,
        settings: Settings,
        adapter: Adapter | None = None,
        clients: AwsClients | None = None,
        cancels: CancelCheck | None = None,
    ) -> None:
        self.settings = settings
        aws = clients or AwsClients.from_settings(settings)
        self.table = aws.table
        self.consumer = SqsConsumer(aws.sqs, settings.queue_url, visibility_s=settings.visibility_s, clock=time.time)
        self.storage = Storage(aws.s3, settings.output_bucket)
        self.fetcher = InputFetcher(
            s3=aws.s3,
            allowed_buckets=settings.input_buckets,
            allowed_hosts=tuple(settings.allowed_input_hosts),
            max_bytes=settings.input_max_bytes,
            timeout_s=settings.input_timeout_s,
        )
        self.adapter = adapter or make_adapter(
            settings.runtime_type, settings.runtime_url, settings.task_timeout_s, settings.health_path
        )
        self.lane = RuntimeLane(self.adapter, settings.task_timeout_s, depth=DEPTH if settings.prefetch else 1)
        self.cancels: CancelCheck = cancels or StatusRowCancels(self.table)
        self.metrics = Metrics(settings.runtime_name)
        self.reporter = Reporter(
            self.metrics,
            settings.runtime_name,
            EmfEmitter(settings.emf_endpoint) if settings.emf_endpoint else None,
            settings.project or "",
        )
        self.routing = Routing(settings.runtime_name, settings.runtime_type)
        self.claims = ClaimChecks(aws.s3, settings.output_bucket, settings.claim_check_max_bytes)

        self.stopping = threading.Event()
        self.runtime_ready = threading.Event()
        self.runtime_unusable: str | None = None
        """Why the runtime, though it answers, cannot run any task (its model is missing); tasks fail with it."""
        self.stopped = threading.Event()
        self._cond = threading.Condition()
        self._held: dict[str, Held] = {}
        self._order: deque[Held] = deque()  # preparing/ready, in receive order
        self._run_avg_s: float | None = None
        self._threads: list[threading.Thread] = []
        self._prepare_pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="prepare")
        self._status_pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="status")
        self._finish_pool = ThreadPoolExecutor(max_workers=8, thread_name_prefix="finish")
        self.publisher = events.Publisher(aws.sns, settings.results_topic_arn)
        self.finisher = Finisher(
            settings,
            self.consumer,
            self.storage,
            self.publisher,
            self.table,
            self.metrics,
            self.reporter,
            release=self._release,
            forget=self._forget,
        )

    # --- held messages ----------------------------------------------------------

    def _hold(self, held: Held) -> None:
        with self._cond:
            self._held[held.msg.message_id] = held
            self.metrics.held.set(len(self._held))

    def _forget(self, held: Held) -> None:
        with self._cond:
            self._held.pop(held.msg.message_id, None)
            self.metrics.held.set(len(self._held))
            self._cond.notify_all()

    def _count(self, *stages: Stage) -> int:
        return sum(1 for h in self._held.values() if h.stage in stages)

    def held_count(self) -> int:
        with self._cond:
            return len(self._held)

    def ahead_target(self) -> int:
        """Tasks to hold prepared beyond those in flight at the runtime: the count, raised to cover the time horizon.

        Until a task has run, only the count applies: an agent that just started does not yet know
        whether its tasks take 0.1 s or 5 minutes, and must not lock up ten long ones.
        """
        count = self.settings.prefetch
        if count == 0 or self._run_avg_s is None:
            return count
        by_time = math.ceil(PREFETCH_HORIZON_S / max(self._run_avg_s, 0.01))
        return min(MAX_AHEAD, max(count, by_time))

    def _receive_room(self) -> int:
        with self._cond:
            if self._count(Stage.FINISHING) >= MAX_FINISHING:
                return 0
            unfinished = self._count(Stage.PREPARING, Stage.READY, Stage.RUNNING)
            return self.lane.depth + self.ahead_target() - unfinished

    # --- lifecycle --------------------------------------------------------------

    def start(self) -> None:
        self.finisher.max_receive_count = self.consumer.max_receive_count()
        log.info("queue policy", extra={"max_receive_count": self.finisher.max_receive_count})
        self.consumer.start()
        self._threads = [
            threading.Thread(target=self._guard(self.receive_loop), name="receiver", daemon=True),
            threading.Thread(target=self._guard(self.dispatch_loop), name="dispatcher", daemon=True),
            threading.Thread(target=self._guard(self.watch_loop), name="watch", daemon=True),
        ]
        for thread in self._threads:
            thread.start()

    def alive(self) -> bool:
        return all(t.is_alive() for t in self._threads) and self.consumer.alive() and self.lane.alive()

    def _guard(self, loop: Callable[[], None]) -> Callable[[], None]:
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
        """Stop receiving; release prefetched messages now; finish or release what runs; stop.

        Spot-safe: the tasks in flight at the runtime get ``grace_s`` (``SDEKS_SHUTDOWN_GRACE_S``)
        to finish, store and announce. Past it, whatever is left is released with visibility 0 —
        first, so the finishing side drops a result that comes back afterwards and another pod can
        take the message at once with one receive spent — then the runtime is told to interrupt
        those tasks, so the GPU is free and the runtime can exit before the pod's grace runs out.
        """
        grace = self.settings.shutdown_grace_s if grace_s is None else grace_s
        deadline = time.monotonic() + grace
        log.info("shutting down", extra={"grace_s": grace, "held": self.held_count()})
        self.stopping.set()
        self._release_not_started()
        with self._cond:
            self._cond.wait_for(
                lambda: not self._count(Stage.RUNNING, Stage.FINISHING), max(0.0, deadline - time.monotonic())
            )
        receiver = self._threads[0] if self._threads else None
        if receiver is not None:
            receiver.join(max(0.0, min(deadline - time.monotonic(), self.settings.wait_time_s + 1)))
        self._release_not_started()
        with self._cond:
            left = [h for h in self._held.values() if not h.released]
        for held in left:
            self._release(held, 0)
            self.reporter.report(Outcome.RELEASED_UNFINISHED, held.fields(stage=held.stage.name.lower()))
        if left:
            self.lane.abandon()
            if not self.lane.wait_idle(INTERRUPT_WAIT_S):
                log.warning("the runtime did not stop the interrupted tasks in time; exiting anyway")
        self.stopped.set()
        self.consumer.close()
        self.lane.close()
        self.adapter.close()
        self.reporter.close()
        log.info("stopped")

    def _release_not_started(self) -> None:
        with self._cond:
            waiting = [h for h in self._order if not h.released]
            self._order.clear()
        for held in waiting:
            self._release(held, 0)
            self.reporter.report(Outcome.RELEASED_PREFETCHED, held.fields())

    def _release(self, held: Held, visibility_s: int) -> None:
        held.released = True
        self.consumer.release(held.msg, visibility_s)
        self._forget(held)

    # --- receiver ---------------------------------------------------------------

    def wait_runtime(self) -> bool:
        """Block until the runtime is ready, or answers that it never will (or we stop).

        A runtime without its model must not keep a GPU node up for nothing: the agent takes
        tasks and fails them with the runtime's reason, so the queue drains and the pods and the
        node scale away; it probes again before every receive and serves once the model is there.
        """
        logged = False
        while not self.stopping.is_set():
            health = self.adapter.health()
            if health.ready:
                if not self.runtime_ready.is_set():
                    log.info("runtime ready", extra={"runtime_url": self.settings.runtime_url})
                self.runtime_unusable = None
                self.metrics.ready.set(1)
                self.metrics.start_clock()
                self.runtime_ready.set()
                return True
            self.metrics.ready.set(0)
            if health.unusable is not None:
                if health.unusable != self.runtime_unusable:
                    log.error(
                        "runtime cannot run tasks; failing them until it can",
                        extra={"runtime_url": self.settings.runtime_url, "reason": health.unusable},
                    )
                self.runtime_unusable = health.unusable
                return True
            self.runtime_unusable = None
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
            room = self._receive_room()
            if room <= 0:
                with self._cond:
                    self._cond.wait(0.5)
                continue
            try:
                received = self.consumer.receive(room, self.settings.wait_time_s)
                error_pause = 1.0
            except TransientError as exc:
                log.warning("receive failed", extra={"error": exc.reason})
                self.stopping.wait(error_pause)
                error_pause = min(error_pause * 2, 30.0)
                continue
            for msg in received:
                held = Held(msg)
                self._hold(held)
                self.metrics.receive_count.observe(msg.receive_count)
                if self.stopping.is_set():
                    self._release(held, 0)
                    self.reporter.report(Outcome.RELEASED_PREFETCHED, held.fields())
                    continue
                with self._cond:
                    self._order.append(held)
                self._prepare_pool.submit(self.prepare, held)

    def prepare(self, held: Held) -> None:
        """Parse, check for an earlier completion or a cancellation, fetch inputs; the verdict if it cannot run."""
        try:
            held.verdict = self._prepare(held)
        except TaskError as exc:
            held.error = exc
            held.verdict = Verdict.REJECTED if isinstance(exc, PermanentError) else Verdict.RETRY
        except Exception:  # a bug must not lose the message: it is retried
            log.exception("preparing a task failed unexpectedly", extra=held.fields())
            held.error = TransientError("preparing the task failed unexpectedly")
            held.verdict = Verdict.RETRY
        with self._cond:
            if held.stage is Stage.PREPARING:
                held.stage = Stage.READY
            self._cond.notify_all()

    def _prepare(self, held: Held) -> Verdict | None:
        try:
            job = messages.parse(held.msg.body, self.routing, self.claims)
        except Unparseable as exc:
            held.unparseable = exc.reason
            return Verdict.UNPARSEABLE
        except Rejected as exc:
            held.identity, held.error = exc.identity, exc.error
            return Verdict.REJECTED if isinstance(exc.error, PermanentError) else Verdict.RETRY
        if not self._claim(held, job):
            return Verdict.DUPLICATE
        held.job = job
        held.stored_event = self.storage.get_event(job.task_id)
        if held.stored_event is not None:
            return Verdict.ANNOUNCED_BEFORE
        if self.cancels.cancelled([job.task_id]):
            return Verdict.CANCELLED
        self.adapter.prepare(job, self.fetcher)
        log.info("task received", extra=held.fields(tasktype=job.tasktype))
        return None

    def _claim(self, held: Held, job: Job) -> bool:
        """Make ``held`` the one copy of its task this agent works on; ``False`` if another copy is held.

        SNS delivers at least once, so two copies of a task may arrive in one batch. Only one
        runs; the other comes back once the first has stored its event, and re-announces it.
        """
        with self._cond:
            taken = any(other.task_id == job.task_id for other in self._held.values() if not other.released)
            held.identity = job.identity
            return not taken

    # --- dispatcher -------------------------------------------------------------

    def _next_prepared(self) -> Held | None:
        """The oldest held task once it is prepared (receive order is run order), else ``None`` after a wait."""
        with self._cond:
            if not (self._order and self._order[0].stage is Stage.READY):
                self._cond.wait(0.2)
                return None
            return self._order[0]

    def _pop(self, held: Held) -> bool:
        with self._cond:
            if not self._order or self._order[0] is not held or held.released:
                return False
            self._order.popleft()
            self._cond.notify_all()
            return True

    def dispatch_loop(self) -> None:
        while not self.stopping.is_set():
            held = self._next_prepared()
            if held is None:
                continue
            if held.verdict is not None or held.cancelled:
                if self._pop(held):
                    held.verdict = held.verdict or Verdict.CANCELLED
                    self._to_finish(held)
                continue
            assert held.job is not None
            if not self.runtime_ready.is_set():
                reason = self.runtime_unusable
                if reason is None:
                    self.stopping.wait(0.2)
                    continue
                if not self.adapter.exclusive(held.job):  # a checkpoint switch may name a model it has: it runs
                    if self._pop(held):
                        held.error = PermanentError(f"the runtime cannot run tasks: {reason}")
                        held.verdict = Verdict.REJECTED
                        self._to_finish(held)
                    continue
            if not self.lane.wait_room(self.adapter.exclusive(held.job), self.stopping) or held.cancelled:
                continue  # a task cancelled while it waited for room is finished on the next turn
            if self._pop(held):
                self._start(held)

    def _start(self, held: Held) -> None:
        job = held.job
        assert job is not None
        now = datetime.now(UTC)
        with self._cond:
            held.stage = Stage.RUNNING
            self._cond.notify_all()
        held.started_at = now
        # The status row is written while the runtime already works: its round trip stays off the
        # runtime's path. If the row says the task already succeeded, the result is discarded
        # (nothing has been stored yet) and the message acknowledged.
        held.marking = self._status_pool.submit(self._mark_running, held, now)
        self.metrics.queue_wait.observe(max(0.0, (now - job.submitted_at).total_seconds()))
        log.info("task running", extra=held.fields())
        held.slot = self.lane.submit(job, functools.partial(self._ran, held))

    def _mark_running(self, held: Held, now: datetime) -> TaskStatus | None:
        """Write ``running`` to the status row, then announce the start; or, if the row refused because
        the task was cancelled, stop the run. ``None`` when the row refused (the finishing side skips it)."""
        job = held.job
        assert job is not None
        status = self.table.mark_running(job.task_id, job.runtime, held.msg.receive_count, now)
        if status is None:
            if self.cancels.cancelled([job.task_id]):
                self._interrupt(held)
            return None
        started = TaskStartedEvent(
            id=job.task_id,
            runtime=job.runtime,
            status=STARTED_STATUS,
            attempt=max(1, held.msg.receive_count),
            started_at=now,
            context=job.task.metadata.context,
        )
        try:  # best effort: a subscriber may miss a start, the task never waits or fails for it
            self.publisher.publish(started.model_dump_json().encode(), job.runtime, STARTED_STATUS)
        except TransientError as exc:
            log.warning("cannot announce the task's start", extra=held.fields(error=exc.reason))
        return status

    def _ran(self, held: Held, slot: Slot, result: RuntimeResult | None, error: TaskError | None) -> None:
        """The runtime answered (or failed): decide the verdict and hand the task to the finishing side."""
        held.slot = slot
        self.metrics.add_busy(slot.run_s)
        if error is None:
            self._run_avg_s = (
                slot.run_s
                if self._run_avg_s is None
                else (1 - RUN_AVERAGE_WEIGHT) * self._run_avg_s + RUN_AVERAGE_WEIGHT * slot.run_s
            )
            held.result, held.verdict = result, Verdict.RAN
        else:
            held.error = error
            held.verdict = Verdict.REJECTED if isinstance(error, PermanentError) else Verdict.RETRY
            if isinstance(error, RuntimeUnavailable):
                self.runtime_ready.clear()
                self.metrics.ready.set(0)
        self._to_finish(held)

    # --- cancellation -----------------------------------------------------------

    def watch_loop(self) -> None:
        """Every :data:`WATCH_S`, ask whether a running task or one of the next to be sent was cancelled;
        the other held tasks are asked about every heartbeat (and once more as they start, through the
        status row's refusal to mark them running)."""
        waiting_checked = progress_written = time.monotonic()
        while not self.stopping.wait(WATCH_S):
            now = time.monotonic()
            if now - progress_written >= PROGRESS_EVERY_S:
                progress_written = now
                self._record_progress()
            with self._cond:
                running = [h for h in self._held.values() if h.task_id and h.stage is Stage.RUNNING]
                upcoming = [h for h in self._order if h.task_id and not h.cancelled]
            for held in running:  # an interrupt that reached the runtime before the task began is repeated
                if held.cancelled and held.slot is not None:
                    self.lane.cancel(held.slot)
            next_up = upcoming[: self.lane.depth]
            if now - waiting_checked >= self.consumer.heartbeat_s:
                next_up, waiting_checked = upcoming, now
            watched = {h.task_id: h for h in [*running, *next_up] if h.task_id and not h.cancelled}
            cancelled = [watched[task_id] for task_id in self.cancels.cancelled(list(watched))] if watched else []
            for held in cancelled:  # flag every one first: the dispatcher must not send a flagged task
                held.cancelled = True
            for held in cancelled:
                self._interrupt(held)
            if cancelled:
                with self._cond:
                    self._cond.notify_all()

    def _record_progress(self) -> None:
        """Copy the executing task's progress from the runtime to its status row (skipped when unchanged)."""
        with self._cond:
            executing = [
                h
                for h in self._held.values()
                if h.stage is Stage.RUNNING and h.slot is not None and h.slot.started_at is not None and not h.cancelled
            ]
        if len(executing) != 1:  # none, or the hand-over instant: the runtime's report may be either's
            return
        held = executing[0]
        assert held.slot is not None and held.task_id is not None
        progress = self.adapter.progress(held.slot)
        if progress is None or progress == held.progress:
            return
        try:
            self.table.set_progress(held.task_id, progress)
            held.progress = progress
        except AWS_ERRORS as exc:  # the next look writes it
            log.warning("cannot record progress", extra=held.fields(error=aws_code(exc)))

    def _interrupt(self, held: Held) -> None:
        """The task was cancelled: it will not run, or its run is interrupted and the result discarded."""
        held.cancelled = True
        if held.slot is not None:
            self.lane.cancel(held.slot)
        log.info("task cancelled by the client", extra=held.fields(running=held.slot is not None))

    # --- finishing --------------------------------------------------------------

    def _to_finish(self, held: Held) -> None:
        with self._cond:
            held.stage = Stage.FINISHING
            self._cond.notify_all()
        self._finish_pool.submit(self.finisher.finish, held)
