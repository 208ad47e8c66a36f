"""The runtime's health answer, as sd_runtime writes it and the queue agent reads it.

``GET /healthz`` is 200 once a model is loaded. Otherwise it is 503 with
``{"status": "loading" | "no_model", "error": reason | null, ...}``: ``loading`` is
worth waiting for; ``no_model`` is not — the configured model file is missing or
failed to load — and the agent then fails the tasks it takes with the reason,
so the queue drains and the GPU node scales away instead of idling for nothing.
"""

from __future__ import annotations

from typing import Any, Final

RUNTIME_LOADING: Final = "loading"
RUNTIME_NO_MODEL: Final = "no_model"
MAX_REASON_CHARS: Final = 300


def no_model_reason(body: Any) -> str | None:
    """Why a runtime that answers its health probe cannot run any task; ``None`` if it may still become ready."""
    if not isinstance(body, dict) or body.get("status") != RUNTIME_NO_MODEL:
        return None
    error = body.get("error")
    return str(error)[:MAX_REASON_CHARS] if error else "the runtime has no model loaded"
