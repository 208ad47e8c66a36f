"""Whether a client cancelled a task: the agent asks before running a task and while it runs.

The worker calls :meth:`CancelCheck.cancelled` for a task about to run (while
it is prepared, off the runtime's path), when the status row refuses to mark a
task running, and on the watch cadence (:data:`queue_agent.worker.WATCH_S`) for
the tasks it holds: a cancelled task that has not started is acknowledged
without running, one in flight is interrupted on the runtime and its result
discarded. The API's cancel writes ``cancelled`` to the status row
(:meth:`sdeks.tasks_table.TaskTable.cancel`); :class:`StatusRowCancels` reads it back.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Protocol

from queue_agent.errors import AWS_ERRORS, aws_code
from queue_agent.logs import log
from sdeks.tasks_table import TaskTable


class CancelCheck(Protocol):
    def cancelled(self, task_ids: Collection[str]) -> set[str]:
        """The ids among ``task_ids`` whose task was cancelled; raises nothing (an error means "not cancelled")."""
        ...


class NothingCancelled:
    """No task is ever cancelled (unit tests that exercise other paths)."""

    def cancelled(self, task_ids: Collection[str]) -> set[str]:
        return set()


class StatusRowCancels:
    """Reads each task's status row (one consistent ``GetItem`` of the status alone)."""

    def __init__(self, table: TaskTable) -> None:
        self.table = table

    def cancelled(self, task_ids: Collection[str]) -> set[str]:
        found: set[str] = set()
        for task_id in task_ids:
            try:
                if self.table.is_cancelled(task_id):
                    found.add(task_id)
            except AWS_ERRORS as exc:  # the next look decides; a read error never stops a task
                log.warning(
                    "cannot read whether a task was cancelled", extra={"task_id": task_id, "error": aws_code(exc)}
                )
        return found
