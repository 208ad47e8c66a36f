"""``create_app``: the FastAPI application around one :class:`Engine`.

The dialect routers (A1111 and ComfyUI) are mounted on the same app and share
the engine. The initial model loads on the worker thread after startup, so the
server answers ``/healthz`` (503 until the model is ready) from the first second.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from sd_runtime import a1111, comfyui
from sd_runtime.engine import Engine
from sd_runtime.errors import RuntimeApiError, handle_error
from sd_runtime.models import ModelRef

log = logging.getLogger("sd_runtime.app")


def create_app(engine: Engine, initial_model: ModelRef | None = None) -> FastAPI:
    """The runtime's HTTP app; loads ``initial_model`` in the background at startup."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        task = None
        if initial_model is not None:
            engine.loading = initial_model.title

            async def first_load() -> None:
                try:
                    await engine.load(initial_model)
                except RuntimeApiError as exc:
                    log.error("initial model load failed: %s", exc.message)

            task = asyncio.create_task(first_load())
        yield
        if task is not None and not task.done():
            task.cancel()
        engine.shutdown()

    app = FastAPI(title="sdeks sd_runtime", version="1", lifespan=lifespan)
    app.state.engine = engine

    for error_type in (RuntimeApiError, RequestValidationError):
        app.add_exception_handler(error_type, handle_error)

    @app.get("/healthz")
    async def healthz() -> JSONResponse:
        if engine.model is not None:
            return JSONResponse({"status": "ok", "model": engine.model.title, "device": engine.device})
        status = "loading" if engine.loading else "no_model"
        return JSONResponse(
            {"status": status, "model": None, "loading": engine.loading, "error": engine.load_error}, status_code=503
        )

    app.include_router(a1111.create_router(engine))
    comfyui.mount(app, engine)
    return app


def resolve_initial(engine: Engine, model: str | None) -> ModelRef | None:
    """The model to load at startup: ``--model`` (path or name in the models dir), else the first one found."""
    if model:
        return engine.resolve(model, allow_paths=True)
    found = engine.models()
    return found[0] if found else None


def default_models_dir(model: str | None) -> Path | None:
    if model and Path(model).exists():
        return Path(model).resolve().parent
    return None
