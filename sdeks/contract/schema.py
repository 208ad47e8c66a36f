"""JSON Schema export of the contract, for ``sdeks schema`` and docs/."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from sdeks.contract.task import (
    CompletionEvent,
    ErrorBody,
    SubmitResponse,
    TaskMessage,
    TaskRequest,
    TaskStatus,
    WebhookPayload,
)

SCHEMAS: dict[str, type[BaseModel]] = {
    "request": TaskRequest,
    "response": SubmitResponse,
    "status": TaskStatus,
    "event": CompletionEvent,
    "error": ErrorBody,
    "message": TaskMessage,
    "webhook": WebhookPayload,
}


def json_schema(name: str) -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of one contract document, by name."""
    try:
        model = SCHEMAS[name]
    except KeyError:
        raise ValueError(f"unknown schema {name!r}; choose one of: {', '.join(SCHEMAS)}") from None
    schema = model.model_json_schema(mode="validation")
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema.setdefault("title", model.__name__)
    return schema
