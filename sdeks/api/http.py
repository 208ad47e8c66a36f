"""API Gateway REST proxy events in, JSON answers out: the transport half of the handler.

Nothing here touches AWS. :func:`clean_event` turns whatever arrives into a well-formed
REST proxy event (the router then never meets a wrong type), :func:`body_bytes` applies
the size limit, and the JSON helpers build the contract's error bodies.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Mapping
from typing import Any

from sdeks.contract import API_VERSION, MAX_REQUEST_BYTES, ErrorCode, error_body
from sdeks.contract.limits import MAX_JSON_DEPTH, JsonTooDeepError, check_json_depth

JSON_HEADERS = {"Content-Type": "application/json", "Cache-Control": "no-store"}


class HttpError(Exception):
    """An answer other than success, raised from anywhere in request handling."""

    def __init__(
        self,
        status: int,
        code: ErrorCode,
        message: str,
        details: object = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.details = details
        self.headers = headers or {}

    def response(self) -> dict[str, Any]:
        return json_response(self.status, error_body(self.code, self.message, self.details), self.headers)


def json_text(payload: object) -> str:
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False)


def json_response(status: int, payload: object, headers: dict[str, str] | None = None) -> dict[str, Any]:
    """A proxy response (what the local adapter answers itself, before the handler)."""
    return {
        "statusCode": status,
        "headers": {**JSON_HEADERS, **(headers or {})},
        "body": json_text(payload),
        "isBase64Encoded": False,
    }


def response_headers(response: Mapping[str, Any]) -> dict[str, str]:
    """The headers of a proxy response, single- or multi-valued (the REST resolver answers the latter)."""
    headers = {name: str(value) for name, value in (response.get("headers") or {}).items()}
    for name, values in (response.get("multiValueHeaders") or {}).items():
        if values:
            headers[name] = str(values[-1])
    return headers


def _string_map(*sources: object) -> dict[str, list[str]]:
    """Header or query maps (single- and multi-valued) merged into name → values, dropping what is not text."""
    out: dict[str, list[str]] = {}
    for source in sources:
        if not isinstance(source, dict):
            continue
        for name, value in source.items():
            values = value if isinstance(value, list) else [value]
            texts = [v for v in values if isinstance(v, str)]
            if isinstance(name, str) and texts:
                out[name] = texts
    return out


def clean_event(event: Any) -> dict[str, Any]:
    """A REST proxy event with every field of the type the router expects (junk dropped, never a crash).

    Header names are lower-cased. A path that still starts with ``/<stage>/<version>`` (a custom
    domain mapped without a base path) loses the stage, so routes see ``/<version>/...`` only.
    """
    if not isinstance(event, dict):
        raise HttpError(400, ErrorCode.BAD_REQUEST, "event is not an API Gateway proxy event")
    headers = {k.lower(): v for k, v in _string_map(event.get("multiValueHeaders"), event.get("headers")).items()}
    query = _string_map(event.get("multiValueQueryStringParameters"), event.get("queryStringParameters"))
    context = event.get("requestContext") if isinstance(event.get("requestContext"), dict) else {}
    method, path, body = event.get("httpMethod"), event.get("path"), event.get("body")
    path = path if isinstance(path, str) and path else "/"
    stage = str(context.get("stage") or "")
    if stage and path.startswith(f"/{stage}/{API_VERSION}"):
        path = path[len(stage) + 1 :]
    return {
        "resource": "/{proxy+}",
        "path": path,
        "httpMethod": method.upper() if isinstance(method, str) else "",
        "headers": {name: values[-1] for name, values in headers.items()},
        "multiValueHeaders": headers,
        "queryStringParameters": {name: values[-1] for name, values in query.items()} or None,
        "multiValueQueryStringParameters": query or None,
        "pathParameters": None,
        "stageVariables": None,
        "requestContext": {
            "stage": stage,
            "path": str(context.get("path") or (f"/{stage}{path}" if stage else path)),
            "domainName": str(context.get("domainName") or headers.get("host", [""])[-1]),
            "requestId": str(context.get("requestId") or ""),
        },
        "body": body if isinstance(body, str) else None,
        "isBase64Encoded": event.get("isBase64Encoded") is True,
    }


def body_bytes(raw: str | None, is_base64: bool) -> bytes:
    """The body, base64-decoded when API Gateway encoded it; 413 past the limit."""
    raw = raw or ""
    if is_base64:
        if len(raw) > (MAX_REQUEST_BYTES * 4) // 3 + 8:
            raise _too_large()
        try:
            data = base64.b64decode(raw, validate=True)
        except (binascii.Error, ValueError):
            raise HttpError(
                400, ErrorCode.MALFORMED_BODY, "body is marked base64-encoded but is not valid base64"
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
        ErrorCode.PAYLOAD_TOO_LARGE,
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
            ErrorCode.UNSUPPORTED_MEDIA_TYPE,
            f"Content-Type must be application/json, got {media[:100]!r}",
            {"accepted": ["application/json"]},
        )
    for param in params:
        name, _, value = param.partition("=")
        if name.strip().lower() == "charset" and value.strip().strip('"').lower() not in ("utf-8", "utf8"):
            raise HttpError(
                415,
                ErrorCode.UNSUPPORTED_MEDIA_TYPE,
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
    """Strict JSON (no NaN/Infinity, no lone surrogates, bounded depth); any failure is a 400, before any write."""
    if not data.strip():
        raise HttpError(400, ErrorCode.MALFORMED_JSON, "request body is empty; expected a JSON object")
    try:
        text = data.decode("utf-8")
        value = json.loads(text, parse_constant=_reject_constant)
    except UnicodeDecodeError:
        raise HttpError(400, ErrorCode.MALFORMED_JSON, "request body is not UTF-8") from None
    except json.JSONDecodeError as exc:
        raise HttpError(
            400,
            ErrorCode.MALFORMED_JSON,
            f"request body is not valid JSON: {exc.msg}",
            {"line": exc.lineno, "column": exc.colno},
        ) from None
    except RecursionError:
        too_deep = JsonTooDeepError(MAX_JSON_DEPTH + 1)
        raise HttpError(
            400, ErrorCode.MALFORMED_JSON, f"request body: {too_deep}", {"max_depth": MAX_JSON_DEPTH}
        ) from None
    except ValueError as exc:
        raise HttpError(
            400, ErrorCode.MALFORMED_JSON, f"request body is not acceptable JSON: {str(exc)[:200]}"
        ) from None
    if _has_lone_surrogate(value):
        raise HttpError(400, ErrorCode.MALFORMED_JSON, "request body contains an unpaired UTF-16 surrogate escape")
    try:
        return check_json_depth(value)
    except JsonTooDeepError as exc:
        raise HttpError(400, ErrorCode.MALFORMED_JSON, f"request body: {exc}", {"max_depth": exc.limit}) from None
