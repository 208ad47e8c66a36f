"""Deterministic S3 locations of a task's outputs.

Deterministic keys are what make retries safe: a task that runs twice overwrites
the same objects instead of leaving a second image set behind.
"""

from __future__ import annotations


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
    return f"_claims/{task_id}.json"


def s3_uri(bucket: str, key: str) -> str:
    return f"s3://{bucket}/{key}"
