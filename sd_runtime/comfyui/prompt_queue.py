"""The prompt queue of one server: pending prompts, the running one, history, and their execution.

Prompts run one at a time on the engine's worker thread, in order of their
``number``, so they serialize with A1111 requests on the same process.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import traceback
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

from sd_runtime.comfyui.cache import NodeCache
from sd_runtime.comfyui.files import FileStore
from sd_runtime.comfyui.graph import NodeFailed, Plan, execute
from sd_runtime.comfyui.hub import WsHub
from sd_runtime.comfyui.nodes import Context, Interrupted, NodeExecutionError

log = logging.getLogger("sd_runtime.comfyui")

MAX_PENDING = 1000
MAX_HISTORY = 1000


def _now_ms() -> int:
    return int(time.time() * 1000)


@dataclass
class QueueItem:
    number: int
    prompt_id: str
    prompt: dict[str, Any]
    extra_data: dict[str, Any]
    plan: Plan
    client_id: str | None = None
    outputs: list[str] = field(default_factory=list)

    def as_list(self) -> list[Any]:
        return [self.number, self.prompt_id, self.prompt, self.extra_data, self.outputs]


class ComfyState:
    """The prompt queue, history, files and websocket hub of one server."""

    def __init__(self, engine: Any):
        self.engine = engine
        self.files = FileStore()
        self.hub = WsHub()
        self.cache = NodeCache()
        engine.model_listeners.append(self.cache.clear)  # entries hold the old model's pipelines
        self.pending: list[QueueItem] = []
        self.running: QueueItem | None = None
        self.history: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self._history_lock = threading.Lock()
        self._number = 0
        self._worker: asyncio.Task | None = None
        self._wake: asyncio.Event | None = None

    # ---- queue ----------------------------------------------------------------
    def queue_remaining(self) -> int:
        return len(self.pending) + (1 if self.running else 0)

    def status_data(self) -> dict[str, Any]:
        return {"exec_info": {"queue_remaining": self.queue_remaining()}}

    def broadcast_status(self) -> None:
        self.hub.send("status", {"status": self.status_data()})

    def ensure_worker(self) -> None:
        loop = asyncio.get_running_loop()
        self.hub.loop = loop
        if self._wake is None:
            self._wake = asyncio.Event()
        if self._worker is None or self._worker.done():
            self._worker = loop.create_task(self._run(), name="comfyui-prompt-worker")

    def enqueue(self, item: QueueItem, front: bool) -> None:
        self.ensure_worker()
        if front:
            item.number = min([i.number for i in self.pending] + [0]) - 1
        self.pending.append(item)
        assert self._wake is not None
        self._wake.set()
        self.broadcast_status()

    def next_number(self) -> int:
        self._number += 1
        return self._number

    async def _run(self) -> None:
        assert self._wake is not None
        while True:
            while not self.pending:
                self._wake.clear()
                await self._wake.wait()
            item = min(self.pending, key=lambda i: i.number)
            self.pending.remove(item)
            self.running = item
            self.broadcast_status()
            try:
                await self.engine.submit(self._execute, item)
            except RuntimeError as exc:  # executor shut down: the server is stopping
                log.info("prompt worker stopping: %s", exc)
                return
            except Exception:
                log.exception("prompt %s failed outside a node", item.prompt_id)
            finally:
                self.running = None
                self.broadcast_status()

    # ---- execution (worker thread) -------------------------------------------
    def _execute(self, item: QueueItem) -> None:
        pid, sid = item.prompt_id, item.client_id
        messages: list[list[Any]] = []
        hub = self.hub

        def send(event: str, data: dict[str, Any], record: bool = False) -> None:
            if record:
                messages.append([event, data])
            hub.send(event, data, sid)

        self.engine.clear_interrupt()
        send("execution_start", {"prompt_id": pid, "timestamp": _now_ms()}, record=True)
        ctx = Context(
            engine=self.engine,
            files=self.files,
            prompt=item.prompt,
            prompt_id=pid,
            interrupted=self.engine.interrupt_requested,
        )
        ctx.on_progress = lambda value, total: send(
            "progress", {"value": value, "max": total, "prompt_id": pid, "node": ctx.node_id}
        )
        outputs: dict[str, dict[str, Any]] = {}

        def on_executed(nid: str, ui: dict[str, Any]) -> None:
            outputs[nid] = ui
            send("executed", {"node": nid, "display_node": nid, "output": ui, "prompt_id": pid})

        status_str = "success"
        try:
            execute(
                item.plan,
                ctx,
                on_executing=lambda nid: send("executing", {"node": nid, "display_node": nid, "prompt_id": pid}),
                on_executed=on_executed,
                on_cached=lambda nodes: send(
                    "execution_cached", {"nodes": nodes, "prompt_id": pid, "timestamp": _now_ms()}, record=True
                ),
                cache=self.cache,
            )
            send("execution_success", {"prompt_id": pid, "timestamp": _now_ms()}, record=True)
        except NodeFailed as failed:
            status_str = "error"
            event, data = failure_event(pid, failed)
            send(event, data, record=True)
        finally:
            self.engine.clear_interrupt()
        entry = {
            "prompt": item.as_list(),
            "outputs": outputs,
            "status": {"status_str": status_str, "completed": status_str == "success", "messages": messages},
            "meta": {
                nid: {"node_id": nid, "display_node": nid, "parent_node": None, "real_node_id": nid} for nid in outputs
            },
        }
        self._record(pid, entry)
        # after the history entry exists, as ComfyUI does: a client may fetch it as soon as it reads this
        send("executing", {"node": None, "prompt_id": pid})

    def _record(self, prompt_id: str, entry: dict[str, Any]) -> None:
        with self._history_lock:
            self.history[prompt_id] = entry
            while len(self.history) > MAX_HISTORY:
                self.history.popitem(last=False)

    def is_known(self, prompt_id: str) -> bool:
        """Whether ``prompt_id`` is pending, running or in the history (ComfyUI refuses to reuse one)."""
        active = [*self.pending, self.running] if self.running else self.pending
        return prompt_id in self.history or any(i.prompt_id == prompt_id for i in active)

    def remove_pending(self, clear: bool, delete: list[str]) -> None:
        if clear:
            self.pending.clear()
        self.pending[:] = [i for i in self.pending if i.prompt_id not in delete]
        self.broadcast_status()

    def remove_history(self, clear: bool, delete: list[str]) -> None:
        with self._history_lock:
            if clear:
                self.history.clear()
            for pid in delete:
                self.history.pop(pid, None)

    def get_history(self, prompt_id: str | None = None, max_items: int | None = None) -> dict[str, Any]:
        with self._history_lock:
            if prompt_id is not None:
                return {prompt_id: self.history[prompt_id]} if prompt_id in self.history else {}
            items = list(self.history.items())
        if max_items is not None:
            items = items[-max_items:] if max_items > 0 else []
        return dict(items)


def failure_event(prompt_id: str, failed: NodeFailed) -> tuple[str, dict[str, Any]]:
    """The websocket/history message for a node that failed: interrupted, or an execution error."""
    base = {
        "prompt_id": prompt_id,
        "node_id": failed.node_id,
        "node_type": failed.node_type,
        "executed": failed.executed,
    }
    exc = failed.exc
    if isinstance(exc, Interrupted):
        return "execution_interrupted", {**base, "timestamp": _now_ms()}
    if not isinstance(exc, NodeExecutionError | ValueError):
        log.error("prompt %s node %s (%s) failed", prompt_id, failed.node_id, failed.node_type, exc_info=exc)
    message = getattr(exc, "message", None) or str(exc) or type(exc).__name__
    return "execution_error", {
        **base,
        "exception_message": message,
        "exception_type": type(exc).__name__,
        "traceback": traceback.format_exception_only(type(exc), exc),
        "current_inputs": {},
        "current_outputs": {},
        "timestamp": _now_ms(),
    }
