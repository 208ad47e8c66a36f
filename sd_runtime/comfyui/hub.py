"""The ``/ws`` progress fan-out: ComfyUI's websocket messages, sent from any thread."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any


class WsHub:
    """Websocket fan-out: per client id, a set of queues; ``send`` is safe from any thread."""

    def __init__(self) -> None:
        self.loop: asyncio.AbstractEventLoop | None = None
        self.clients: dict[str, set[asyncio.Queue]] = {}

    def register(self, sid: str) -> asyncio.Queue:
        q: asyncio.Queue = asyncio.Queue(maxsize=10000)
        self.clients.setdefault(sid, set()).add(q)
        return q

    def unregister(self, sid: str, q: asyncio.Queue) -> None:
        qs = self.clients.get(sid)
        if qs is not None:
            qs.discard(q)
            if not qs:
                del self.clients[sid]

    def _dispatch(self, message: dict[str, Any], sid: str | None) -> None:
        targets = [q for s, qs in self.clients.items() if sid is None or s == sid for q in qs]
        for q in targets:
            with contextlib.suppress(asyncio.QueueFull):
                q.put_nowait(message)

    def send(self, event: str, data: dict[str, Any], sid: str | None = None) -> None:
        """Queue ``{"type": event, "data": data}`` for ``sid`` (None: everyone)."""
        loop = self.loop
        if loop is None or loop.is_closed():
            return
        message = {"type": event, "data": data}
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            self._dispatch(message, sid)
        else:
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(self._dispatch, message, sid)
