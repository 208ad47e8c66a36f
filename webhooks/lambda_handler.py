"""AWS Lambda entry: an SQS event source with ``ReportBatchItemFailures``.

Delivered, unwanted and refused events succeed (Lambda deletes them). A failed
try is postponed by the retry schedule (its visibility timeout) and reported as
a batch item failure, so it comes back when due and, after the queue's
maxReceiveCount, lands in the DLQ.
"""

from __future__ import annotations

import logging
from typing import Any

import boto3
from botocore.exceptions import BotoCoreError, ClientError

from webhooks.deliver import Deliverer
from webhooks.queue import QueuedEvent, postpone
from webhooks.settings import Settings, build

logging.getLogger("sdeks.webhooks").setLevel(logging.INFO)

_state: dict[str, Any] = {}


def _deliverer() -> tuple[Settings, Deliverer, Any]:
    """Built on the first invocation of a cold start: the secret is read once, not per event."""
    if not _state:
        settings = Settings()  # type: ignore[call-arg]
        session = boto3.session.Session()
        _state.update(settings=settings, deliverer=build(settings, session), sqs=session.client("sqs"))
    return _state["settings"], _state["deliverer"], _state["sqs"]


def handler(event: dict[str, Any], context: Any = None) -> dict[str, Any]:
    settings, deliverer, sqs = _deliverer()
    failures = []
    for record in event.get("Records", []):
        queued = QueuedEvent.from_lambda_record(record)
        outcome = deliverer.deliver(queued.body, queued.sent_at, queued.receive_count)
        if outcome.final:
            continue
        try:
            postpone(sqs, settings.webhook_queue_url, queued)
        except (ClientError, BotoCoreError):  # it still returns after the queue's visibility timeout
            logging.getLogger("sdeks.webhooks").warning("could not postpone a failed delivery")
        failures.append({"itemIdentifier": record["messageId"]})
    return {"batchItemFailures": failures}
