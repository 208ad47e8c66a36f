"""One error shape for every 4xx: the contract's ``{"error": {...}}`` plus A1111's ``detail``.

sdeks clients read ``error.code/message/details`` (``sdeks.contract.error_body``);
A1111 clients read ``detail`` (a message, or FastAPI's problem list for 422).
"""

from __future__ import annotations

import json
from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ValidationError

from sdeks.contract import describe, error_body, validation_error_body


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str, details: Any = None):
        super().__init__(message)
        self.status, self.code, self.message, self.details = status, code, message, details


def error_response(status: int, code: str, message: str, details: Any = None) -> JSONResponse:
    body = error_body(code, message, details)
    body["detail"] = message
    return JSONResponse(body, status_code=status)


def validation_response(exc: ValidationError) -> JSONResponse:
    body = validation_error_body(exc)
    body["detail"] = describe(exc)
    return JSONResponse(body, status_code=422)


async def read_json_object(request: Request) -> dict[str, Any]:
    """The request body as a JSON object, or a 400/422 ApiError."""
    raw = await request.body()
    try:
        body = json.loads(raw or b"{}")
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ApiError(400, "invalid_json", f"request body is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise ApiError(422, "validation_error", "request body must be a JSON object")
    return body


def validate(model: type[BaseModel], body: dict[str, Any]) -> Any:
    """``model.model_validate`` whose failure becomes the contract's 422 (raised as ValidationError)."""
    return model.model_validate(body)
