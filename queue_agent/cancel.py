"""Where a cancellation check plugs in (issue 16): the agent asks before running a task and while it runs.

The worker calls :meth:`CancelCheck.cancelled` for a task about to run (while
it is prepared, off the runtime's path) and, every heartbeat, for the tasks it
holds: a cancelled task that has not started is acknowledged without running,
one in flight is interrupted on the runtime and its result discarded.

The task contract has no ``cancelled`` state yet, so the agent runs with
:class:`NothingCancelled`; a check that reads the status row replaces it once
the contract has the state.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Protocol


class CancelCheck(Protocol):
    def cancelled(self, task_ids: Collection[str]) -> set[str]:
        """The ids among ``task_ids`` whose task was cancelled; raises nothing (an error means "not cancelled")."""
        ...


class NothingCancelled:
    """No task is ever cancelled: the contract has no cancelled state yet."""

    def cancelled(self, task_ids: Collection[str]) -> set[str]:
        return set()
