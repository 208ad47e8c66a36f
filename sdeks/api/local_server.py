"""Local mode's API Gateway: serves the Lambda handler over HTTP on 127.0.0.1.

Each HTTP request becomes an API Gateway REST proxy event (stage ``local``,
``domainName`` = the Host header) handed to :func:`sdeks.api.handler.handler`, the
same function the Lambda runs. Like API Gateway in front of the Lambda, it checks
``x-api-key`` first (403 JSON when missing or wrong) and refuses a body over
:data:`MAX_REQUEST_BYTES` with 413 before reading it.

    python -m sdeks.api.local_server --port 8080 --api-key SECRET

Environment: the API's settings (:func:`sdeks.api.environment.api_environment`),
AWS_ENDPOINT_URL (the moto server), AWS credentials/region; SDEKS_API_KEY instead
of ``--api-key`` keeps the key out of the process list. ``GET /healthz`` answers
without a key (readiness probe). The handler logs JSON lines to stdout (Powertools).
"""

from __future__ import annotations

import argparse
import base64
import hmac
import json
import os
import sys
import uuid
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import parse_qsl

import anyio.to_thread

from sdeks.api.handler import handler as lambda_handler
from sdeks.api.http import JSON_HEADERS, json_response, response_headers
from sdeks.api.settings import ApiSettings, ConfigurationError
from sdeks.contract import MAX_REQUEST_BYTES, ErrorCode, error_body

STAGE = "local"

Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


class LocalGateway:
    """A minimal ASGI app standing in for API Gateway + the Lambda proxy integration."""

    def __init__(
        self,
        api_key: str,
        handler: Callable[[dict[str, Any], Any], dict[str, Any]] = lambda_handler,
        max_body: int = MAX_REQUEST_BYTES,
    ) -> None:
        if not api_key:
            raise ValueError("an API key is required")
        self._key = api_key.encode()
        self._handler = handler
        self._max_body = max_body

    async def __call__(self, scope: dict[str, Any], receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await _lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        headers: dict[str, list[str]] = {}
        for raw_name, raw_value in scope["headers"]:
            headers.setdefault(raw_name.decode("latin-1").lower(), []).append(raw_value.decode("latin-1"))
        method, path = scope["method"], scope["path"]

        if path == "/healthz" and method in ("GET", "HEAD"):
            await _send(send, json_response(200, {"status": "ok"}))
            return
        key = (headers.get("x-api-key") or [""])[-1].encode("latin-1")
        if not hmac.compare_digest(key, self._key):
            await _send(send, _error(403, ErrorCode.FORBIDDEN, "missing or invalid x-api-key header"))
            return
        length = (headers.get("content-length") or [None])[-1]
        if length is not None:
            if not length.strip().isdigit():
                await _send(send, _error(400, ErrorCode.BAD_REQUEST, "invalid Content-Length"))
                return
            if int(length) > self._max_body:
                await _send(send, _too_large(self._max_body))
                return
        body = bytearray()
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body += message.get("body", b"")
            if len(body) > self._max_body:
                await _send(send, _too_large(self._max_body))
                return
            if not message.get("more_body"):
                break

        event = self._event(scope, headers, bytes(body))
        response = await anyio.to_thread.run_sync(self._handler, event, None)
        await _send(send, response)

    def _event(self, scope: dict[str, Any], headers: dict[str, list[str]], body: bytes) -> dict[str, Any]:
        headers = {**headers, "x-forwarded-proto": [scope.get("scheme", "http")]}
        server = scope.get("server") or ("127.0.0.1", 0)
        host = (headers.get("host") or [f"{server[0]}:{server[1]}"])[-1]
        query: dict[str, list[str]] = {}
        for name, value in parse_qsl(scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True):
            query.setdefault(name, []).append(value)
        try:
            text, is_b64 = body.decode("utf-8"), False
        except UnicodeDecodeError:
            text, is_b64 = base64.b64encode(body).decode(), True
        client = scope.get("client") or ("", 0)
        return {
            "resource": "/{proxy+}",
            "path": scope["path"],
            "httpMethod": scope["method"],
            "headers": {name: values[-1] for name, values in headers.items()},
            "multiValueHeaders": headers,
            "queryStringParameters": {name: values[-1] for name, values in query.items()} or None,
            "multiValueQueryStringParameters": query or None,
            "pathParameters": {"proxy": scope["path"].lstrip("/")} if scope["path"] != "/" else None,
            "stageVariables": None,
            "requestContext": {
                "stage": STAGE,
                "domainName": host,
                "httpMethod": scope["method"],
                "path": f"/{STAGE}{scope['path']}",
                "requestId": uuid.uuid4().hex,
                "identity": {"sourceIp": client[0]},
            },
            "body": text if body else None,
            "isBase64Encoded": is_b64,
        }


def _error(status: int, code: ErrorCode, message: str, details: object = None) -> dict[str, Any]:
    return json_response(status, error_body(code, message, details))


def _too_large(limit: int) -> dict[str, Any]:
    return _error(413, ErrorCode.PAYLOAD_TOO_LARGE, f"request body exceeds {limit} bytes", {"max_bytes": limit})


async def _send(send: Send, response: dict[str, Any]) -> None:
    body = response.get("body") or ""
    payload = base64.b64decode(body) if response.get("isBase64Encoded") else body.encode()
    headers = {**JSON_HEADERS, **response_headers(response)}
    raw_headers = [(k.lower().encode("latin-1"), str(v).encode("latin-1")) for k, v in headers.items()]
    raw_headers.append((b"content-length", str(len(payload)).encode()))
    await send({"type": "http.response.start", "status": int(response["statusCode"]), "headers": raw_headers})
    await send({"type": "http.response.body", "body": payload})


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sdeks.api.local_server", description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1)")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--api-key", default=os.environ.get("SDEKS_API_KEY"), help="or env SDEKS_API_KEY")
    args = parser.parse_args(argv)
    if not args.api_key:
        parser.error("an API key is required: --api-key or SDEKS_API_KEY")
    try:
        ApiSettings.from_env()
    except ConfigurationError as exc:
        print(f"sdeks api: {exc}", file=sys.stderr)
        return 2

    import uvicorn

    app = LocalGateway(args.api_key)
    print(json.dumps({"event": "listening", "url": f"http://{args.host}:{args.port}"}), flush=True)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning", access_log=False, lifespan="on")
    return 0


if __name__ == "__main__":
    sys.exit(main())
