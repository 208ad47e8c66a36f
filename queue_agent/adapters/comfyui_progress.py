"""ComfyUI's progress, as ComfyUI itself reports it: the ``/ws?clientId=`` websocket.

ComfyUI sends ``{"type": "progress", "data": {"value", "max", "prompt_id", "node"}}`` to the
client id a prompt was queued with, once per sampling step of the node executing. The agent
queues every prompt with one client id, so one connection sees its tasks' progress: a daemon
thread keeps it open (reconnecting with a backoff while the runtime is away) and remembers
each prompt's last report until the prompt ends. Progress is a courtesy: a runtime without
the websocket only means tasks run without it.
"""

from __future__ import annotations

import contextlib
import json
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from websockets.exceptions import WebSocketException
from websockets.sync.client import ClientConnection, connect

from queue_agent.logs import log

MAX_MESSAGE_BYTES = 16 * 1024 * 1024
"""Largest websocket message read (ComfyUI's binary preview frames included; they are skipped)."""
MAX_PROMPTS = 64
"""Prompts whose last report is kept: the executing one and the few queued behind it, with room to spare."""
RECONNECT_S = (0.5, 10.0)
"""First and longest wait before reconnecting (doubling)."""
ENDED = ("execution_success", "execution_error", "execution_interrupted")
"""Messages that end a prompt (besides ``executing`` with ``node: null``)."""


@dataclass(frozen=True)
class NodeProgress:
    """One ``progress`` report: ``value`` of ``max`` steps of ``node``."""

    value: int
    max: int
    node: str | None


def ws_url(base_url: str, client_id: str) -> str:
    """``/ws?clientId=`` of the runtime at ``base_url`` (``http`` → ``ws``, ``https`` → ``wss``)."""
    scheme, rest = base_url.rstrip("/").split("://", 1)
    return f"{'wss' if scheme == 'https' else 'ws'}://{rest}/ws?clientId={client_id}"


class ProgressListener:
    """Reads one ComfyUI websocket in a daemon thread; :meth:`latest` answers from memory."""

    def __init__(self, base_url: str, client_id: str) -> None:
        self.url = ws_url(base_url, client_id)
        self._reports: OrderedDict[str, NodeProgress] = OrderedDict()
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._connection: ClientConnection | None = None
        self._thread = threading.Thread(target=self._run, name="comfyui-progress", daemon=True)
        self._thread.start()

    def latest(self, prompt_id: str) -> NodeProgress | None:
        """The prompt's last progress report, ``None`` before the first (or once it ended)."""
        with self._lock:
            return self._reports.get(prompt_id)

    def close(self) -> None:
        self._stopping.set()
        connection = self._connection
        if connection is not None:
            connection.close()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        delay, longest = RECONNECT_S
        while not self._stopping.is_set():
            try:
                with connect(self.url, open_timeout=5, max_size=MAX_MESSAGE_BYTES, proxy=None) as connection:
                    self._connection = connection
                    delay = RECONNECT_S[0]
                    for message in connection:
                        if isinstance(message, str):
                            self._take(message)
            except (OSError, TimeoutError, WebSocketException) as exc:
                log.debug("comfyui progress websocket unavailable", extra={"error": type(exc).__name__})
            finally:
                self._connection = None
            self._stopping.wait(delay)
            delay = min(delay * 2, longest)

    def _take(self, text: str) -> None:
        """Remember a ``progress`` report; forget a prompt that ended. Anything else is not ours to read."""
        with contextlib.suppress(ValueError, TypeError, KeyError, AttributeError):
            message: Any = json.loads(text)
            kind, data = message.get("type"), message.get("data") or {}
            prompt_id = data.get("prompt_id")
            if not isinstance(prompt_id, str):
                return
            if kind == "progress":
                node = data.get("node")
                report = NodeProgress(int(data["value"]), int(data["max"]), None if node is None else str(node))
                with self._lock:
                    self._reports[prompt_id] = report
                    self._reports.move_to_end(prompt_id)
                    while len(self._reports) > MAX_PROMPTS:
                        self._reports.popitem(last=False)
            elif kind in ENDED or (kind == "executing" and data.get("node") is None):
                with self._lock:
                    self._reports.pop(prompt_id, None)
