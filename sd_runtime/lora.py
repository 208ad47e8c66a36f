"""LoRAs: found in the models dir's ``Lora/`` folder, named by A1111's prompt syntax or ComfyUI's
``LoraLoader``, applied for one request and removed after it.

A1111 writes ``<lora:name:weight>`` in the prompt (several allowed; ``<lora:name>`` is
weight 1; ``<lora:name:te:unet>`` or ``te=``/``unet=`` give the text-encoder and UNet
weights apart). The tags are removed from the text that is encoded. A name is looked up
among the discovered files only (file stem, or the path relative to ``Lora/`` as ComfyUI
lists it), so a name can never reach a file outside that folder; an unknown name is a 400
naming it.

Loading goes through diffusers' ``load_lora_weights`` (PEFT), which reads the kohya
layout A1111 users bring as well as diffusers' own; ``unload_lora_weights`` afterwards
restores the model exactly, so the next request is unaffected.
"""

from __future__ import annotations

import contextlib
import logging
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sd_runtime import named_files
from sd_runtime.errors import BadRequestError, InvalidInputError
from sd_runtime.named_files import NamedFile
from sdeks.contract import ErrorCode

log = logging.getLogger("sd_runtime.lora")

LORA_DIR = "Lora"
MAX_LORAS_PER_REQUEST = 8
_TAG = re.compile(r"<lora:([^>]*)>", re.IGNORECASE)


class UnknownLoraError(BadRequestError):
    code = ErrorCode.UNKNOWN_LORA


class InvalidLoraError(InvalidInputError):
    code = ErrorCode.INVALID_LORA


LoraRef = NamedFile
"""A LoRA file: ``name`` (stem, as A1111 lists it) and ``file`` (relative to ``Lora/``, as ComfyUI does)."""


def a1111_entry(ref: LoraRef) -> dict[str, Any]:
    """One entry of ``GET /sdapi/v1/loras`` (the path relative to the models dir, never the server's)."""
    return {"name": ref.name, "alias": ref.name, "path": f"{LORA_DIR}/{ref.file}", "metadata": {}}


@dataclass(frozen=True)
class LoraUse:
    """A LoRA applied with a weight per component (``unet``, ``text_encoder``)."""

    ref: LoraRef
    unet: float = 1.0
    text_encoder: float = 1.0


@dataclass(frozen=True)
class LoraTag:
    """A ``<lora:...>`` tag as written: the name and the two weights."""

    name: str
    unet: float
    text_encoder: float


def discover(models_dir: Path | None) -> list[LoraRef]:
    """The LoRA files in the models dir's ``Lora/`` folder."""
    return named_files.discover(models_dir, LORA_DIR)


def _weight(text: str, field: str, tag: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise InvalidInputError(f"{field}: {tag}: weight {text!r} is not a number") from None
    if not -100.0 <= value <= 100.0:
        raise InvalidInputError(f"{field}: {tag}: weight {value:g} is outside -100..100")
    return value


def _parse_tag(body: str, field: str) -> LoraTag:
    """``name[:te[:unet]]`` or ``name:te=x:unet=y`` (A1111's forms) → a :class:`LoraTag`."""
    tag = f"<lora:{body}>"
    name, *args = body.split(":")
    if not name.strip() or len(args) > 2:
        raise InvalidInputError(f"{field}: {tag}: expected <lora:name>, <lora:name:weight> or <lora:name:te:unet>")
    named = {}
    positional = []
    for arg in args:
        key, eq, value = arg.partition("=")
        if eq:
            if key.strip() not in ("te", "unet"):
                raise InvalidInputError(f"{field}: {tag}: unknown argument {key!r} (te= or unet=)")
            named[key.strip()] = _weight(value, field, tag)
        else:
            positional.append(_weight(arg, field, tag))
    te = named.get("te", positional[0] if positional else 1.0)
    unet = named.get("unet", positional[1] if len(positional) > 1 else te)
    return LoraTag(name=name.strip(), unet=unet, text_encoder=te)


def parse_prompt(prompt: str, field: str = "prompt") -> tuple[str, list[LoraTag]]:
    """The prompt without its ``<lora:...>`` tags (the text to encode), and the tags in order."""
    tags = [_parse_tag(m.group(1), field) for m in _TAG.finditer(prompt)]
    if len(tags) > MAX_LORAS_PER_REQUEST:
        raise InvalidInputError(f"{field}: {len(tags)} LoRAs, at most {MAX_LORAS_PER_REQUEST} per request")
    return _TAG.sub("", prompt), tags


def find(name: str, known: Sequence[LoraRef], field: str) -> LoraRef:
    """A discovered LoRA by stem or by its file name under ``Lora/``; :class:`UnknownLoraError` names it."""
    ref = named_files.find(name, known)
    if ref is not None:
        return ref
    raise UnknownLoraError(
        f"{field}: LoRA {name!r} not found in the models dir's {LORA_DIR}/ folder",
        {"lora": name, "available": [r.name for r in known]},
    )


def resolve(tags: Sequence[LoraTag], known: Sequence[LoraRef], field: str = "prompt") -> list[LoraUse]:
    return [LoraUse(find(t.name, known, field), unet=t.unet, text_encoder=t.text_encoder) for t in tags]


@contextlib.contextmanager
def applied(pipe: Any, uses: Sequence[LoraUse]) -> Iterator[None]:
    """Worker thread only: ``uses`` loaded into ``pipe`` (and every pipeline sharing its modules) for the block.

    Each LoRA gets its own adapter, weighted per component; components a file has no
    weights for are left out. Whatever happens in the block, the adapters are unloaded.
    """
    uses = [u for u in uses if u.unet or u.text_encoder]
    if not uses:
        yield
        return
    names = [f"sdeks_lora_{i}" for i in range(len(uses))]
    try:
        for name, use in zip(names, uses, strict=True):
            try:
                pipe.load_lora_weights(str(use.ref.path), adapter_name=name)
            except (ValueError, KeyError, RuntimeError, OSError) as exc:
                log.warning("cannot load LoRA %s: %s", use.ref.name, exc)
                raise InvalidLoraError(
                    f"LoRA {use.ref.name!r} cannot be applied to this model ({type(exc).__name__})",
                    {"lora": use.ref.name},
                ) from None
        present = pipe.get_list_adapters()  # {"unet": [...], "text_encoder": [...], SDXL: "text_encoder_2"}
        weights = [
            {c: use.unet if c == "unet" else use.text_encoder for c, loaded in present.items() if name in loaded}
            for name, use in zip(names, uses, strict=True)
        ]
        pipe.set_adapters(names, adapter_weights=weights)
        yield
    finally:
        pipe.unload_lora_weights()
