"""A message the agent holds: where it is in the pipeline, and what the finishing side must do with it."""

from __future__ import annotations

from concurrent.futures import Future
from dataclasses import dataclass
from datetime import datetime
from enum import Enum, auto
from typing import Any

from queue_agent.adapters import RuntimeResult
from queue_agent.errors import TaskError
from queue_agent.lane import Slot
from queue_agent.messages import Identity, Job, Received


class Stage(Enum):
    PREPARING = auto()
    READY = auto()
    RUNNING = auto()
    FINISHING = auto()


class Verdict(Enum):
    """What the finishing side must do with a held message."""

    RAN = auto()
    """The runtime produced the result: store, announce, acknowledge."""
    REJECTED = auto()
    """Permanent failure: fail the task, announce, acknowledge."""
    RETRY = auto()
    """Transient failure: put the message back with a backoff (or announce the DLQ move)."""
    ALREADY_SUCCEEDED = auto()
    """The status row says succeeded: acknowledge, store nothing."""
    ANNOUNCED_BEFORE = auto()
    """A stored event exists: publish it again, acknowledge."""
    CANCELLED = auto()
    """Cancelled before or while running: acknowledge, store nothing."""
    UNPARSEABLE = auto()
    """No task id: leave it for the DLQ."""
    DUPLICATE = auto()
    """Another copy of the task is held here: put this one back until that copy has stored its event."""


@dataclass(eq=False)
class Held:
    """A message this agent holds, and what became of it."""

    msg: Received
    stage: Stage = Stage.PREPARING
    verdict: Verdict | None = None
    job: Job | None = None
    identity: Identity | None = None
    error: TaskError | None = None
    unparseable: str = ""
    result: RuntimeResult | None = None
    stored_event: bytes | None = None
    started_at: datetime | None = None
    slot: Slot | None = None
    marking: Future[Any] | None = None
    cancelled: bool = False
    released: bool = False

    @property
    def task_id(self) -> str | None:
        return self.identity.task_id if self.identity else None

    def fields(self, **more: Any) -> dict[str, Any]:
        return {
            "task_id": self.task_id,
            "message_id": self.msg.message_id,
            "receive_count": self.msg.receive_count,
            **more,
        }
