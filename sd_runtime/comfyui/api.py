"""ComfyUI's HTTP + websocket API over the engine (the subset clients use to run workflows).

Routes (also under ``/api``, as current ComfyUI serves them): ``POST /prompt``,
``GET /prompt``, ``GET|POST /queue``, ``POST /interrupt``, ``POST /free``, ``GET|POST /history``,
``GET /history/{prompt_id}``, ``GET /view``, ``POST /upload/image``,
``GET /object_info[/{node_class}]``, ``GET /system_stats``, ``GET /embeddings``,
``GET /extensions`` and the ``/ws?clientId=`` progress websocket.

Request bodies are typed (documented on the runtime's ``/docs``); a body that
does not validate, like a rejected prompt, is a 400 in ComfyUI's
``{"error": {type, message, details, extra_info}, "node_errors": {}}`` shape
(rendered by :mod:`sd_runtime.errors`, which knows these routes by their
``comfyui`` tag). Prompts are validated when posted and queued
(:mod:`.prompt_queue`); images live in the in-memory :class:`~.files.FileStore`.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import uuid
from typing import Any

from fastapi import APIRouter, Body, FastAPI, Form, UploadFile, WebSocket, WebSocketDisconnect
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field

from sd_runtime import embeddings
from sd_runtime.comfyui.bodies import ComfyJsonBodies
from sd_runtime.comfyui.files import FILE_TYPES
from sd_runtime.comfyui.graph import PromptError, validate
from sd_runtime.comfyui.nodes import NODES
from sd_runtime.comfyui.prompt_queue import MAX_PENDING, ComfyState, QueueItem
from sd_runtime.comfyui.system import system_stats
from sd_runtime.errors import ComfyError
from sd_runtime.imageio import image_format, media_type

MAX_UPLOAD_BYTES = 32 * 1024 * 1024


class PromptBody(BaseModel):
    """``POST /prompt``: a workflow to queue, as ComfyUI clients send it."""

    model_config = ConfigDict(extra="forbid")

    prompt: dict[str, Any] | None = Field(
        default=None, description="API-format workflow (node id → {class_type, inputs}), as 'Save (API format)'"
    )
    prompt_id: str | None = Field(default=None, min_length=1, max_length=128, description="default: a new uuid4")
    client_id: str | None = Field(default=None, max_length=256, description="websocket client to send progress to")
    number: int | None = Field(default=None, description="queue position (lower runs first); default: next")
    front: bool = Field(default=False, description="queue before every pending prompt")
    extra_data: dict[str, Any] = Field(default_factory=dict, description="kept with the prompt in /queue, /history")


class DeleteBody(BaseModel):
    """``POST /queue`` and ``POST /history``: clear everything, or delete prompts by id."""

    model_config = ConfigDict(extra="forbid")

    clear: bool = False
    delete: list[str] = Field(default_factory=list, max_length=MAX_PENDING)


class InterruptBody(BaseModel):
    """``POST /interrupt``: the prompt to interrupt (default: whichever is running)."""

    model_config = ConfigDict(extra="forbid")

    prompt_id: str | None = None


class FreeBody(BaseModel):
    """``POST /free``: what to release (ComfyUI's flags; both drop the node cache here)."""

    model_config = ConfigDict(extra="forbid")

    unload_models: bool = Field(
        default=False,
        description="drop the node cache (loaded VAEs, encodings, latents); the engine's one checkpoint stays "
        "loaded: the same process serves A1111 requests and its readiness on it",
    )
    free_memory: bool = Field(default=False, description="drop the node cache, collect garbage, empty the CUDA cache")


def free(state: ComfyState, body: FreeBody) -> None:
    """ComfyUI's ``/free`` as far as this runtime goes: the node cache is all it holds beyond the engine's model."""
    if not (body.unload_models or body.free_memory):
        return
    state.cache.clear()
    gc.collect()
    if str(state.engine.device).startswith("cuda"):
        import torch

        torch.cuda.empty_cache()


def queue_item(body: PromptBody, state: ComfyState) -> QueueItem:
    """Validate the workflow and the ids of a ``POST /prompt``; :class:`ComfyError` or a PromptError if refused."""
    if body.prompt is None:
        raise ComfyError("no_prompt", "No prompt provided", "No prompt provided")
    plan = validate(body.prompt, state)
    if len(state.pending) >= MAX_PENDING:
        raise ComfyError("queue_full", f"Queue is full ({MAX_PENDING} prompts pending)", status=429)
    prompt_id = body.prompt_id or str(uuid.uuid4())
    if state.is_known(prompt_id):
        raise ComfyError("invalid_prompt", f"prompt_id {prompt_id!r} was already used")
    extra = {**body.extra_data, "client_id": body.client_id} if body.client_id else body.extra_data
    client_id = extra.get("client_id")
    return QueueItem(
        number=body.number if body.number is not None else state.next_number(),
        prompt_id=prompt_id,
        prompt=body.prompt,
        extra_data=extra,
        plan=plan,
        client_id=client_id if isinstance(client_id, str) else None,
        outputs=plan.outputs,
    )


def _prompt_routes(router: APIRouter, state: ComfyState) -> None:
    @router.post("/prompt")
    async def post_prompt(body: PromptBody) -> JSONResponse:
        try:
            item = queue_item(body, state)
        except PromptError as exc:
            return JSONResponse(exc.body, status_code=400)
        state.enqueue(item, front=body.front)
        return JSONResponse({"prompt_id": item.prompt_id, "number": item.number, "node_errors": item.plan.node_errors})

    @router.get("/prompt")
    async def get_prompt() -> dict[str, Any]:
        return state.status_data()


def _queue_routes(router: APIRouter, state: ComfyState) -> None:
    @router.get("/queue")
    async def get_queue() -> dict[str, Any]:
        running = [state.running.as_list()] if state.running else []
        pending = [i.as_list() for i in sorted(state.pending, key=lambda i: i.number)]
        return {"queue_running": running, "queue_pending": pending}

    @router.post("/queue")
    async def post_queue(body: DeleteBody | None = Body(default=None)) -> Response:
        if body is not None:
            state.remove_pending(body.clear, body.delete)
        return Response(status_code=200)

    @router.post("/free")
    async def post_free(body: FreeBody | None = Body(default=None)) -> Response:
        if body is not None:
            free(state, body)
        return Response(status_code=200)

    @router.post("/interrupt")
    async def interrupt(body: InterruptBody | None = Body(default=None)) -> Response:
        target = body.prompt_id if body else None
        running = state.running
        if running is not None and (target is None or target == running.prompt_id):
            state.engine.interrupt()
        return Response(status_code=200)


def _history_routes(router: APIRouter, state: ComfyState) -> None:
    @router.get("/history")
    async def history(max_items: int | None = None) -> dict[str, Any]:
        return state.get_history(max_items=max_items)

    @router.get("/history/{prompt_id}")
    async def history_one(prompt_id: str) -> dict[str, Any]:
        return state.get_history(prompt_id)

    @router.post("/history")
    async def post_history(body: DeleteBody | None = Body(default=None)) -> Response:
        if body is not None:
            state.remove_history(body.clear, body.delete)
        return Response(status_code=200)


def upload_name(filename: str | None, subfolder: str) -> tuple[str, str]:
    """(name, subfolder) of an upload: base name only, no hidden files, no ``.``/``..`` segments."""
    name = os.path.basename((filename or "").replace("\\", "/"))
    parts = [p for p in subfolder.replace("\\", "/").split("/") if p]
    if not name or name.startswith(".") or any(p in ("..", ".") for p in parts):
        raise ComfyError("invalid_upload", "invalid file name or subfolder")
    return name, "/".join(parts)


def _file_routes(router: APIRouter, state: ComfyState) -> None:
    files = state.files

    @router.get("/view")
    async def view(filename: str = "", subfolder: str = "", type: str = "output") -> Response:
        data = files.get(type, subfolder, filename) if filename else None
        if data is None:
            return Response(status_code=404)
        safe = "".join(c for c in filename if c.isalnum() or c in "._- ")[:200] or "image"
        return Response(data, media_type=media_type(data), headers={"Content-Disposition": f'filename="{safe}"'})

    @router.post("/upload/image")
    async def upload_image(
        image: UploadFile,
        type: str = Form("input"),
        subfolder: str = Form(""),
        overwrite: str = Form(""),
    ) -> dict[str, str]:
        data = await image.read(MAX_UPLOAD_BYTES + 1)
        if len(data) > MAX_UPLOAD_BYTES:
            raise ComfyError("too_large", f"image larger than {MAX_UPLOAD_BYTES} bytes", status=413)
        if type not in FILE_TYPES:
            raise ComfyError("invalid_upload", f"type must be one of {list(FILE_TYPES)}")
        name, folder = upload_name(image.filename, subfolder)
        if image_format(data) is None:
            raise ComfyError("invalid_upload", "not an image (PNG, JPEG or WebP)")
        if overwrite.lower() not in ("true", "1"):
            name = files.free_name(type, folder, name)
        files.put(type, folder, name, data)
        return {"name": name, "subfolder": folder, "type": type}


def _info_routes(router: APIRouter, state: ComfyState) -> None:
    engine = state.engine

    @router.get("/object_info")
    async def object_info() -> dict[str, Any]:
        return {name: nd.object_info(state) for name, nd in NODES.items()}

    @router.get("/object_info/{node_class}")
    async def object_info_one(node_class: str) -> dict[str, Any]:
        nd = NODES.get(node_class)
        return {node_class: nd.object_info(state)} if nd else {}

    @router.get("/system_stats")
    async def get_system_stats() -> JSONResponse:
        body = system_stats(engine)
        model = engine.model.title if engine.model is not None else None
        body["sdeks"] = {"model": model, "loading": engine.loading, "error": engine.load_error}
        # ready once the startup model is in (a prompt would only queue behind the load)
        return JSONResponse(body, status_code=503 if model is None and engine.loading else 200)

    @router.get("/embeddings")
    async def list_embeddings() -> list[str]:
        """ComfyUI's list: each file of ``embeddings/`` by its path there without the extension (names, not paths)."""
        return [f.file.removesuffix(".safetensors") for f in embeddings.discover(engine.models_dir)]

    @router.get("/extensions")
    async def extensions() -> list[str]:
        return []


def _ws_route(router: APIRouter, state: ComfyState) -> None:
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


def create_router(state: ComfyState) -> APIRouter:
    """Every ComfyUI route, tagged ``comfyui`` (the error handler answers these in ComfyUI's shape)."""
    router = APIRouter(tags=["comfyui"])
    for add in (_prompt_routes, _queue_routes, _history_routes, _file_routes, _info_routes, _ws_route):
        add(router, state)
    return router


def mount(app: FastAPI, engine: Any) -> ComfyState:
    """Add the ComfyUI routes to ``app`` (at ``/`` and under ``/api``), sharing ``engine``."""
    state = ComfyState(engine)
    app.add_middleware(ComfyJsonBodies)
    router = create_router(state)
    app.include_router(router)
    app.include_router(router, prefix="/api")
    app.state.comfyui = state
    return state
