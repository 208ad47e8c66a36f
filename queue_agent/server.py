"""``/healthz`` (the agent's loops are alive), ``/readyz`` (runtime ready, not stopping; else why), ``/metrics``."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

if TYPE_CHECKING:
    from queue_agent.worker import Agent


def readiness(agent: Agent) -> tuple[int, bytes]:
    """200 when the runtime is ready and the agent not stopping; else 503 and why (a runtime without its model)."""
    if agent.stopping.is_set():
        return 503, b"not ready: stopping\n"
    if agent.runtime_ready.is_set():
        return 200, b"ready\n"
    reason = agent.runtime_unusable
    if reason is not None:
        return 503, f"not ready: the runtime cannot run tasks: {reason}\n".encode()
    return 503, b"not ready: waiting for the runtime\n"


def serve(agent: Agent, host: str, port: int) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if path == "/metrics":
                self._send(200, generate_latest(agent.metrics.registry), CONTENT_TYPE_LATEST)
            elif path == "/healthz":
                ok = agent.alive() or agent.stopping.is_set()
                self._send(200 if ok else 503, b"ok\n" if ok else b"loop dead\n")
            elif path == "/readyz":
                self._send(*readiness(agent))
            else:
                self._send(404, b"not found\n")

        def _send(self, code: int, body: bytes, content_type: str = "text/plain; charset=utf-8") -> None:
            self.send_response(code)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="http", daemon=True).start()
    return server
