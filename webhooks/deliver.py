"""Deliver one completion event to its task's webhook: the core both runners share.

How the deliverer learns a task's webhook: it reads the task's status row. The
API writes the row (with ``metadata.webhook``) when it accepts the task, before
anything runs, so the row is the record of what the client asked for. The
completion event does not carry the URL on purpose: every results-topic
subscriber sees events, and a receiver URL often holds a token. A task published
to the tasks topic directly (bypassing the API) has no webhook.

Every try re-vets the receiver: the URL against the contract's rules, and each
address its host resolves to against :mod:`sdeks.netguard` (public unicast only;
loopback too when ``allow_loopback``, which only local mode sets). The POST goes
to the vetted address, with the host name for the Host header, SNI and the
certificate check, so a second DNS answer cannot redirect it. Redirects are not
followed. A refused receiver is never contacted and never retried.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any
from urllib.parse import urlsplit

import httpx
from botocore.exceptions import BotoCoreError, ClientError
from pydantic import ValidationError

from sdeks.contract import WEBHOOK_LOOPBACK_CONTEXT, CompletionEvent, Webhook, WebhookPayload, summarize
from sdeks.netguard import Resolver, is_loopback_address, is_public_address, resolve
from sdeks.tasks_table import TaskTable
from webhooks.signing import signed_headers

log = logging.getLogger("sdeks.webhooks")

USER_AGENT = "sdeks-webhooks"
DEFAULT_PORTS = {"https": 443, "http": 80}


class Verdict(StrEnum):
    DELIVERED = "delivered"
    NOT_WANTED = "not_wanted"
    """No webhook for this task, or not for this event: nothing to send."""
    REFUSED = "refused"
    """The receiver may not be called (address policy): dropped, never retried."""
    RETRY = "retry"


@dataclass(frozen=True)
class Outcome:
    verdict: Verdict
    reason: str

    @property
    def final(self) -> bool:
        """True when the message is done with (delete it); False when it must be tried again later."""
        return self.verdict is not Verdict.RETRY


class _StopError(Exception):
    def __init__(self, verdict: Verdict, reason: str) -> None:
        super().__init__(reason)
        self.outcome = Outcome(verdict, reason)


def delivery_id(event: CompletionEvent) -> str:
    """``webhook-id``: the same for every retry and duplicate of one event, different for another event."""
    canonical = json.dumps(event.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
    return "msg_" + hashlib.sha256(canonical.encode()).hexdigest()[:32]


@dataclass
class Deliverer:
    """Signs and POSTs completion events under one address policy."""

    table: TaskTable
    key: bytes
    http: httpx.Client
    allow_loopback: bool = False
    resolver: Resolver = resolve
    clock: Callable[[], float] = time.time

    def deliver(self, body: str, sent_at: datetime, attempt: int = 1) -> Outcome:
        """Deliver the event in ``body`` (a results-topic message); ``sent_at`` dates it for the payload."""
        fields: dict[str, Any] = {"attempt": attempt}
        try:
            event = self._event(body)
            fields["task_id"] = event.id
            webhook = self._webhook(event.id)
            fields["host"] = urlsplit(webhook.url).hostname
            outcome = self._post(webhook, event, sent_at)
        except _StopError as stop:
            outcome = stop.outcome
        except Exception as exc:  # a bug: retry this event later, never fail the rest of a batch with it
            trace = "".join(traceback.format_tb(exc.__traceback__))  # frames only: a message may hold the URL
            log.error(json.dumps({"event": "webhook_internal_error", "error": type(exc).__name__, "traceback": trace,
                                  **fields}))  # fmt: skip
            return Outcome(Verdict.RETRY, f"internal error: {type(exc).__name__}")
        level = logging.WARNING if outcome.verdict in (Verdict.REFUSED, Verdict.RETRY) else logging.INFO
        log.log(level, json.dumps({"event": f"webhook_{outcome.verdict}", "reason": outcome.reason, **fields}))
        return outcome

    def _event(self, body: str) -> CompletionEvent:
        try:
            return CompletionEvent.model_validate_json(body)
        except ValidationError:
            raise _StopError(Verdict.NOT_WANTED, "not a completion event") from None

    def _webhook(self, task_id: str) -> Webhook:
        try:
            row = self.table.get_item(task_id)
        except (ClientError, BotoCoreError) as exc:
            raise _StopError(Verdict.RETRY, f"task table unavailable: {type(exc).__name__}") from None
        spec = (row or {}).get("webhook")
        if not spec:
            raise _StopError(Verdict.NOT_WANTED, "task has no webhook")
        try:
            webhook = Webhook.model_validate(spec, context={WEBHOOK_LOOPBACK_CONTEXT: self.allow_loopback})
        except ValidationError as exc:
            raise _StopError(Verdict.REFUSED, summarize(exc)) from None
        if "completed" not in webhook.events:
            raise _StopError(Verdict.NOT_WANTED, "webhook does not subscribe to completed")
        return webhook

    def _address_allowed(self, address: str) -> bool:
        return is_public_address(address) or (self.allow_loopback and is_loopback_address(address))

    def vet(self, url: str) -> tuple[str, str, int]:
        """(host, vetted address, port) of the receiver; raises a refusal before any connection."""
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = parts.port or DEFAULT_PORTS[parts.scheme.lower()]
        try:
            addresses = self.resolver(host, port)
        except (OSError, UnicodeError) as exc:
            raise _StopError(Verdict.RETRY, f"cannot resolve {host!r}: {type(exc).__name__}") from None
        if not addresses:
            raise _StopError(Verdict.RETRY, f"{host!r} has no address")
        bad = [a for a in addresses if not self._address_allowed(a)]
        if bad:
            raise _StopError(Verdict.REFUSED, f"{host!r} resolves to non-public address {bad[0]}")
        return host, addresses[0], port

    def _post(self, webhook: Webhook, event: CompletionEvent, sent_at: datetime) -> Outcome:
        host, address, port = self.vet(webhook.url)
        parts = urlsplit(webhook.url)
        scheme = parts.scheme.lower()
        netloc = f"[{address}]" if ":" in address else address
        target = f"{scheme}://{netloc}:{port}{parts.path or '/'}" + (f"?{parts.query}" if parts.query else "")
        body = WebhookPayload(type="task.completed", timestamp=sent_at, data=event).model_dump_json().encode()
        named = f"[{host}]" if ":" in host else host  # an IPv6 literal keeps its brackets in Host
        headers = {
            "host": named if port == DEFAULT_PORTS[scheme] else f"{named}:{port}",
            "content-type": "application/json",
            "user-agent": USER_AGENT,
            **signed_headers(self.key, delivery_id(event), int(self.clock()), body),
        }
        extensions = {"sni_hostname": host} if scheme == "https" else {}
        try:
            with self.http.stream("POST", target, content=body, headers=headers, extensions=extensions) as resp:
                status = resp.status_code  # the receiver's body is never read
        except httpx.HTTPError as exc:
            return Outcome(Verdict.RETRY, f"{type(exc).__name__} from the receiver")
        if 200 <= status < 300:
            return Outcome(Verdict.DELIVERED, f"HTTP {status}")
        return Outcome(Verdict.RETRY, f"receiver answered HTTP {status}")


def http_client(timeout_s: float, verify: Any = True) -> httpx.Client:
    """The deliverer's client: no redirects, no proxies or netrc from the environment, short timeouts."""
    return httpx.Client(timeout=timeout_s, follow_redirects=False, trust_env=False, verify=verify)
