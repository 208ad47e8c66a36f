"""S3 writes at deterministic keys: a retried task overwrites instead of duplicating.

``<prefix>/<id>/<id>-<n>.png`` per image, ``<prefix>/<id>/<id>.json`` for the
runtime's parameters/info, and :func:`sdeks.contract.event_key` for the
completion event as first announced — the commit record that makes
re-announcements identical.
"""

from __future__ import annotations

import json
from typing import Any

from queue_agent.errors import AWS_ERRORS, aws_code, aws_error
from sdeks.contract import event_key, image_key, info_key, s3_uri
from sdeks.presign import presigned_urls

MISSING_CODES = frozenset({"NoSuchKey", "404", "NotFound"})


class Storage:
    def __init__(self, s3: Any, bucket: str) -> None:
        self.s3 = s3
        self.bucket = bucket

    def put_image(self, prefix: str, task_id: str, n: int, data: bytes) -> str:
        """Write the n-th image (1-based); return its ``s3://`` URI."""
        key = image_key(prefix, task_id, n)
        self._put(key, data, "image/png", "storing outputs failed")
        return s3_uri(self.bucket, key)

    def put_info(self, prefix: str, task_id: str, info: dict[str, Any]) -> str:
        """Write the runtime's parameters/info JSON; return its ``s3://`` URI."""
        key = info_key(prefix, task_id)
        body = json.dumps(info, separators=(",", ":"), default=str).encode()
        self._put(key, body, "application/json", "storing outputs failed")
        return s3_uri(self.bucket, key)

    def presign(self, uris: list[str], expires_s: int) -> list[str]:
        """Presigned HTTPS GET URLs of these outputs (signed locally with the agent's credentials, no request)."""
        try:
            return presigned_urls(self.s3, self.bucket, uris, expires_s)
        except AWS_ERRORS as exc:  # no credentials to sign with (yet): a retry may have them
            raise aws_error("presigning the images failed", exc) from None

    def get_event(self, task_id: str) -> bytes | None:
        """The stored event of a task that was already announced, else ``None``."""
        try:
            return self.s3.get_object(Bucket=self.bucket, Key=event_key(task_id))["Body"].read()
        except AWS_ERRORS as exc:
            if aws_code(exc) in MISSING_CODES:
                return None
            raise aws_error("reading the stored event failed", exc) from None

    def put_event(self, task_id: str, body: bytes) -> None:
        self._put(event_key(task_id), body, "application/json", "storing the event failed")

    def _put(self, key: str, body: bytes, content_type: str, what: str) -> None:
        try:
            self.s3.put_object(Bucket=self.bucket, Key=key, Body=body, ContentType=content_type)
        except AWS_ERRORS as exc:
            raise aws_error(what, exc) from None
