"""Deterministic S3 locations of a task's outputs.

Deterministic keys are what make retries safe: a task that runs twice overwrites
the same objects instead of leaving a second image set behind.
"""

from __future__ import annotations

CLAIMS_PREFIX = "_claims/"
"""Bucket folder of claim checks: tasks too large for SNS, stored by the API."""
EVENTS_PREFIX = "_events/"
"""Bucket folder of stored completion events, so a redelivered task re-announces the same event."""


def output_prefix(prefix: str, task_id: str) -> str:
    """``<prefix>/<id>``: the folder holding every output of one task."""
    return f"{prefix.strip('/')}/{task_id}"


def image_key(prefix: str, task_id: str, n: int) -> str:
    """Key of the n-th image (1-based): ``<prefix>/<id>/<id>-<n>.png``."""
    if n < 1:
        raise ValueError("image numbers start at 1")
    return f"{output_prefix(prefix, task_id)}/{task_id}-{n}.png"


def info_key(prefix: str, task_id: str) -> str:
    """Key of the runtime's parameters/info JSON: ``<prefix>/<id>/<id>.json``."""
    return f"{output_prefix(prefix, task_id)}/{task_id}.json"


def claim_check_key(task_id: str) -> str:
    """Where the API stores a task too large for SNS."""
    return f"{CLAIMS_PREFIX}{task_id}.json"


def event_key(task_id: str) -> str:
    """Where the agent stores a task's completion event before publishing it."""
    return f"{EVENTS_PREFIX}{task_id}.json"


def s3_uri(bucket: str, key: str) -> str:
    return f"s3://{bucket}/{key}"
