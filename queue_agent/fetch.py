"""SSRF-safe fetching of task inputs (init images, masks, extras sources).

A task may point at its inputs instead of carrying them. The agent runs inside
a VPC next to the instance metadata service, so a URL in a payload is hostile
until vetted:

- base64 is passed through untouched;
- ``s3://`` only from the allowed buckets (the output bucket is always allowed);
- ``https://`` only to allowed hosts *and* public addresses (:mod:`sdeks.netguard`). The agent resolves
  the name itself, refuses any non-public address (loopback, private, link-local,
  multicast, reserved, shared, the metadata endpoints), connects to the vetted IP
  (a second resolution cannot swap in another address: no DNS rebinding) with the
  host name for SNI and certificate checks, and re-vets every redirect;
- every other scheme (``file://``, ``http://``, ``gopher://`` ...) is refused;
- sizes are capped while streaming and the whole fetch has a deadline.

Refusals raise :class:`PermanentError` (the task fails with the reason);
network trouble with an allowed source raises :class:`TransientError`.
"""

from __future__ import annotations

import base64
import http.client
import socket
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urljoin, urlsplit

from queue_agent.errors import AWS_ERRORS, PermanentError, TransientError, aws_code, aws_error
from sdeks.contract import parse_image_ref
from sdeks.netguard import (
    DNS_NAME_ERRORS,
    PinnedHTTPSConnection,
    Resolver,
    host_allowed,
    is_public_address,
    resolve,
)

MAX_REDIRECTS = 3
UNREADABLE_CODES = frozenset({"NoSuchKey", "404", "NotFound", "NoSuchBucket", "AccessDenied", "403"})
"""S3 answers that retrying cannot change: the input is refused for good."""
_CHUNK = 64 * 1024


