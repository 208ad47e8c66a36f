"""``python -m webhooks``: the deliverer as a long-polling process (local mode).

The same core as the Lambda; failed tries are postponed on the queue by the same
schedule. SIGTERM stops it between messages.
"""

from __future__ import annotations

import json
import logging
import signal
import sys
import threading

import boto3
from botocore.exceptions import BotoCoreError, ClientError
from pydantic import ValidationError

from webhooks.queue import QueuedEvent, postpone
from webhooks.settings import Settings, build

log = logging.getLogger("sdeks.webhooks")


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    try:
        settings = Settings()  # type: ignore[call-arg]
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or '?'}: {e['msg']}" for e in exc.errors())
        log.error(json.dumps({"event": "invalid_configuration", "problems": problems}))
        return 2
    session = boto3.session.Session(region_name=settings.aws_region)
    deliverer = build(settings, session)
    sqs = session.client("sqs")
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    log.info(json.dumps({"event": "webhooks_starting", "loopback_allowed": settings.webhook_allow_loopback}))
    while not stop.is_set():
        try:
            messages = sqs.receive_message(
                QueueUrl=settings.webhook_queue_url,
                MaxNumberOfMessages=10,
                WaitTimeSeconds=settings.wait_time_s,
                MessageSystemAttributeNames=["All"],
            ).get("Messages", [])
        except (ClientError, BotoCoreError) as exc:
            log.warning(json.dumps({"event": "receive_failed", "error": type(exc).__name__}))
            stop.wait(2)
            continue
        for message in messages:
            queued = QueuedEvent.from_sqs_message(message)
            outcome = deliverer.deliver(queued.body, queued.sent_at, queued.receive_count)
            try:
                if outcome.final:
                    sqs.delete_message(QueueUrl=settings.webhook_queue_url, ReceiptHandle=queued.receipt)
                else:
                    postpone(sqs, settings.webhook_queue_url, queued)
            except (ClientError, BotoCoreError) as exc:  # the message returns after its visibility timeout
                log.warning(json.dumps({"event": "settle_failed", "error": type(exc).__name__}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
