"""ComfyUI's JSON bodies whatever their Content-Type, without opening the door to cross-site requests.

ComfyUI reads ``POST /prompt`` (and ``/queue``, ``/history``, ``/interrupt``, ``/free``)
with ``request.json()`` whatever the Content-Type, and its clients rely on it: the
``comfy_api_simplified`` library sends none, ComfyUI's own ``websockets_api_example.py``
(urllib) sends ``application/x-www-form-urlencoded``. FastAPI parses only JSON types, so
this ASGI middleware marks such bodies JSON before routing. A browser's cross-site
"simple request" (a form or ``text/plain`` POST from another page) carries an ``Origin``
whose host is not the server's: that one is refused (403), as ComfyUI's origin check
does, so a web page cannot queue a workflow. The A1111 routes keep refusing non-JSON
bodies (415).
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import urlsplit

ROUTES = ("/prompt", "/queue", "/history", "/interrupt", "/free")
PATHS = frozenset([*ROUTES, *(f"/api{r}" for r in ROUTES)])


def _cross_site(headers: dict[bytes, bytes]) -> bool:
    origin = headers.get(b"origin")
    if origin is None:
        return False
    return urlsplit(origin.decode("latin-1")).netloc != headers.get(b"host", b"").decode("latin-1")


class ComfyJsonBodies:
    """ASGI middleware: non-JSON bodies of ComfyUI's JSON routes are read as JSON unless sent cross-site."""

    def __init__(self, app: Any):
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["method"] == "POST" and scope["path"] in PATHS:
            headers = dict(scope["headers"])
            if not headers.get(b"content-type", b"").lower().startswith(b"application/json"):
                if _cross_site(headers):
                    await _forbidden(send)
                    return
                rest = [(k, v) for k, v in scope["headers"] if k != b"content-type"]
                scope = {**scope, "headers": [*rest, (b"content-type", b"application/json")]}
        await self.app(scope, receive, send)


async def _forbidden(send: Any) -> None:
    message = "a cross-site request without a JSON Content-Type is refused"
    body = json.dumps(
        {"error": {"type": "forbidden", "message": message, "details": "", "extra_info": {}}, "node_errors": {}}
    ).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": 403, "headers": headers})
    await send({"type": "http.response.body", "body": body})
