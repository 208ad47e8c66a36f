"""Keep the next task waiting at the runtime: up to two tasks in flight, the runtime runs one at a time.

A GPU runtime executes one task at a time (A1111's queue lock, sd_runtime's single
worker, ComfyUI's prompt queue). If the agent sent the next request only after the
previous answer came back, the GPU would idle for the whole hand-off: response
transfer and decoding, bookkeeping, the next request's transfer. So while one
task executes, the next prepared one is already sent and waits in the runtime's
own queue, and starts the instant the previous ends.

Each task in flight has a :class:`Slot`. Its timeout counts from when it is taken
to have *started* on the runtime — when it was sent if nothing was ahead of it,
else when the task ahead of it came back — not from when it was sent, so
waiting behind another task never eats into a task's own time. A watchdog marks
a slot ``expired`` past ``SDEKS_TASK_TIMEOUT_S`` and asks the adapter to
interrupt it; the adapter then raises :class:`RuntimeTimeout`.

A task that must have the runtime to itself (a checkpoint switch) is sent only
when nothing else is in flight, and nothing is sent behind it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING

from queue_agent.errors import TaskError, TransientError
from queue_agent.logs import log
from queue_agent.messages import Job

if TYPE_CHECKING:
    from queue_agent.adapters import Adapter, RuntimeResult

DEPTH = 2
"""Tasks in flight at the runtime: the executing one and the next, waiting in the runtime's queue."""
WATCH_INTERVAL_S = 0.1


@dataclass(eq=False)
class Slot:
    """One task in flight at the runtime."""

    job: Job
    timeout_s: float
    sent_at: float
    started_at: float | None = None
    """When the runtime is taken to have started it; ``None`` while a task ahead of it runs."""
    finished_at: float | None = None
    wait_allowance_s: float = 0.0
    """How long the request may additionally wait behind the task ahead (a hard limit's margin)."""
    exclusive: bool = False
    expired: bool = False
    """Ran past its timeout; the adapter raises :class:`RuntimeTimeout`."""
    cancelled: bool = False
    """Interrupted on purpose (the task was cancelled); its result is discarded."""
    ref: str | None = None
    """The runtime's own id for the task (ComfyUI's prompt_id), for a targeted interrupt."""

    @classmethod
    def alone(cls, job: Job, timeout_s: float) -> Slot:
        """A slot for a task with nothing ahead of it: it starts now."""
        now = time.monotonic()
        return cls(job=job, timeout_s=timeout_s, sent_at=now, started_at=now)

    @property
    def request_timeout_s(self) -> float:
        """The hard limit of one blocking call: the task's own time plus what it may wait behind another."""
        return self.timeout_s + self.wait_allowance_s

    def overdue(self, now: float | None = None) -> bool:
        if self.expired:
            return True
        now = time.monotonic() if now is None else now
        return self.started_at is not None and now - self.started_at > self.timeout_s

    @property
    def run_s(self) -> float:
        """Time the runtime spent on this task (0 until it came back)."""
        if self.finished_at is None or self.started_at is None:
            return 0.0
        return max(0.0, self.finished_at - self.started_at)


Done = Callable[[Slot, "RuntimeResult | None", "TaskError | None"], None]


class RuntimeLane:
    def __init__(self, adapter: Adapter, timeout_s: float, depth: int = DEPTH) -> None:
        self.adapter = adapter
        self.timeout_s = timeout_s
        self.depth = depth
        self._slots: list[Slot] = []
        self._cond = threading.Condition()
        self._pool = ThreadPoolExecutor(max_workers=depth, thread_name_prefix="runtime")
        self._closed = threading.Event()
        self._watchdog = threading.Thread(target=self._watch, name="runtime-watchdog", daemon=True)
        self._watchdog.start()

    def alive(self) -> bool:
        return self._watchdog.is_alive()

    def wait_room(self, exclusive: bool, stop: threading.Event, timeout_s: float = 0.2) -> bool:
        """Wait up to ``timeout_s`` until a task (``exclusive``: one that needs the runtime alone) may be sent."""
        with self._cond:
            return self._cond.wait_for(lambda: stop.is_set() or self._has_room(exclusive), timeout_s) and (
                not stop.is_set()
            )

    def _has_room(self, exclusive: bool) -> bool:
        if not self._slots:
            return True
        if exclusive or self._slots[-1].exclusive:
            return False
        return len(self._slots) < self.depth

    def submit(self, job: Job, on_done: Done) -> Slot:
        """Send ``job`` to the runtime now (call after :meth:`wait_room`); ``on_done`` gets its result."""
        now = time.monotonic()
        slot = Slot(
            job=job,
            timeout_s=self.timeout_s,
            sent_at=now,
            wait_allowance_s=(self.depth - 1) * (self.timeout_s + 5.0),
            exclusive=self.adapter.exclusive(job),
        )
        with self._cond:
            if not self._slots:
                slot.started_at = now
            self._slots.append(slot)
        self._pool.submit(self._run, slot, on_done)
        return slot

    def _run(self, slot: Slot, on_done: Done) -> None:
        result: RuntimeResult | None = None
        error: TaskError | None = None
        try:
            result = self.adapter.run(slot.job, slot)
        except TaskError as exc:
            error = exc
        except Exception:  # an adapter bug must not lose the task: it is retried
            log.exception("runtime call failed unexpectedly", extra={"task_id": slot.job.task_id})
            error = TransientError("runtime call failed unexpectedly")
        finished = time.monotonic()
        with self._cond:
            slot.finished_at = finished
            if slot.started_at is None:  # came back before the task ahead of it (a rejection)
                slot.started_at = finished
            self._slots.remove(slot)
            if self._slots and self._slots[0].started_at is None:
                self._slots[0].started_at = finished
            self._cond.notify_all()
        on_done(slot, result, error)

    def _watch(self) -> None:
        while not self._closed.wait(WATCH_INTERVAL_S):
            now = time.monotonic()
            with self._cond:
                due = [s for s in self._slots if not s.expired and s.overdue(now)]
                for slot in due:
                    slot.expired = True
            for slot in due:
                log.warning("task timed out on the runtime; interrupting", extra={"task_id": slot.job.task_id})
                self.adapter.interrupt(slot)

    def cancel(self, slot: Slot) -> None:
        """Interrupt a task in flight on purpose: it comes back interrupted and is not stored."""
        with self._cond:
            if slot not in self._slots:
                return
            slot.cancelled = True
        self.adapter.interrupt(slot)

    def close(self) -> None:
        self._closed.set()
        self._pool.shutdown(wait=False, cancel_futures=True)
