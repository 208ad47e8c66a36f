"""Failure classes: what the worker does with a task depends only on which one it raised."""

from __future__ import annotations


class TaskError(Exception):
    """Base class; ``reason`` is safe to show a user (no secrets, no image data)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class PermanentError(TaskError):
    """Retrying cannot help (invalid content, runtime 4xx, refused input): fail, announce, delete."""


class TransientError(TaskError):
    """Retrying may help (runtime down/5xx/timeout, AWS errors): leave the message, back off."""


class RuntimeUnavailable(TransientError):  # noqa: N818 (reads better than ...Error)
    """The runtime did not answer at all; the worker waits for /healthz before taking more work."""
