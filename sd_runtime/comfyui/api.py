"""ComfyUI's HTTP + websocket API over the engine (the subset clients use to run workflows).

Routes (also under ``/api``, as current ComfyUI serves them): ``POST /prompt``,
``GET /prompt``, ``GET|POST /queue``, ``POST /interrupt``, ``GET|POST /history``,
``GET /history/{prompt_id}``, ``GET /view``, ``POST /upload/image``,
``GET /object_info[/{node_class}]``, ``GET /system_stats``, ``GET /embeddings``,
``GET /extensions`` and the ``/ws?clientId=`` progress websocket.

Prompts are validated when posted (400 with ComfyUI's ``error``/``node_errors``),
queued in order of their ``number`` and run one at a time on the engine's worker
thread, so they serialize with A1111 requests on the same process. Images live
in an in-memory :class:`FileStore` (bounded, oldest evicted first): ``/view``
looks a ``(type, subfolder, filename)`` key up in it and never touches the
filesystem, so no path can escape it.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import logging
import os
import sys
import threading
import time
import traceback
import uuid
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

from fastapi import APIRouter, FastAPI, Request, WebSocket, WebSocketDisconnect
from fastapi.responses import JSONResponse, Response

from sd_runtime.comfyui.graph import NodeFailed, Plan, PromptError, execute, validate
from sd_runtime.comfyui.nodes import NODES, Context, Interrupted, NodeExecutionError

log = logging.getLogger("sd_runtime.comfyui")

MAX_UPLOAD_BYTES = 32 * 1024 * 1024
MAX_PENDING = 1000
MAX_HISTORY = 1000
FILE_TYPES = ("output", "input", "temp")


def _now_ms() -> int:
    return int(time.time() * 1000)


class FileStore:
    """In-memory images keyed by ``(type, subfolder, filename)``; oldest evicted beyond the bounds."""

    def __init__(self, max_bytes: int = 512 * 1024 * 1024, max_files: int = 4000):
        self.max_bytes, self.max_files = max_bytes, max_files
        self._files: OrderedDict[tuple[str, str, str], bytes] = OrderedDict()
        self._size = 0
        self._counters: dict[tuple[str, str, str], int] = {}
        self._lock = threading.Lock()

    def put(self, kind: str, subfolder: str, filename: str, data: bytes) -> None:
        key = (kind, subfolder, filename)
        with self._lock:
            old = self._files.pop(key, None)
            if old is not None:
                self._size -= len(old)
            self._files[key] = data
            self._size += len(data)
            while len(self._files) > 1 and (self._size > self.max_bytes or len(self._files) > self.max_files):
                _, evicted = self._files.popitem(last=False)
                self._size -= len(evicted)

    def get(self, kind: str, subfolder: str, filename: str) -> bytes | None:
        with self._lock:
            return self._files.get((kind, subfolder, filename))

    def exists(self, kind: str, subfolder: str, filename: str) -> bool:
        with self._lock:
            return (kind, subfolder, filename) in self._files

    def next_name(self, kind: str, subfolder: str, prefix: str) -> str:
        """``<prefix>_00001_.png``, counting up per (type, subfolder, prefix) like ComfyUI's SaveImage."""
        with self._lock:
            key = (kind, subfolder, prefix)
            self._counters[key] = self._counters.get(key, 0) + 1
            return f"{prefix}_{self._counters[key]:05}_.png"

    def input_names(self) -> list[str]:
        with self._lock:
            return sorted(f"{sub}/{name}" if sub else name for kind, sub, name in self._files if kind == "input")

    def load_input(self, value: str) -> bytes | None:
        """LoadImage's ``image``: an uploaded name (``sub/name``, optional `` [output]`` suffix) or inline base64."""
        if not isinstance(value, str) or not value:
            return None
        name, kind = value, "input"
        for k in FILE_TYPES:
            if value.endswith(f" [{k}]"):
                name, kind = value[: -len(k) - 3], k
        sub, _, base = name.rpartition("/")
        data = self.get(kind, sub, base)
        if data is not None:
            return data
        return decode_base64_image(value)


