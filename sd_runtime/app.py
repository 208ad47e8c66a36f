"""``create_app``: the FastAPI application around one :class:`Engine`.

Dialect routers (A1111 now, ComfyUI later) are mounted on the same app and share
the engine. The initial model loads on the worker thread after startup, so the
server answers ``/healthz`` (503 until the model is ready) from the first second.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import ValidationError

from sd_runtime import a1111, comfyui
from sd_runtime.engine import Engine
from sd_runtime.errors import ApiError, error_response, validation_response
from sd_runtime.imageio import ImageInputError
from sd_runtime.models import ModelError, ModelRef
from sd_runtime.upscale import UpscaleError

log = logging.getLogger("sd_runtime.app")

_MODEL_ERROR_STATUS = {"unknown_model": 404, "no_model": 503}


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
                except ModelError as exc:
                    log.error("initial model load failed: %s", exc.message)

            task = asyncio.create_task(first_load())
        yield
        if task is not None and not task.done():
            task.cancel()
        engine.shutdown()

    app = FastAPI(title="sdeks sd_runtime", version="1", lifespan=lifespan)
    app.state.engine = engine

    @app.exception_handler(ApiError)
    async def _api_error(_: Request, exc: ApiError) -> JSONResponse:
        return error_response(exc.status, exc.code, exc.message, exc.details)

    @app.exception_handler(ValidationError)
    async def _validation(_: Request, exc: ValidationError) -> JSONResponse:
        return validation_response(exc)

    @app.exception_handler(RequestValidationError)
    async def _request_validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        return error_response(422, "validation_error", "invalid request", exc.errors())

    @app.exception_handler(ImageInputError)
    async def _image(_: Request, exc: ImageInputError) -> JSONResponse:
        return error_response(422, "invalid_image", str(exc), {"field": exc.field})

    @app.exception_handler(UpscaleError)
    async def _upscale(_: Request, exc: UpscaleError) -> JSONResponse:
        return error_response(400 if exc.code == "unknown_upscaler" else 422, exc.code, exc.message, exc.details)

    @app.exception_handler(ModelError)
    async def _model(_: Request, exc: ModelError) -> JSONResponse:
        details = exc.details if exc.details is not None else {"available": [r.title for r in engine.models()]}
        return error_response(_MODEL_ERROR_STATUS.get(exc.code, 422), exc.code, exc.message, details)

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
        return engine.resolve(model)
    found = engine.models()
    return found[0] if found else None


def default_models_dir(model: str | None) -> Path | None:
    if model and Path(model).exists():
        return Path(model).resolve().parent
    return None
