"""The webhook signing secret: one per deployment, kept in Secrets Manager.

Standard Webhooks writes a secret as ``whsec_`` + base64 of the key bytes. CDK
lets Secrets Manager generate 48 letters and digits (a valid base64 string of
36 bytes, 285 bits of entropy); local mode stores base64 of 32 random bytes.
Either way the stored value is the base64 part, and :func:`signing_secret` adds
the prefix, so the deliverer and ``sdeks webhook-secret`` show the same string.
"""

from __future__ import annotations

import base64
import binascii
import secrets
from typing import Any

SECRET_PREFIX = "whsec_"  # noqa: S105 - the format's prefix, not a secret
GENERATED_LENGTH = 48
"""Characters CDK asks Secrets Manager for (a multiple of 4: base64 without padding)."""


def new_secret_value() -> str:
    """A fresh stored value (local mode): base64 of 32 random bytes."""
    return base64.b64encode(secrets.token_bytes(32)).decode()


def signing_secret(stored: str) -> str:
    """The ``whsec_...`` string a receiver configures."""
    stored = stored.strip()
    return stored if stored.startswith(SECRET_PREFIX) else SECRET_PREFIX + stored


def signing_key(secret: str) -> bytes:
    """The HMAC key of a ``whsec_`` secret (or of a bare stored value)."""
    try:
        key = base64.b64decode(secret.strip().removeprefix(SECRET_PREFIX), validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("the webhook secret is not base64 (whsec_<base64>)") from None
    if len(key) < 16:
        raise ValueError("the webhook secret is shorter than 16 bytes")
    return key


def read_secret(secretsmanager: Any, secret_id: str) -> str:
    """The ``whsec_...`` secret stored under ``secret_id``."""
    return signing_secret(secretsmanager.get_secret_value(SecretId=secret_id)["SecretString"])
