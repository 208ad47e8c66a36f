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

MISSING_CODES = frozenset({"NoSuchKey", "404", "NotFound"})


class Storage:
    def __init__(self, s3: Any, bucket: str) -> None:
        self.s3 = s3
        self.bucket = bucket

    def put_outputs(
        self, prefix: str, task_id: str, images: list[bytes], info: dict[str, Any]
    ) -> tuple[list[str], str]:
        """Write images and info; return their ``s3://`` URIs."""
        uris = []
        try:
            for n, data in enumerate(images, start=1):
                key = image_key(prefix, task_id, n)
                self.s3.put_object(Bucket=self.bucket, Key=key, Body=data, ContentType="image/png")
                uris.append(s3_uri(self.bucket, key))
            key = info_key(prefix, task_id)
            body = json.dumps(info, separators=(",", ":"), default=str).encode()
            self.s3.put_object(Bucket=self.bucket, Key=key, Body=body, ContentType="application/json")
        except AWS_ERRORS as exc:
            raise aws_error("storing outputs failed", exc) from None
        return uris, s3_uri(self.bucket, key)

    def get_event(self, task_id: str) -> bytes | None:
        """The stored event of a task that was already announced, else ``None``."""
        try:
            return self.s3.get_object(Bucket=self.bucket, Key=event_key(task_id))["Body"].read()
        except AWS_ERRORS as exc:
            if aws_code(exc) in MISSING_CODES:
                return None
            raise aws_error("reading the stored event failed", exc) from None

    def put_event(self, task_id: str, body: bytes) -> None:
        try:
            self.s3.put_object(Bucket=self.bucket, Key=event_key(task_id), Body=body, ContentType="application/json")
        except AWS_ERRORS as exc:
            raise aws_error("storing the event failed", exc) from None
