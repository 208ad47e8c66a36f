"""How many tasks are ahead of a queued one: its runtime queue's approximate depth, read at status time.

SQS answers approximate counts and a standard queue has no order, so the figure is the number of
other tasks competing with this one (waiting or being worked on), not its rank; the status field
says so in its name (``tasks_ahead_approx``). It is a courtesy: when SQS cannot be read, the status
answers without it and the failure is logged.
"""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools import Logger

COUNTS = ("ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible")
"""Waiting messages, and those an agent holds (running, prefetched or being finished)."""

logger = Logger(service="sdeks.api")  # the handler's logger (same service: same handler, same keys)


def tasks_ahead(sqs: Any, queue_url: str, task_id: str) -> int | None:
    """Other tasks on the queue at ``queue_url`` (its approximate depth less the task itself); ``None`` when unread."""
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        attributes = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=list(COUNTS))["Attributes"]
        depth = sum(int(attributes.get(name, 0)) for name in COUNTS)
    except (BotoCoreError, ClientError, KeyError, ValueError, TypeError) as exc:  # AWS, or a malformed answer
        logger.warning("queue_depth_unavailable", extra={"task_id": task_id, "error": type(exc).__name__})
        return None
    return max(0, depth - 1)
