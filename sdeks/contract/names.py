"""Names that pick a file on a runtime (checkpoint, VAE, upscaler): names only, never paths.

A task chooses among the models an operator installed; it must not make a runtime open
any other file (``/etc/...``, ``../../other-tenant/model.safetensors``), which a path would.
The front door refuses a path with a 400 naming the field, and the runtime resolves names
inside its models directory only (:func:`sd_runtime.models.resolve`), so a task that
bypassed the API is refused there too.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator


def check_model_name(value: str) -> str:
    """``value`` if it is a plain name (A1111's ``name [hash]`` form included); ValueError for anything path-like."""
    name = value.strip()
    if not name:
        raise ValueError("a model name must not be empty")
    if "/" in name or "\\" in name or name.startswith(("~", ".")) or ":" in name.split(" [", 1)[0] or "\x00" in name:
        raise ValueError("models are chosen by name (GET /sdapi/v1/sd-models lists them), not by path")
    return value


ModelName = Annotated[str, AfterValidator(check_model_name)]