def decode_base64_image(value: str) -> bytes | None:
    """Bytes of an inline image (``data:image/...;base64,`` or bare base64 of a PNG/JPEG/WebP), else None."""
    text = value.strip()
    if text.startswith("data:"):
        head, _, text = text.partition(",")
        if ";base64" not in head:
            return None
    elif len(text) < 32:
        return None
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return None
    if raw[:8] == b"\x89PNG\r\n\x1a\n" or raw[:3] == b"\xff\xd8\xff" or (raw[:4] == b"RIFF" and raw[8:12] == b"WEBP"):
        return raw
    return None


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
        send("execution_cached", {"nodes": [], "prompt_id": pid, "timestamp": _now_ms()}, record=True)
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
            )
            send("execution_success", {"prompt_id": pid, "timestamp": _now_ms()}, record=True)
        except NodeFailed as failed:
            status_str = "error"
            base = {
                "prompt_id": pid,
                "node_id": failed.node_id,
                "node_type": failed.node_type,
                "executed": failed.executed,
            }
            if isinstance(failed.exc, Interrupted):
                send("execution_interrupted", {**base, "timestamp": _now_ms()}, record=True)
            else:
                exc = failed.exc
                if not isinstance(exc, NodeExecutionError | ValueError):
                    log.error("prompt %s node %s (%s) failed", pid, failed.node_id, failed.node_type, exc_info=exc)
                message = getattr(exc, "message", None) or str(exc) or type(exc).__name__
                send(
                    "execution_error",
                    {
                        **base,
                        "exception_message": message,
                        "exception_type": type(exc).__name__,
                        "traceback": traceback.format_exception_only(type(exc), exc),
                        "current_inputs": {},
                        "current_outputs": {},
                        "timestamp": _now_ms(),
                    },
                    record=True,
                )
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
        with self._history_lock:
            self.history[pid] = entry
            while len(self.history) > MAX_HISTORY:
                self.history.popitem(last=False)
        # after the history entry exists, as ComfyUI does: a client may fetch it as soon as it reads this
        send("executing", {"node": None, "prompt_id": pid})

    def get_history(self, prompt_id: str | None = None, max_items: int | None = None) -> dict[str, Any]:
        with self._history_lock:
            if prompt_id is not None:
                return {prompt_id: self.history[prompt_id]} if prompt_id in self.history else {}
            items = list(self.history.items())
        if max_items is not None:
            items = items[-max_items:] if max_items > 0 else []
        return dict(items)


def _comfy_error(status: int, kind: str, message: str, details: str = "") -> JSONResponse:
    return JSONResponse(
        {"error": {"type": kind, "message": message, "details": details, "extra_info": {}}, "node_errors": {}},
        status_code=status,
    )


async def _json_body(request: Request) -> Any:
    raw = await request.body()
    if not raw:
        return {}
    import json

    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        return None


def _system_stats(engine: Any) -> dict[str, Any]:
    import torch

    try:
        ram_total = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        ram_free = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        ram_total = ram_free = 0
    device = str(engine.device)
    dev: dict[str, Any] = {"name": device, "type": device.split(":")[0], "index": None}
    if device.startswith("cuda") and torch.cuda.is_available():
        index = torch.device(device).index or 0
        free, total = torch.cuda.mem_get_info(index)
        dev.update(
            name=f"{device} {torch.cuda.get_device_name(index)}",
            index=index,
            vram_total=total,
            vram_free=free,
            torch_vram_total=torch.cuda.memory_reserved(index),
            torch_vram_free=torch.cuda.memory_reserved(index) - torch.cuda.memory_allocated(index),
        )
    else:
        dev.update(vram_total=ram_total, vram_free=ram_free, torch_vram_total=0, torch_vram_free=0)
    return {
        "system": {
            "os": os.name,
            "ram_total": ram_total,
            "ram_free": ram_free,
            "comfyui_version": "sdeks",
            "python_version": sys.version,
            "pytorch_version": torch.__version__,
            "embedded_python": False,
            "argv": sys.argv,
        },
        "devices": [dev],
    }


