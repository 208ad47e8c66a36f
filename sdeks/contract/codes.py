"""Error codes: the machine-readable half of every error the system answers.

Kept apart from the models so validators can raise typed errors without an import cycle.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from pydantic_core import PydanticCustomError


class ErrorCode(StrEnum):
    """Every ``error.code`` a client may see; clients branch on these, never on message text."""

    BAD_REQUEST = "bad_request"
    MALFORMED_BODY = "malformed_body"
    MALFORMED_JSON = "malformed_json"
    INVALID_JSON = "invalid_json"
    VALIDATION_ERROR = "validation_error"
    UNKNOWN_RUNTIME = "unknown_runtime"
    UNSUPPORTED_TASKTYPE = "unsupported_tasktype"
    OVER_BUDGET = "over_budget"
    INVALID_ID = "invalid_id"
    INVALID_QUERY = "invalid_query"
    FORBIDDEN = "forbidden"
    NOT_FOUND = "not_found"
    METHOD_NOT_ALLOWED = "method_not_allowed"
    CONFLICT = "conflict"
    TASK_FINISHED = "task_finished"
    PAYLOAD_TOO_LARGE = "payload_too_large"
    UNSUPPORTED_MEDIA_TYPE = "unsupported_media_type"
    NO_MODEL = "no_model"
    UNKNOWN_MODEL = "unknown_model"
    AMBIGUOUS_MODEL = "ambiguous_model"
    UNSUPPORTED_MODEL = "unsupported_model"
    MODEL_LOAD_FAILED = "model_load_failed"
    TOKENIZER_MISSING = "tokenizer_missing"
    INVALID_IMAGE = "invalid_image"
    UNKNOWN_UPSCALER = "unknown_upscaler"
    UNKNOWN_LORA = "unknown_lora"
    INVALID_LORA = "invalid_lora"
    UNKNOWN_VAE = "unknown_vae"
    INVALID_VAE = "invalid_vae"
    INVALID_UPSCALER = "invalid_upscaler"
    TOO_LARGE = "too_large"
    AWS_UNAVAILABLE = "aws_unavailable"
    INTERNAL_ERROR = "internal_error"
    # answered by API Gateway itself (gateway responses), before the handler runs
    THROTTLED = "throttled"
    QUOTA_EXCEEDED = "quota_exceeded"
    CLIENT_ERROR = "client_error"
    SERVER_ERROR = "server_error"


def routing_error(code: ErrorCode, message: str, **context: Any) -> PydanticCustomError:
    """A validation error whose ``type`` is an :class:`ErrorCode`, so callers map on the type, not the text.

    ``context`` (the error's ``ctx``) carries what the answer's details list: the request field
    the error is about, what exists instead.
    """
    return PydanticCustomError(code.value, message, context or None)
