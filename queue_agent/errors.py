"""Failure classes: what the worker does with a task depends only on which one it raised."""

from __future__ import annotations

from botocore.exceptions import BotoCoreError, ClientError

AWS_ERRORS = (ClientError, BotoCoreError)
"""What a boto3 call raises when AWS (or the network to it) fails."""


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


class RuntimeTimeout(TransientError):  # noqa: N818 (pairs with RuntimeUnavailable)
    """The task ran past ``SDEKS_TASK_TIMEOUT_S`` on the runtime; the runtime was told to interrupt it."""


def aws_code(exc: Exception) -> str:
    """The AWS error code of a failed call (``NoSuchKey``, ``ServiceUnavailable``), else the exception's name."""
    if isinstance(exc, ClientError):
        return str(exc.response.get("Error", {}).get("Code", "error"))
    return type(exc).__name__


def aws_error(what: str, exc: Exception) -> TransientError:
    """The one mapping of an AWS failure: transient, with the code and never the request in the reason."""
    return TransientError(f"{what}: {aws_code(exc)}")
