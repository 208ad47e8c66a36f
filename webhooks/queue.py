"""Results-topic messages as both runners see them, and the retry schedule applied to them.

A failed delivery is hidden on the queue for :func:`sdeks.webhook_retries.retry_delay_s`
(its visibility timeout); after the queue's maxReceiveCount the message goes to
the DLQ. The Lambda and the local process both postpone through here.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sdeks.webhook_retries import retry_delay_s


@dataclass(frozen=True)
class QueuedEvent:
    body: str
    receipt: str
    receive_count: int
    sent_at: datetime

    @classmethod
    def from_lambda_record(cls, record: dict[str, Any]) -> QueuedEvent:
        attributes = record.get("attributes", {})
        return cls(record["body"], record["receiptHandle"], *_attempt_and_time(attributes))

    @classmethod
    def from_sqs_message(cls, message: dict[str, Any]) -> QueuedEvent:
        """A message from ``ReceiveMessage`` with ``MessageSystemAttributeNames=["All"]``."""
        attributes = message.get("Attributes", {})
        return cls(message["Body"], message["ReceiptHandle"], *_attempt_and_time(attributes))


def _attempt_and_time(attributes: dict[str, str]) -> tuple[int, datetime]:
    count = int(attributes.get("ApproximateReceiveCount") or 1)
    sent_ms = int(attributes.get("SentTimestamp") or 0)
    sent_at = datetime.fromtimestamp(sent_ms / 1000, UTC) if sent_ms else datetime.now(UTC)
    return max(1, count), sent_at


def postpone(sqs: Any, queue_url: str, event: QueuedEvent) -> int:
    """Hide ``event`` until its next try is due; returns the delay in seconds."""
    delay = retry_delay_s(event.receive_count)
    sqs.change_message_visibility(QueueUrl=queue_url, ReceiptHandle=event.receipt, VisibilityTimeout=delay)
    return delay