def create_router(state: ComfyState) -> APIRouter:
    router = APIRouter(tags=["comfyui"])
    engine = state.engine

    @router.post("/prompt")
    async def post_prompt(request: Request) -> JSONResponse:
        body = await _json_body(request)
        if not isinstance(body, dict):
            return _comfy_error(400, "invalid_prompt", "Request body must be a JSON object")
        if "prompt" not in body:
            return _comfy_error(400, "no_prompt", "No prompt provided", "No prompt provided")
        prompt = body["prompt"]
        try:
            plan = validate(prompt, state)
        except PromptError as exc:
            return JSONResponse(exc.body, status_code=400)
        if len(state.pending) >= MAX_PENDING:
            return _comfy_error(429, "queue_full", f"Queue is full ({MAX_PENDING} prompts pending)")
        prompt_id = body.get("prompt_id")
        if prompt_id is None:
            prompt_id = str(uuid.uuid4())
        elif not isinstance(prompt_id, str) or not 0 < len(prompt_id) <= 128:
            return _comfy_error(400, "invalid_prompt", "prompt_id must be a non-empty string")
        if prompt_id in state.history or any(i.prompt_id == prompt_id for i in [*state.pending, state.running] if i):
            return _comfy_error(400, "invalid_prompt", f"prompt_id {prompt_id!r} was already used")
        extra = body.get("extra_data") if isinstance(body.get("extra_data"), dict) else {}
        client_id = body.get("client_id")
        if isinstance(client_id, str):
            extra = {**extra, "client_id": client_id}
        number = body.get("number")
        if not isinstance(number, int) or isinstance(number, bool):
            number = state.next_number()
        item = QueueItem(
            number=number,
            prompt_id=prompt_id,
            prompt=prompt,
            extra_data=extra,
            plan=plan,
            client_id=extra.get("client_id") if isinstance(extra.get("client_id"), str) else None,
            outputs=plan.outputs,
        )
        state.enqueue(item, front=bool(body.get("front")))
        return JSONResponse({"prompt_id": prompt_id, "number": item.number, "node_errors": plan.node_errors})

    @router.get("/prompt")
    async def get_prompt() -> JSONResponse:
        return JSONResponse({"exec_info": {"queue_remaining": state.queue_remaining()}})

    @router.get("/queue")
    async def get_queue() -> JSONResponse:
        running = [state.running.as_list()] if state.running else []
        pending = [i.as_list() for i in sorted(state.pending, key=lambda i: i.number)]
        return JSONResponse({"queue_running": running, "queue_pending": pending})

    @router.post("/queue")
    async def post_queue(request: Request) -> Response:
        body = await _json_body(request)
        if isinstance(body, dict):
            if body.get("clear"):
                state.pending.clear()
            delete = body.get("delete")
            if isinstance(delete, list):
                state.pending[:] = [i for i in state.pending if i.prompt_id not in delete]
            state.broadcast_status()
        return Response(status_code=200)

    @router.post("/interrupt")
    async def interrupt(request: Request) -> Response:
        body = await _json_body(request)
        target = body.get("prompt_id") if isinstance(body, dict) else None
        running = state.running
        if running is not None and (target is None or target == running.prompt_id):
            engine.interrupt()
        return Response(status_code=200)

    @router.get("/history")
    async def history(max_items: int | None = None) -> JSONResponse:
        return JSONResponse(state.get_history(max_items=max_items))

    @router.get("/history/{prompt_id}")
    async def history_one(prompt_id: str) -> JSONResponse:
        return JSONResponse(state.get_history(prompt_id))

    @router.post("/history")
    async def post_history(request: Request) -> Response:
        body = await _json_body(request)
        if isinstance(body, dict):
            with state._history_lock:
                if body.get("clear"):
                    state.history.clear()
                for pid in body.get("delete") or []:
                    if isinstance(pid, str):
                        state.history.pop(pid, None)
        return Response(status_code=200)

    @router.get("/view")
    async def view(filename: str = "", subfolder: str = "", type: str = "output") -> Response:
        data = state.files.get(type, subfolder, filename) if filename else None
        if data is None:
            return Response(status_code=404)
        media = "image/png"
        if data[:3] == b"\xff\xd8\xff":
            media = "image/jpeg"
        elif data[:4] == b"RIFF":
            media = "image/webp"
        safe = "".join(c for c in filename if c.isalnum() or c in "._- ")[:200] or "image"
        return Response(data, media_type=media, headers={"Content-Disposition": f'filename="{safe}"'})

    @router.post("/upload/image")
    async def upload_image(request: Request) -> JSONResponse:
        try:
            form = await request.form(max_files=1, max_fields=16)
        except Exception as exc:  # malformed multipart
            return JSONResponse({"error": f"invalid multipart body: {type(exc).__name__}"}, status_code=400)
        upload = form.get("image")
        if upload is None or isinstance(upload, str):
            return Response(status_code=400)
        data = await upload.read(MAX_UPLOAD_BYTES + 1)
        if len(data) > MAX_UPLOAD_BYTES:
            return JSONResponse({"error": f"image larger than {MAX_UPLOAD_BYTES} bytes"}, status_code=413)
        kind = str(form.get("type") or "input")
        if kind not in FILE_TYPES:
            return JSONResponse({"error": f"type must be one of {list(FILE_TYPES)}"}, status_code=400)
        name = os.path.basename((upload.filename or "").replace("\\", "/"))
        parts = [p for p in str(form.get("subfolder") or "").replace("\\", "/").split("/") if p]
        if not name or name.startswith(".") or any(p in ("..", ".") for p in parts):
            return JSONResponse({"error": "invalid file name or subfolder"}, status_code=400)
        if not _is_image(data):
            return JSONResponse({"error": "not an image"}, status_code=400)
        subfolder = "/".join(parts)
        overwrite = str(form.get("overwrite") or "").lower() in ("true", "1")
        if not overwrite and state.files.exists(kind, subfolder, name):
            stem, dot, ext = name.rpartition(".")
            stem, ext = (stem, "." + ext) if dot else (name, "")
            i = 1
            while state.files.exists(kind, subfolder, f"{stem} ({i}){ext}"):
                i += 1
            name = f"{stem} ({i}){ext}"
        state.files.put(kind, subfolder, name, data)
        return JSONResponse({"name": name, "subfolder": subfolder, "type": kind})

    @router.get("/object_info")
    async def object_info() -> JSONResponse:
        return JSONResponse({name: nd.object_info(state) for name, nd in NODES.items()})

    @router.get("/object_info/{node_class}")
    async def object_info_one(node_class: str) -> JSONResponse:
        nd = NODES.get(node_class)
        return JSONResponse({node_class: nd.object_info(state)} if nd else {})

    @router.get("/system_stats")
    async def system_stats() -> JSONResponse:
        body = _system_stats(engine)
        model = engine.model.title if engine.model is not None else None
        body["sdeks"] = {"model": model, "loading": engine.loading, "error": engine.load_error}
        # ready once the startup model is in (a prompt would only queue behind the load)
        return JSONResponse(body, status_code=503 if model is None and engine.loading else 200)

    @router.get("/embeddings")
    async def embeddings() -> JSONResponse:
        return JSONResponse([])

    @router.get("/extensions")
    async def extensions() -> JSONResponse:
        return JSONResponse([])

    @router.websocket("/ws")
    async def ws(websocket: WebSocket) -> None:
        await websocket.accept()
        state.hub.loop = asyncio.get_running_loop()
        sid = websocket.query_params.get("clientId") or uuid.uuid4().hex
        q = state.hub.register(sid)

        async def drain() -> None:
            with contextlib.suppress(WebSocketDisconnect, RuntimeError):
                while True:
                    await websocket.receive_text()

        receiver = asyncio.create_task(drain())
        try:
            await websocket.send_json({"type": "status", "data": {"status": state.status_data(), "sid": sid}})
            while True:
                getter = asyncio.create_task(q.get())
                done, _ = await asyncio.wait({getter, receiver}, return_when=asyncio.FIRST_COMPLETED)
                if getter not in done:
                    getter.cancel()
                    break
                await websocket.send_json(getter.result())
        except (WebSocketDisconnect, RuntimeError):
            pass
        finally:
            receiver.cancel()
            state.hub.unregister(sid, q)

    return router


def _is_image(data: bytes) -> bool:
    return (
        data[:8] == b"\x89PNG\r\n\x1a\n"
        or data[:3] == b"\xff\xd8\xff"
        or (data[:4] == b"RIFF" and data[8:12] == b"WEBP")
    )


def mount(app: FastAPI, engine: Any) -> ComfyState:
    """Add the ComfyUI routes to ``app`` (at ``/`` and under ``/api``), sharing ``engine``."""
    state = ComfyState(engine)
    router = create_router(state)
    app.include_router(router)
    app.include_router(router, prefix="/api")
    app.state.comfyui = state
    return state
