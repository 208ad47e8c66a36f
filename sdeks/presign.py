"""Presigned HTTPS GET URLs of a task's images: the one place that builds them.

The API adds them to a status answer, the agent to a completion event (config
``output.presign_images``), so a client without AWS credentials can download its
results. A URL is signed with the caller's credentials and stops working when they
expire, whatever its ``expires_s`` says (a Lambda role's or a Pod Identity session).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any


def presigned_urls(s3: Any, bucket: str, uris: Iterable[str], expires_s: int) -> list[str]:
    """``get_object`` URLs, valid ``expires_s`` seconds, of the ``s3://bucket/…`` URIs in ``bucket`` (others skipped:
    a URL is only handed out for objects of the output bucket)."""
    head = f"s3://{bucket}/"
    return [
        s3.generate_presigned_url("get_object", Params={"Bucket": bucket, "Key": uri[len(head) :]}, ExpiresIn=expires_s)
        for uri in uris
        if uri.startswith(head)
    ]
