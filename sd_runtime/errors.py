"""The runtime's one error type and its one exception handler.

Every error a request can cause is a :class:`RuntimeApiError` subclass: the
subclass fixes the HTTP status and the contract's :class:`ErrorCode`, the raise
site gives the message (naming the offending field) and optional details. One
handler renders them all, so every dialect answers with the same shape:

- A1111 routes: the contract's ``{"error": {code, message, details}}`` plus
  A1111's ``detail`` (a message, or the problem list for a 422);
- ComfyUI routes (tagged ``comfyui``): ComfyUI's ``{"error": {type, message,
  details, extra_info}, "node_errors": {}}``, which its clients read.

FastAPI's :class:`RequestValidationError` (a typed body that does not validate)
goes through the same handler as a 422 naming each field, or a 400 when the
body is not JSON at all.
"""

from __future__ import annotations

import json
from typing import Any, ClassVar

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from sdeks.contract import ErrorCode, error_body


class RuntimeApiError(Exception):
    """An error answered to the client; subclasses fix ``status`` and ``code``."""

    status: ClassVar[int] = 500
    code: ClassVar[str] = ErrorCode.INTERNAL_ERROR

    def __init__(self, message: str, details: Any = None):
        super().__init__(message)
        self.message, self.details = message, details


class BadRequestError(RuntimeApiError):
    status, code = 400, ErrorCode.BAD_REQUEST


class InvalidJsonError(BadRequestError):
    code = ErrorCode.INVALID_JSON


class UnsupportedMediaTypeError(RuntimeApiError):
    status, code = 415, ErrorCode.UNSUPPORTED_MEDIA_TYPE


class UnknownUpscalerError(BadRequestError):
    code = ErrorCode.UNKNOWN_UPSCALER


class NotFoundError(RuntimeApiError):
    status, code = 404, ErrorCode.NOT_FOUND


class InvalidInputError(RuntimeApiError):
    """A well-formed request whose values the runtime cannot use (FastAPI's 422)."""

    status, code = 422, ErrorCode.VALIDATION_ERROR


class InvalidImageError(InvalidInputError):
    code = ErrorCode.INVALID_IMAGE

    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}", {"field": field})
        self.field = field


class TooLargeError(InvalidInputError):
    code = ErrorCode.TOO_LARGE


class NoModelError(RuntimeApiError):
    """No model is loaded (still loading, or the load failed): retry later."""

    status, code = 503, ErrorCode.NO_MODEL


class ComfyError(BadRequestError):
    """A ComfyUI request error; ``kind`` is ComfyUI's ``error.type`` (``no_prompt``, ``invalid_prompt`` ...)."""

    def __init__(self, kind: str, message: str, details: str = "", status: int = 400):
        super().__init__(message, details)
        self.kind, self.status = kind, status  # type: ignore[misc]  (ComfyUI also answers 429/413 this way)


def field_name(loc: tuple[int | str, ...]) -> str:
    """``("body", "imageList", 0, "data")`` → ``imageList[0].data``; ``(body)`` for the body as a whole.

    Not the contract's ``field_path``: that one drops capitalised parts (pydantic's union
    member names), and A1111 has capitalised fields (``CLIP_stop_at_last_layers``).
    The runtime's bodies have no unions, so every part is a field.
    """
    loc = loc[1:] if loc[:1] == ("body",) else loc
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(body)"


def from_request_validation(exc: RequestValidationError) -> RuntimeApiError:
    """A typed body that did not validate → 400 (not JSON) or 422 naming every field."""
    errors = exc.errors()
    if any(e.get("type") == "json_invalid" for e in errors):
        return InvalidJsonError(f"request body is not valid JSON: {errors[0].get('ctx', {}).get('error', '')}")
    raw = next((e["input"] for e in errors if isinstance(e.get("input"), bytes)), None)
    if raw is not None:  # a body without a JSON Content-Type: FastAPI does not parse it (no CSRF via simple requests)
        try:
            json.loads(raw)
        except (ValueError, UnicodeDecodeError) as err:
            return InvalidJsonError(f"request body is not valid JSON: {err}")
        return UnsupportedMediaTypeError("send the JSON body with Content-Type: application/json")
    problems = []
    for err in errors:
        message = str(err["msg"]).removeprefix("Value error, ")
        problems.append({"field": field_name(tuple(err.get("loc", ()))), "message": message})
    return InvalidInputError("; ".join(f"{p['field']}: {p['message']}" for p in problems), problems)


def _is_comfyui(request: Request) -> bool:
    route = request.scope.get("route")
    return "comfyui" in (getattr(route, "tags", None) or ())


def render(error: RuntimeApiError, comfyui: bool) -> JSONResponse:
    """The JSON answer for ``error`` in the dialect of the route that raised it."""
    if comfyui:
        kind = getattr(error, "kind", None) or error.code
        details = error.details if isinstance(error.details, str) else ""
        body = {"error": {"type": kind, "message": error.message, "details": details, "extra_info": {}}}
        return JSONResponse({**body, "node_errors": {}}, status_code=error.status)
    body = error_body(error.code, error.message, error.details)
    # A1111 clients read ``detail``: the problem list of a 422, else the message
    problems = isinstance(error, InvalidInputError) and isinstance(error.details, list)
    body["detail"] = error.details if problems else error.message
    return JSONResponse(body, status_code=error.status)


async def handle_error(request: Request, exc: Exception) -> JSONResponse:
    """The app's one exception handler (registered for RuntimeApiError and RequestValidationError)."""
    comfyui = _is_comfyui(request)
    if isinstance(exc, RequestValidationError):
        error = from_request_validation(exc)
        if comfyui:
            error = ComfyError("invalid_prompt", error.message, error.message)
    elif isinstance(exc, RuntimeApiError):
        error = exc
    else:  # pragma: no cover - only registered for the two types above
        raise exc
    return render(error, comfyui)
