"""Image references as they appear in tasks: inline base64, ``s3://`` or ``https://``.

A task may carry its init image inline or point at it. Validation here is purely
syntactic (is it decodable base64, is it a well-formed URL); whether a URL may be
*fetched* is a policy decision of the queue agent, which alone knows the allowed
buckets and hosts.
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import AfterValidator

_DATA_URI = re.compile(r"^data:image/[a-z0-9.+-]+;base64,", re.IGNORECASE)
_S3_URI = re.compile(r"^s3://(?P<bucket>[a-z0-9][a-z0-9.-]{1,61}[a-z0-9])/(?P<key>.+)$")

MAX_URL_LENGTH = 2048


@dataclass(frozen=True)
class ParsedImageRef:
    """A validated image reference, split into its kind and payload."""

    kind: Literal["base64", "s3", "https"]
    value: str
    bucket: str | None = None
    key: str | None = None

    def decode(self) -> bytes:
        """Bytes of an inline image; only meaningful for ``kind == "base64"``."""
        if self.kind != "base64":
            raise ValueError(f"{self.kind} reference has no inline bytes")
        return base64.b64decode(strip_data_uri(self.value), validate=True)


def strip_data_uri(value: str) -> str:
    """A1111 accepts ``data:image/png;base64,...`` as well as bare base64."""
    return _DATA_URI.sub("", value, count=1)


def parse_image_ref(value: str) -> ParsedImageRef:
    """Classify and validate an image reference; raise ``ValueError`` naming the problem."""
    if not isinstance(value, str) or not value:
        raise ValueError("image reference must be a non-empty string")
    lowered = value[:8].lower()
    if lowered.startswith("s3://"):
        if len(value) > MAX_URL_LENGTH:
            raise ValueError("s3 URI too long")
        match = _S3_URI.match(value)
        if not match:
            raise ValueError("malformed s3 URI, expected s3://bucket/key")
        return ParsedImageRef("s3", value, match["bucket"], match["key"])
    if lowered.startswith("https://"):
        if len(value) > MAX_URL_LENGTH:
            raise ValueError("URL too long")
        parts = urlsplit(value)
        if not parts.hostname:
            raise ValueError("URL has no host")
        if parts.username or parts.password:
            raise ValueError("URL must not carry credentials")
        return ParsedImageRef("https", value)
    if "://" in value[:16]:
        scheme = value.split("://", 1)[0]
        raise ValueError(f"unsupported URL scheme {scheme!r}; use base64, s3:// or https://")
    try:
        raw = base64.b64decode(strip_data_uri(value), validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("malformed base64 image data") from None
    if not raw:
        raise ValueError("empty image data")
    return ParsedImageRef("base64", value)


def _validate(value: str) -> str:
    parse_image_ref(value)
    return value


ImageRef = Annotated[str, AfterValidator(_validate)]
"""A string that is base64 image data (optionally a data URI), ``s3://`` or ``https://``."""
