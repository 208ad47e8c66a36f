"""Per-task webhooks: what a client may ask for, and what its receiver gets.

A task's ``metadata.webhook`` names a receiver URL and the events it wants. The
deliverer (``webhooks/``) POSTs one :class:`sdeks.contract.WebhookPayload` per event, signed per
the Standard Webhooks specification (https://www.standardwebhooks.com): headers
``webhook-id``, ``webhook-timestamp`` and ``webhook-signature``.

Only ``completed`` exists today: the results topic carries completion events and
nothing announces a task's start yet, so ``started`` is refused with a clear
message instead of being accepted and never delivered.

URL rules: at most :data:`MAX_WEBHOOK_URL_LENGTH` characters, a host, no
credentials. The receiver policy applies where validation names it with
``context={WEBHOOK_LOOPBACK_CONTEXT: bool}``, as the API and the deliverer do:
``https`` only and an IP literal must be public; with ``True`` (local mode only,
whose receivers listen on 127.0.0.1) ``http://`` and ``https://`` to a loopback IP
literal are admitted too. The deliverer also vets every address the host resolves
to before each connection (:mod:`sdeks.netguard`). Without the key (the agent,
which trusts the front door, like routing) only ``http``/``https`` is required.
"""

from __future__ import annotations

from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from sdeks.netguard import is_ip_literal, is_loopback_address, is_public_address

MAX_WEBHOOK_URL_LENGTH = 2048
WEBHOOK_EVENTS: tuple[str, ...] = ("completed",)
"""Events a task may subscribe to."""
UNAVAILABLE_EVENTS = {"started": "nothing announces a task's start on the results topic yet"}
WEBHOOK_LOOPBACK_CONTEXT = "webhook_loopback"
"""Validation context key: true admits loopback receivers (local mode only)."""

WebhookEvent = Literal["completed"]


class Webhook(BaseModel):
    """``metadata.webhook``: where to POST the task's events, and which."""

    model_config = ConfigDict(extra="forbid")

    url: str = Field(
        max_length=MAX_WEBHOOK_URL_LENGTH,
        description="https URL of the receiver; must resolve to public addresses only",
    )
    events: list[WebhookEvent] = Field(
        default_factory=lambda: ["completed"], min_length=1, max_length=len(WEBHOOK_EVENTS)
    )

    @field_validator("events", mode="before")
    @classmethod
    def _known_events(cls, value: Any) -> Any:
        if isinstance(value, list):
            for event in value:
                if isinstance(event, str) and event in UNAVAILABLE_EVENTS:
                    raise ValueError(
                        f"webhook event {event!r} is not available yet ({UNAVAILABLE_EVENTS[event]}); "
                        f"supported: {', '.join(WEBHOOK_EVENTS)}"
                    )
            if len(set(map(str, value))) != len(value):
                raise ValueError("webhook events must not repeat")
        return value

    @field_validator("url")
    @classmethod
    def _receiver_url(cls, value: str, info: ValidationInfo) -> str:
        context = info.context or {}
        check_webhook_url(
            value,
            allow_loopback=bool(context.get(WEBHOOK_LOOPBACK_CONTEXT)),
            policy=WEBHOOK_LOOPBACK_CONTEXT in context,
        )
        return value


def check_webhook_url(url: str, *, allow_loopback: bool = False, policy: bool = True) -> None:
    """Raise ``ValueError`` naming why ``url`` may not receive webhooks.

    ``policy=False`` checks the shape only (http or https, host, port, no credentials).
    """
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    try:
        host = parts.hostname or ""
        parts.port  # noqa: B018 - raises ValueError for a port out of range
    except ValueError:
        raise ValueError("webhook url has an invalid host or port") from None
    if not host:
        raise ValueError("webhook url needs a host")
    if parts.username is not None or parts.password is not None:
        raise ValueError("webhook url must not carry credentials")
    if scheme not in ("http", "https"):
        raise ValueError(f"webhook url must be https, not {scheme or '(none)'!r}")
    if not policy:
        return
    loopback = allow_loopback and is_loopback_address(host)
    if scheme == "http" and not loopback:
        raise ValueError("webhook url must be https, not 'http'")
    if is_ip_literal(host) and not (loopback or is_public_address(host)):
        raise ValueError(f"webhook url points at non-public address {host}")
