"""Turning pydantic validation errors into the API's error body and CLI messages."""

from __future__ import annotations

import re

from pydantic import ValidationError

from sdeks.contract.codes import ErrorCode
from sdeks.contract.task import ErrorBody, ErrorDetail

MODEL_NAME = re.compile(r"[A-Z][a-z0-9]+(?:[A-Z][A-Za-z0-9]*)*")
"""A model class name (``Txt2ImgContent``), as opposed to a field such as ``CLIP_stop_at_last_layers``."""


def field_path(loc: tuple[int | str, ...]) -> str:
    """``("task", "content", "width")`` → ``task.content.width``; list indices as ``[0]``.

    Pydantic inserts the model class name for tagged members (e.g. ``Txt2ImgContent``);
    they say nothing to a user, so they are dropped.
    """
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif MODEL_NAME.fullmatch(part) or part.startswith("function-"):
            continue
        else:
            out += f".{part}" if out else part
    return out


def describe(exc: ValidationError) -> list[dict[str, str]]:
    """One ``{"field", "message"}`` per problem, ready to show a user."""
    problems = []
    for err in exc.errors(include_url=False, include_input=False):
        message = err["msg"].removeprefix("Value error, ")
        problems.append({"field": field_path(err["loc"]) or "(body)", "message": message})
    return problems


def summarize(exc: ValidationError) -> str:
    """A one-line message that names every offending field."""
    return "; ".join(f"{p['field']}: {p['message']}" for p in describe(exc))


def error_body(code: str, message: str, details: object = None) -> dict:
    return ErrorBody(error=ErrorDetail(code=code, message=message, details=details)).model_dump(mode="json")


def validation_error_body(exc: ValidationError) -> dict:
    return error_body(ErrorCode.VALIDATION_ERROR, summarize(exc), describe(exc))