@dataclass
class InputFetcher:
    """Fetches image references under one policy; ``fetch`` returns base64 for the runtime."""

    s3: Any
    allowed_buckets: frozenset[str]
    allowed_hosts: tuple[str, ...]
    max_bytes: int = 20 * 1024 * 1024
    timeout_s: float = 10.0
    resolver: Resolver = resolve
    address_check: Callable[[str], bool] = is_public_address
    ssl_context: ssl.SSLContext = field(default_factory=ssl.create_default_context)

    def fetch(self, ref: str, what: str = "input") -> str:
        """``ref`` as base64 (unchanged when it already is); raises Permanent/TransientError."""
        try:
            parsed = parse_image_ref(ref)
        except ValueError as exc:
            raise PermanentError(f"{what}: {exc}") from None
        if parsed.kind == "base64":
            return ref
        if parsed.kind == "s3":
            data = self.fetch_s3(parsed.bucket or "", parsed.key or "", what)
        else:
            data = self.fetch_https(parsed.value, what)
        return base64.b64encode(data).decode()

    # --- s3 ------------------------------------------------------------------

    def fetch_s3(self, bucket: str, key: str, what: str = "input") -> bytes:
        if bucket not in self.allowed_buckets:
            raise PermanentError(f"{what}: refused s3 bucket {bucket!r} (not in the allowed input buckets)")
        return read_s3(self.s3, bucket, key, self.max_bytes, what)

    # --- https ---------------------------------------------------------------

    def fetch_https(self, url: str, what: str = "input") -> bytes:
        deadline = time.monotonic() + self.timeout_s
        for _ in range(MAX_REDIRECTS + 1):
            status, headers, body = self._get_once(url, deadline, what)
            if status in (301, 302, 303, 307, 308):
                location = headers.get("location")
                if not location:
                    raise PermanentError(f"{what}: redirect without a Location")
                url = urljoin(url, location)
                continue
            if 200 <= status < 300:
                return body
            if status in (408, 429) or status >= 500:
                raise TransientError(f"{what}: source answered HTTP {status}")
            raise PermanentError(f"{what}: source answered HTTP {status}")
        raise PermanentError(f"{what}: more than {MAX_REDIRECTS} redirects")

    def vet(self, url: str, what: str = "input") -> tuple[str, str, int, str]:
        """(host, vetted address, port, path) for an https URL, or PermanentError naming the reason."""
        parts = urlsplit(url)
        if parts.scheme.lower() != "https":
            raise PermanentError(f"{what}: refused URL scheme {parts.scheme or '(none)'!r}; only https is fetched")
        host = parts.hostname
        if not host:
            raise PermanentError(f"{what}: URL has no host")
        if parts.username or parts.password:
            raise PermanentError(f"{what}: URL must not carry credentials")
        if not host_allowed(host, self.allowed_hosts):
            raise PermanentError(f"{what}: refused host {host!r} (not in the allowed input hosts)")
        try:
            port = parts.port or 443
        except ValueError:
            raise PermanentError(f"{what}: invalid port") from None
        try:
            addresses = self.resolver(host, port)
        except socket.gaierror as exc:
            if exc.errno in DNS_NAME_ERRORS:  # the allowed host does not exist: retrying cannot help
                raise PermanentError(f"{what}: allowed host {host!r} does not resolve ({exc.strerror})") from None
            raise TransientError(f"{what}: cannot resolve {host!r}: {exc}") from None
        except (OSError, UnicodeError) as exc:
            raise TransientError(f"{what}: cannot resolve {host!r}: {exc}") from None
        if not addresses:
            raise PermanentError(f"{what}: allowed host {host!r} has no address")
        bad = [a for a in addresses if not self.address_check(a)]
        if bad:
            raise PermanentError(f"{what}: refused host {host!r}: resolves to non-public address {bad[0]}")
        path = parts.path or "/"
        if parts.query:
            path += "?" + parts.query
        return host, addresses[0], port, path

    def _get_once(self, url: str, deadline: float, what: str) -> tuple[int, dict[str, str], bytes]:
        host, address, port, path = self.vet(url, what)
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TransientError(f"{what}: fetch timed out after {self.timeout_s}s")
        conn = PinnedHTTPSConnection(host, address, port, remaining, self.ssl_context)
        try:
            conn.request("GET", path, headers={"Host": host, "User-Agent": "sdeks-queue-agent", "Accept": "image/*"})
            resp = conn.getresponse()
            headers = {k.lower(): v for k, v in resp.getheaders()}
            if resp.status in (301, 302, 303, 307, 308) or not 200 <= resp.status < 300:
                return resp.status, headers, b""
            length = headers.get("content-length")
            if length and length.isdigit() and int(length) > self.max_bytes:
                raise PermanentError(f"{what}: {length} bytes exceeds the input limit of {self.max_bytes}")
            chunks, total = [], 0
            while True:
                if time.monotonic() > deadline:
                    raise TransientError(f"{what}: fetch timed out after {self.timeout_s}s")
                if conn.sock is not None:
                    conn.sock.settimeout(max(0.01, deadline - time.monotonic()))
                chunk = resp.read(_CHUNK)
                if not chunk:
                    break
                total += len(chunk)
                if total > self.max_bytes:
                    raise PermanentError(f"{what}: more than the input limit of {self.max_bytes} bytes")
                chunks.append(chunk)
            return resp.status, headers, b"".join(chunks)
        except ssl.SSLCertVerificationError as exc:
            raise PermanentError(f"{what}: TLS certificate of {host!r} rejected: {exc.verify_message}") from None
        except TimeoutError:
            raise TransientError(f"{what}: fetch timed out after {self.timeout_s}s") from None
        except (OSError, http.client.HTTPException) as exc:
            raise TransientError(f"{what}: fetch from {host!r} failed: {type(exc).__name__}") from None
        finally:
            conn.close()


def read_s3(s3: Any, bucket: str, key: str, max_bytes: int, what: str = "input") -> bytes:
    """An S3 object, at most ``max_bytes``; a missing object is permanent, other errors transient."""
    try:
        obj = s3.get_object(Bucket=bucket, Key=key)
        if int(obj.get("ContentLength") or 0) > max_bytes:
            raise PermanentError(f"{what}: s3://{bucket}/{key} exceeds the input limit of {max_bytes} bytes")
        data = obj["Body"].read(max_bytes + 1)
    except AWS_ERRORS as exc:
        code = aws_code(exc)
        if code in UNREADABLE_CODES:
            raise PermanentError(f"{what}: s3://{bucket}/{key} not readable ({code})") from None
        raise aws_error(f"{what}: s3 error", exc) from None
    if len(data) > max_bytes:
        raise PermanentError(f"{what}: s3://{bucket}/{key} exceeds the input limit of {max_bytes} bytes")
    return data
