"""Standard Webhooks signatures (https://www.standardwebhooks.com).

``webhook-signature`` is ``v1,`` + base64 of HMAC-SHA256 over
``"{webhook-id}.{webhook-timestamp}.{body}"`` with the key of the ``whsec_``
secret. ``webhook-id`` stays the same on every retry of a delivery (receivers
deduplicate on it); ``webhook-timestamp`` is the time of each try (receivers
reject old ones, which stops replays).
"""

from __future__ import annotations

import base64
import hashlib
import hmac


def signature(key: bytes, msg_id: str, timestamp: int, body: bytes) -> str:
    """The ``webhook-signature`` value: ``v1,<base64 HMAC-SHA256>``."""
    signed = f"{msg_id}.{timestamp}.".encode() + body
    return "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()


def signed_headers(key: bytes, msg_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    """The three Standard Webhooks headers for one try."""
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": signature(key, msg_id, timestamp, body),
    }
