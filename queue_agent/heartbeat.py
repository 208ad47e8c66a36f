"""Visibility heartbeat: every held message (running, prefetched, being stored) stays invisible.

Every ``visibility_s / 3`` seconds one ``ChangeMessageVisibilityBatch`` per ten
held messages sets their visibility to ``visibility_s`` again, so a task never
reappears on the queue while this agent holds it, however long it runs. If the
agent dies, the heartbeat dies with it and the message reappears within
``visibility_s`` for another agent.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from queue_agent.logs import log


class Heartbeat(threading.Thread):
    def __init__(
        self,
        sqs: Any,
        queue_url: str,
        visibility_s: int,
        held: Callable[[], list[tuple[str, str]]],
        lock: threading.Lock,
        stop: threading.Event,
    ) -> None:
        super().__init__(name="heartbeat", daemon=True)
        self.sqs = sqs
        self.queue_url = queue_url
        self.visibility_s = visibility_s
        self.interval_s = max(0.5, visibility_s / 3)
        self.held = held
        self.lock = lock
        self.stop = stop

    def run(self) -> None:
        while not self.stop.wait(self.interval_s):
            self.beat()

    def beat(self) -> None:
        with self.lock:
            entries = self.held()
            for start in range(0, len(entries), 10):
                chunk = entries[start : start + 10]
                try:
                    resp = self.sqs.change_message_visibility_batch(
                        QueueUrl=self.queue_url,
                        Entries=[
                            {"Id": str(i), "ReceiptHandle": handle, "VisibilityTimeout": self.visibility_s}
                            for i, (_, handle) in enumerate(chunk)
                        ],
                    )
                    for failed in resp.get("Failed", []):
                        message_id = chunk[int(failed["Id"])][0]
                        log.warning("heartbeat refused", extra={"message_id": message_id, "code": failed.get("Code")})
                except (ClientError, BotoCoreError) as exc:
                    log.warning("heartbeat failed", extra={"error": type(exc).__name__})
