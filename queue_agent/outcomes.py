"""What became of a message, and the one place each outcome is counted and logged.

Every path through the worker ends in exactly one :class:`Outcome`;
:func:`report` turns it into the ``sdeks_agent_tasks_total`` counter and one
log line, so a dashboard and the logs never disagree about what happened.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from enum import Enum
from typing import Any

from queue_agent.logs import log
from queue_agent.metrics import Metrics


@dataclass(frozen=True)
class _Report:
    status: str
    """The ``status`` label of ``sdeks_agent_tasks_total`` (``""``: not counted, the message is only put back)."""
    level: int
    message: str


class Outcome(Enum):
    SUCCEEDED = _Report("succeeded", logging.INFO, "task succeeded")
    FAILED = _Report("failed", logging.WARNING, "task failed")
    RETRIED = _Report("retried", logging.WARNING, "task will be retried")
    DLQ = _Report("dlq", logging.ERROR, "task goes to the DLQ")
    SKIPPED = _Report("skipped", logging.INFO, "task already succeeded; acknowledging")
    REPLAYED = _Report("skipped", logging.INFO, "task completed earlier; event re-announced")
    CANCELLED = _Report("cancelled", logging.INFO, "task cancelled; acknowledging")
    UNPARSEABLE = _Report("unparseable", logging.WARNING, "unparseable message left for the DLQ")
    DEFERRED = _Report("deferred", logging.INFO, "another copy of the task is held; this one comes back later")
    RELEASED_PREFETCHED = _Report("", logging.INFO, "releasing prefetched task")
    RELEASED_UNFINISHED = _Report("", logging.WARNING, "releasing unfinished task")


def report(metrics: Metrics, outcome: Outcome, fields: dict[str, Any]) -> None:
    """Count and log one outcome; ``fields`` never carry bodies or image data."""
    spec: _Report = outcome.value
    if spec.status:
        metrics.task(spec.status)
    log.log(spec.level, spec.message, extra=fields)
