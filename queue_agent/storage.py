"""S3 writes at deterministic keys: a retried task overwrites instead of duplicating.

``<prefix>/<id>/<id>-<n>.png`` per image, ``<prefix>/<id>/<id>.json`` for the
runtime's parameters/info, and ``_events/<id>.json`` for the completion event as
first announced — the commit record that makes re-announcements identical.
"""

from __future__ import annotations

import json
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from queue_agent.errors import TransientError
from sdeks.contract import image_key, info_key, s3_uri


def event_key(task_id: str) -> str:
    """Where the announced completion event of a task is kept."""
    return f"_events/{task_id}.json"


def _aws(what: str, exc: Exception) -> TransientError:
    if isinstance(exc, ClientError):
        code = exc.response.get("Error", {}).get("Code", "error")
        return TransientError(f"{what}: {code}")
    return TransientError(f"{what}: {type(exc).__name__}")


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
        except (ClientError, BotoCoreError) as exc:
            raise _aws("storing outputs failed", exc) from None
        return uris, s3_uri(self.bucket, key)

    def get_event(self, task_id: str) -> bytes | None:
        """The stored event of a task that was already announced, else ``None``."""
        try:
            return self.s3.get_object(Bucket=self.bucket, Key=event_key(task_id))["Body"].read()
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404", "NotFound"):
                return None
            raise _aws("reading the stored event failed", exc) from None
        except BotoCoreError as exc:
            raise _aws("reading the stored event failed", exc) from None

    def put_event(self, task_id: str, body: bytes) -> None:
        try:
            self.s3.put_object(Bucket=self.bucket, Key=event_key(task_id), Body=body, ContentType="application/json")
        except (ClientError, BotoCoreError) as exc:
            raise _aws("storing the event failed", exc) from None
