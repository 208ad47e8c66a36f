"""API Gateway REST proxy events in, proxy responses out: the transport half of the handler.

Nothing here touches AWS; it turns an event into a :class:`Request` (lower-cased
headers, query, body bytes with the size limit applied) and builds JSON answers.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from dataclasses import dataclass, field
from typing import Any

from sdeks.contract import MAX_REQUEST_BYTES, error_body

JSON_HEADERS = {"Content-Type": "application/json", "Cache-Control": "no-store"}


class HttpError(Exception):
    """An answer other than success, raised from anywhere in request handling."""

    def __init__(
        self, status: int, code: str, message: str, details: object = None, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.details = details
        self.headers = headers or {}

    def response(self) -> dict[str, Any]:
        return json_response(self.status, error_body(self.code, self.message, self.details), self.headers)


def json_response(status: int, payload: object, headers: dict[str, str] | None = None) -> dict[str, Any]:
    return {
        "statusCode": status,
        "headers": {**JSON_HEADERS, **(headers or {})},
        "body": json.dumps(payload, separators=(",", ":"), ensure_ascii=False),
        "isBase64Encoded": False,
    }


@dataclass
class Request:
    method: str
    path: str
    headers: dict[str, str]
    query: dict[str, str]
    raw_body: str | None
    body_is_base64: bool
    stage: str
    domain_name: str
    request_id: str
    extras: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_event(cls, event: Any) -> Request:
        if not isinstance(event, dict):
            raise HttpError(400, "bad_request", "event is not an API Gateway proxy event")
        headers: dict[str, str] = {}
        for source in (event.get("multiValueHeaders"), event.get("headers")):
            if isinstance(source, dict):
                for name, value in source.items():
                    if isinstance(value, list):
                        value = value[-1] if value else ""
                    if isinstance(name, str) and isinstance(value, str):
                        headers[name.lower()] = value
        query: dict[str, str] = {}
        for source in (event.get("multiValueQueryStringParameters"), event.get("queryStringParameters")):
            if isinstance(source, dict):
                for name, value in source.items():
                    if isinstance(value, list):
                        value = value[-1] if value else ""
                    if isinstance(name, str) and isinstance(value, str):
                        query[name] = value
        context = event.get("requestContext") if isinstance(event.get("requestContext"), dict) else {}
        body = event.get("body")
        method = event.get("httpMethod")
        path = event.get("path")
        return cls(
            method=method.upper() if isinstance(method, str) else "",
            path=path if isinstance(path, str) and path else "/",
            headers=headers,
            query=query,
            raw_body=body if isinstance(body, str) else None,
            body_is_base64=event.get("isBase64Encoded") is True,
            stage=str(context.get("stage") or ""),
            domain_name=str(context.get("domainName") or headers.get("host") or ""),
            request_id=str(context.get("requestId") or ""),
        )

    def body_bytes(self) -> bytes:
        """The body, base64-decoded when API Gateway encoded it; 413 past the limit."""
        raw = self.raw_body or ""
        if self.body_is_base64:
            if len(raw) > (MAX_REQUEST_BYTES * 4) // 3 + 8:
                raise _too_large()
            try:
                data = base64.b64decode(raw, validate=True)
            except (binascii.Error, ValueError):
                raise HttpError(
                    400, "malformed_body", "body is marked base64-encoded but is not valid base64"
                ) from None
        else:
            if len(raw) > MAX_REQUEST_BYTES:
                raise _too_large()
            data = raw.encode("utf-8", errors="surrogatepass")
        if len(data) > MAX_REQUEST_BYTES:
            raise _too_large()
        return data


def _too_large() -> HttpError:
    return HttpError(
        413,
        "payload_too_large",
        f"request body exceeds {MAX_REQUEST_BYTES} bytes",
        {"max_bytes": MAX_REQUEST_BYTES},
    )


JSON_MEDIA_TYPES = ("application/json",)


def check_json_content_type(content_type: str | None) -> None:
    """Accept ``application/json`` (or ``application/*+json``), charset UTF-8 if named; absent → accepted.

    A missing Content-Type is taken as JSON: many simple clients omit it and the body is
    parsed strictly anyway. A *different* media type (e.g. curl -d's form encoding) is 415.
    """
    if content_type is None or not content_type.strip():
        return
    media, *params = (part.strip() for part in content_type.split(";"))
    media = media.lower()
    if not (media in JSON_MEDIA_TYPES or (media.startswith("application/") and media.endswith("+json"))):
        raise HttpError(
            415,
            "unsupported_media_type",
            f"Content-Type must be application/json, got {media[:100]!r}",
            {"accepted": ["application/json"]},
        )
    for param in params:
        name, _, value = param.partition("=")
        if name.strip().lower() == "charset" and value.strip().strip('"').lower() not in ("utf-8", "utf8"):
            raise HttpError(
                415,
                "unsupported_media_type",
                "only the UTF-8 charset is accepted",
                {"accepted": ["application/json; charset=utf-8"]},
            )


def _reject_constant(name: str) -> None:
    raise ValueError(f"{name} is not valid JSON")


_SURROGATE = re.compile("[\ud800-\udfff]")


def _has_lone_surrogate(value: Any) -> bool:
    """JSON escapes may encode unpaired UTF-16 surrogates (``"\\ud800"``); they cannot be re-encoded as UTF-8."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if not item.isascii() and _SURROGATE.search(item):
                return True
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return False


def parse_json(data: bytes) -> Any:
    """Strict JSON (no NaN/Infinity, no lone surrogates); any failure, including absurd nesting or numbers, is a 400."""
    if not data.strip():
        raise HttpError(400, "malformed_json", "request body is empty; expected a JSON object")
    try:
        text = data.decode("utf-8")
        value = json.loads(text, parse_constant=_reject_constant)
    except UnicodeDecodeError:
        raise HttpError(400, "malformed_json", "request body is not UTF-8") from None
    except json.JSONDecodeError as exc:
        raise HttpError(
            400,
            "malformed_json",
            f"request body is not valid JSON: {exc.msg}",
            {"line": exc.lineno, "column": exc.colno},
        ) from None
    except (ValueError, RecursionError) as exc:
        reason = "nested too deeply" if isinstance(exc, RecursionError) else str(exc)[:200]
        raise HttpError(400, "malformed_json", f"request body is not acceptable JSON: {reason}") from None
    if _has_lone_surrogate(value):
        raise HttpError(400, "malformed_json", "request body contains an unpaired UTF-16 surrogate escape")
    return value
