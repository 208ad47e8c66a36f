"""``create_app``: the FastAPI application around one :class:`Engine`.

The dialect routers (A1111 and ComfyUI) are mounted on the same app and share
the engine. The initial model loads on the worker thread after startup, so the
server answers ``/healthz`` (503 until the model is ready) from the first second.

A configured model that is not there does not stop the server: ``/livez`` (the
process serves) stays 200 so Kubernetes does not restart it in a loop on a paid GPU
node, ``/healthz`` says ``no_model`` with the reason (:mod:`sdeks.contract.health`),
the agent fails the tasks it takes with that reason so the queue drains and the node
scales away, and the runtime keeps looking for the file: once ``sdeks models push``
has put it there, it loads and serves.
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
from sd_runtime.models import ModelRef, missing_model_reason
from sdeks.contract import RUNTIME_LOADING, RUNTIME_NO_MODEL

log = logging.getLogger("sd_runtime.app")

LOOK_AGAIN_S = 15.0
"""How often a runtime whose configured model is missing looks for it again (``--model-recheck-s``)."""


def create_app(
    engine: Engine,
    initial_model: ModelRef | None = None,
    missing: str | None = None,
    recheck_s: float = LOOK_AGAIN_S,
) -> FastAPI:
    """The runtime's HTTP app; loads ``initial_model`` in the background at startup.

    ``missing``: the configured model that was not found; the app reports it and, every
    ``recheck_s``, looks for it again and loads it once it is there.
    """

    async def first_load(ref: ModelRef) -> None:
        try:
            await engine.load(ref)
        except RuntimeApiError as exc:
            log.error("initial model load failed: %s", exc.message)

    async def look_for(spec: str) -> None:
        while engine.model is None:
            await asyncio.sleep(recheck_s)
            try:
                ref = await asyncio.to_thread(engine.resolve, spec, True)  # the operator's --model: a path
            except RuntimeApiError:
                continue
            if engine.model is None:  # a failed load (a half-copied file) is tried again next round
                log.info("model %s appeared; loading it", ref.title)
                engine.loading = ref.title
                await first_load(ref)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        task = None
        if initial_model is not None:
            engine.loading = initial_model.title
            task = asyncio.create_task(first_load(initial_model))
        elif missing is not None:
            engine.load_error = missing_model_reason(missing, engine.models_dir)
            log.error("%s; serving without a model until it appears", engine.load_error)
            task = asyncio.create_task(look_for(missing))
        else:
            engine.load_error = "no model in the models dir"
            log.error("no model in the models dir; serving without one")
        yield
        if task is not None and not task.done():
            task.cancel()
        engine.shutdown()

    app = FastAPI(title="sdeks sd_runtime", version="1", lifespan=lifespan)
    app.state.engine = engine

    for error_type in (RuntimeApiError, RequestValidationError):
        app.add_exception_handler(error_type, handle_error)

    @app.get("/livez")
    async def livez() -> JSONResponse:
        """The server runs (with or without a model): the liveness and startup probes."""
        return JSONResponse({"status": "alive"})

    @app.get("/healthz")
    async def healthz() -> JSONResponse:
        """Ready to run tasks (a model is loaded); else why not (:mod:`sdeks.contract.health`)."""
        if engine.model is not None:
            return JSONResponse({"status": "ok", "model": engine.model.title, "device": engine.device})
        status = RUNTIME_LOADING if engine.loading else RUNTIME_NO_MODEL
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
