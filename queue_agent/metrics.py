"""Prometheus metrics of one agent process (its own registry, served on /metrics)."""

from __future__ import annotations

import threading
import time

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

DURATION_BUCKETS = (0.1, 0.25, 0.5, 1, 2, 4, 8, 15, 30, 60, 120, 300, 600)
WAIT_BUCKETS = (0.1, 0.5, 1, 2, 5, 10, 30, 60, 120, 300, 900, 3600)


class Metrics:
    def __init__(self, runtime: str) -> None:
        self.registry = CollectorRegistry()
        labels = {"runtime": runtime}
        self.tasks = Counter(
            "sdeks_agent_tasks",
            "Task outcomes: succeeded, failed, retried (transient, backoff), dlq, skipped (already done), "
            "cancelled, unparseable",
            ["runtime", "status"],
            registry=self.registry,
        )
        self.duration = Histogram(
            "sdeks_agent_task_duration_seconds",
            "Runtime execution time of a task",
            ["runtime"],
            buckets=DURATION_BUCKETS,
            registry=self.registry,
        ).labels(**labels)
        self.total_duration = Histogram(
            "sdeks_agent_task_total_seconds",
            "Receive to announce, per task",
            ["runtime"],
            buckets=DURATION_BUCKETS,
            registry=self.registry,
        ).labels(**labels)
        self.queue_wait = Histogram(
            "sdeks_agent_queue_wait_seconds",
            "Time from submission to the start of the run",
            ["runtime"],
            buckets=WAIT_BUCKETS,
            registry=self.registry,
        ).labels(**labels)
        self.receive_count = Histogram(
            "sdeks_agent_receive_count",
            "ApproximateReceiveCount of received messages",
            ["runtime"],
            buckets=(1, 2, 3, 5, 10, 20),
            registry=self.registry,
        ).labels(**labels)
        self.busy_seconds = Counter(
            "sdeks_agent_runtime_busy_seconds",
            "Seconds the runtime spent executing tasks",
            ["runtime"],
            registry=self.registry,
        ).labels(**labels)
        self.held = Gauge(
            "sdeks_agent_messages_held",
            "Messages held (in flight at the runtime, prefetched, finishing)",
            ["runtime"],
            registry=self.registry,
        ).labels(**labels)
        self.ready = Gauge(
            "sdeks_agent_runtime_ready",
            "1 when the runtime answers its health probe",
            ["runtime"],
            registry=self.registry,
        ).labels(**labels)
        self._runtime = runtime
        self._lock = threading.Lock()
        self._busy = 0.0
        self._since: float | None = None
        busy_ratio = Gauge(
            "sdeks_agent_runtime_busy_ratio",
            "Time the runtime was executing tasks / wall time since the agent became ready",
            ["runtime"],
            registry=self.registry,
        ).labels(**labels)
        busy_ratio.set_function(self.busy_ratio)

    def task(self, status: str) -> None:
        self.tasks.labels(runtime=self._runtime, status=status).inc()

    def start_clock(self) -> None:
        with self._lock:
            if self._since is None:
                self._since = time.monotonic()

    def add_busy(self, seconds: float) -> None:
        with self._lock:
            self._busy += seconds
        self.busy_seconds.inc(seconds)
        self.duration.observe(seconds)

    def busy_ratio(self) -> float:
        with self._lock:
            if self._since is None:
                return 0.0
            wall = time.monotonic() - self._since
            return min(1.0, self._busy / wall) if wall > 0 else 0.0
