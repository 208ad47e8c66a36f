"""The SQS side of the agent in one object: receive, acknowledge, release, keep invisible.

The worker never talks to SQS itself; it is handed a :class:`SqsConsumer`
(as dramatiq's worker is handed a broker consumer), which owns:

- **receive**: long polls, at most ten messages a call;
- **ack**: deletes, batched — concurrent acknowledgements ride in one
  ``DeleteMessageBatch`` (up to ten) while the previous batch call is in
  flight, so several tasks finishing at once cost one round trip;
- **release**: gives a message back after a visibility (0 = now, or a backoff);
- **heartbeat**: every ``visibility_s / 3`` seconds one ``ChangeMessageVisibilityBatch``
  per ten held messages sets their visibility to ``visibility_s`` again, so a
  message never reappears while this agent holds it, however long it runs. If the
  agent dies the heartbeat dies with it and the message reappears within
  ``visibility_s`` for another agent.

A message is held from receive until it is acknowledged or released.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

from queue_agent.errors import AWS_ERRORS, TransientError, aws_code, aws_error
from queue_agent.logs import log
from queue_agent.messages import Received

SQS_BATCH = 10


class SqsConsumer:
    def __init__(
        self,
        sqs: Any,
        queue_url: str,
        *,
        visibility_s: int,
        clock: Callable[[], float],
    ) -> None:
        self.sqs = sqs
        self.queue_url = queue_url
        self.visibility_s = visibility_s
        self.heartbeat_s = max(0.5, visibility_s / 3)
        self._clock = clock
        self._lock = threading.Lock()
        self._held: dict[str, Received] = {}
        self._acks: list[tuple[Received, Future[None]]] = []
        self._acks_ready = threading.Condition(self._lock)
        self._closed = threading.Event()
        self._threads = [
            threading.Thread(target=self._heartbeat_loop, name="heartbeat", daemon=True),
            threading.Thread(target=self._ack_loop, name="acks", daemon=True),
        ]

    # --- lifecycle ----------------------------------------------------------------

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def alive(self) -> bool:
        return all(thread.is_alive() for thread in self._threads)

    def close(self) -> None:
        """Stop the heartbeat; acknowledgements already asked for are still sent."""
        self._closed.set()
        with self._lock:
            self._acks_ready.notify_all()
        self._threads[1].join(10)

    def max_receive_count(self) -> int | None:
        """maxReceiveCount from the queue's RedrivePolicy (``None`` without a DLQ or when unreadable)."""
        try:
            attrs = self.sqs.get_queue_attributes(QueueUrl=self.queue_url, AttributeNames=["RedrivePolicy"])
            policy = attrs.get("Attributes", {}).get("RedrivePolicy")
            return int(json.loads(policy)["maxReceiveCount"]) if policy else None
        except (*AWS_ERRORS, ValueError, KeyError) as exc:
            log.warning("cannot read the queue's redrive policy", extra={"error": aws_code(exc)})
            return None

    # --- messages -----------------------------------------------------------------

    def receive(self, max_messages: int, wait_s: int) -> list[Received]:
        """Up to ``max_messages`` (≤ 10), each held from now on; raises :class:`TransientError`."""
        try:
            resp = self.sqs.receive_message(
                QueueUrl=self.queue_url,
                MaxNumberOfMessages=max(1, min(SQS_BATCH, max_messages)),
                WaitTimeSeconds=wait_s,
                VisibilityTimeout=self.visibility_s,
                MessageSystemAttributeNames=["ApproximateReceiveCount"],
            )
        except AWS_ERRORS as exc:
            raise aws_error("receive", exc) from None
        now = self._clock()
        received = [Received.from_sqs(raw, now) for raw in resp.get("Messages", [])]
        with self._lock:
            for msg in received:
                self._held[msg.message_id] = msg
        return received

    def ack(self, msg: Received) -> None:
        """Delete a message (batched with concurrent acks); raises :class:`TransientError` if SQS refused.

        The heartbeat stops covering it at once: if the delete fails, the message
        reappears within ``visibility_s`` and its stored event is re-announced.
        """
        done: Future[None] = Future()
        with self._lock:
            if self._closed.is_set():
                raise TransientError("delete skipped: the agent is stopping")
            self._held.pop(msg.message_id, None)
            self._acks.append((msg, done))
            self._acks_ready.notify_all()
        done.result()

    def release(self, msg: Received, visibility_s: int) -> None:
        """Give a message back to the queue after ``visibility_s``; never raises."""
        with self._lock:  # not while a heartbeat is extending it, or the heartbeat would hide it again
            self._held.pop(msg.message_id, None)
            try:
                self.sqs.change_message_visibility(
                    QueueUrl=self.queue_url, ReceiptHandle=msg.receipt_handle, VisibilityTimeout=visibility_s
                )
            except AWS_ERRORS as exc:
                log.warning("cannot change visibility", extra={"message_id": msg.message_id, "error": aws_code(exc)})

    # --- background ---------------------------------------------------------------

    def _ack_loop(self) -> None:
        while True:
            with self._lock:
                while not self._acks and not self._closed.is_set():
                    self._acks_ready.wait()
                if not self._acks:
                    return
                batch, self._acks = self._acks[:SQS_BATCH], self._acks[SQS_BATCH:]
            self._delete_batch(batch)

    def _delete_batch(self, batch: list[tuple[Received, Future[None]]]) -> None:
        try:
            resp = self.sqs.delete_message_batch(
                QueueUrl=self.queue_url,
                Entries=[{"Id": str(i), "ReceiptHandle": msg.receipt_handle} for i, (msg, _) in enumerate(batch)],
            )
        except AWS_ERRORS as exc:
            error = aws_error("delete failed", exc)
            for _, done in batch:
                done.set_exception(error)
            return
        failed = {int(entry["Id"]): entry.get("Code", "error") for entry in resp.get("Failed", [])}
        for i, (_, done) in enumerate(batch):
            if i in failed:
                done.set_exception(TransientError(f"delete failed: {failed[i]}"))
            else:
                done.set_result(None)

    def _heartbeat_loop(self) -> None:
        while not self._closed.wait(self.heartbeat_s):
            self.beat()

    def beat(self) -> None:
        """Extend the visibility of every held message now."""
        with self._lock:
            entries = [(msg.message_id, msg.receipt_handle) for msg in self._held.values()]
            for start in range(0, len(entries), SQS_BATCH):
                chunk = entries[start : start + SQS_BATCH]
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
                except AWS_ERRORS as exc:
                    log.warning("heartbeat failed", extra={"error": aws_code(exc)})
