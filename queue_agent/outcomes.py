"""What became of a message, and the one place each outcome is counted, logged and recorded.

Every path through the worker ends in exactly one :class:`Outcome`;
:meth:`Reporter.report` turns it into the ``sdeks_agent_tasks_total`` counter, one
log line and, when an EMF endpoint is configured, one CloudWatch task record
(:mod:`queue_agent.emf`), so a dashboard and the logs never disagree about what happened.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from enum import Enum
from typing import Any

from queue_agent import emf
from queue_agent.logs import log
from queue_agent.metrics import Metrics


@dataclass(frozen=True)
class _Report:
    status: str
    """The ``status`` label of ``sdeks_agent_tasks_total`` (``""``: not counted, the message is only put back)."""
    level: int
    message: str
    emf: emf.Outcome | None = None
    """The EMF outcome recorded for it (``None``: no task record, e.g. a message only put back)."""


class Outcome(Enum):
    SUCCEEDED = _Report("succeeded", logging.INFO, "task succeeded", "succeeded")
    FAILED = _Report("failed", logging.WARNING, "task failed", "failed")
    RETRIED = _Report("retried", logging.WARNING, "task will be retried", "retried")
    DLQ = _Report("dlq", logging.ERROR, "task goes to the DLQ", "dead_lettered")
    SKIPPED = _Report("skipped", logging.INFO, "task already succeeded; acknowledging")
    REPLAYED = _Report("skipped", logging.INFO, "task completed earlier; event re-announced")
    CANCELLED = _Report("cancelled", logging.INFO, "task cancelled; acknowledging", "cancelled")
    UNPARSEABLE = _Report("unparseable", logging.WARNING, "unparseable message left for the DLQ")
    DEFERRED = _Report("deferred", logging.INFO, "another copy of the task is held; this one comes back later")
    RELEASED_PREFETCHED = _Report("", logging.INFO, "releasing prefetched task")
    RELEASED_UNFINISHED = _Report("", logging.WARNING, "releasing unfinished task")


@dataclass(frozen=True)
class Latencies:
    """A task's latencies in seconds, as far as it got (``None``: not reached)."""

    queue_wait_s: float | None = None
    run_s: float | None = None
    total_s: float | None = None


class Reporter:
    """Counts, logs and (with an EMF emitter) records each outcome; ``fields`` never carry bodies or images."""

    def __init__(
        self, metrics: Metrics, runtime: str, records: emf.EmfEmitter | None = None, project: str = ""
    ) -> None:
        self.metrics = metrics
        self.runtime = runtime
        self.records = records
        self.project = project

    def report(self, outcome: Outcome, fields: dict[str, Any], latencies: Latencies | None = None) -> None:
        spec: _Report = outcome.value
        if spec.status:
            self.metrics.task(spec.status)
        log.log(spec.level, spec.message, extra=fields)
        if self.records is not None and spec.emf is not None:
            lat = latencies or Latencies()
            self.records.emit(
                emf.task_outcome_record(
                    project=self.project,
                    runtime=self.runtime,
                    outcome=spec.emf,
                    task_id=fields.get("task_id"),
                    queue_wait_s=lat.queue_wait_s,
                    run_s=lat.run_s,
                    total_s=lat.total_s,
                )
            )

    def close(self) -> None:
        if self.records is not None:
            self.records.close()
