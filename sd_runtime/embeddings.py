"""Textual-inversion embeddings: the models dir's ``embeddings/`` folder, used by name as in A1111.

A1111 loads every embedding that fits the loaded model and applies one wherever its name
(the file stem) appears in a prompt; ``GET /sdapi/v1/embeddings`` lists them as
``loaded`` and the files that do not fit (another model family's) as ``skipped``. This
module does the same with diffusers' ``load_textual_inversion``: each name becomes a
token of the tokenizer(s) (multi-vector ones ``name``, ``name_1`` …, which
sd_runtime.prompt_weighting expands), so it is local files only and names, never paths.

Layouts (``.safetensors`` only: a pickle could run code): A1111's ``emb_params``,
diffusers' single ``{token: tensor}``, and SDXL's ``clip_l`` + ``clip_g``. Files are
bounded in number, size and vectors; the rest are skipped and logged.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sd_runtime import named_files
from sd_runtime.named_files import NamedFile

log = logging.getLogger("sd_runtime.embeddings")

EMBEDDINGS_DIR = "embeddings"
MAX_EMBEDDINGS = 64
MAX_FILE_BYTES = 8 * 1024 * 1024
MAX_VECTORS = 75  # one embedding must fit in one 75-token chunk


@dataclass(frozen=True)
class Embedding:
    """One file as A1111 describes it: ``shape`` is the vector width (SDXL: both encoders' summed)."""

    name: str
    vectors: int
    shape: int | None
    step: int | None = None
    checkpoint: str | None = None
    checkpoint_name: str | None = None

    def a1111(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "sd_checkpoint": self.checkpoint,
            "sd_checkpoint_name": self.checkpoint_name,
            "shape": self.shape,
            "vectors": self.vectors,
        }


@dataclass
class Embeddings:
    """What is loaded into the current model, and what was skipped."""

    loaded: dict[str, Embedding] = field(default_factory=dict)
    skipped: dict[str, Embedding] = field(default_factory=dict)

    def a1111(self) -> dict[str, Any]:
        """``GET /sdapi/v1/embeddings``."""
        return {
            "loaded": {n: e.a1111() for n, e in self.loaded.items()},
            "skipped": {n: e.a1111() for n, e in self.skipped.items()},
        }


def discover(models_dir: Path | None) -> list[NamedFile]:
    return named_files.discover(models_dir, EMBEDDINGS_DIR)


def _read(file: NamedFile) -> tuple[dict[str, Any], dict[str, str]]:
    from safetensors import safe_open

    with safe_open(str(file.path), framework="pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}, f.metadata() or {}  # noqa: SIM118 (safe_open has no __iter__)


def _matrix(tensor: Any) -> Any:
    return tensor.unsqueeze(0) if tensor.ndim == 1 else tensor


def _parts(tensors: dict[str, Any]) -> list[Any]:
    """The file's vectors per text encoder: SDXL ``[clip_l, clip_g]``, else ``[one matrix]``."""
    if "clip_l" in tensors and "clip_g" in tensors:
        return [_matrix(tensors["clip_l"]), _matrix(tensors["clip_g"])]
    if "emb_params" in tensors:
        return [_matrix(tensors["emb_params"])]
    if len(tensors) == 1:
        return [_matrix(next(iter(tensors.values())))]
    return []


def _encoders(pipe: Any) -> list[tuple[Any, Any]]:
    pairs = [(pipe.tokenizer, pipe.text_encoder)]
    if getattr(pipe, "text_encoder_2", None) is not None:
        pairs.append((pipe.tokenizer_2, pipe.text_encoder_2))
    return pairs


def _describe(file: NamedFile, parts: list[Any], metadata: dict[str, str]) -> Embedding:
    step = metadata.get("step")
    return Embedding(
        name=file.name,
        vectors=int(parts[0].shape[0]) if parts else 0,
        shape=sum(int(p.shape[-1]) for p in parts) or None,
        step=int(step) if step and step.isdigit() else None,
        checkpoint=metadata.get("sd_checkpoint"),
        checkpoint_name=metadata.get("sd_checkpoint_name"),
    )


def _fits(parts: list[Any], pairs: list[tuple[Any, Any]]) -> bool:
    """One matrix per text encoder, each as wide as that encoder's token embeddings, 1..75 vectors alike."""
    if len(parts) != len(pairs) or len({int(p.shape[0]) for p in parts}) != 1:
        return False
    widths = [enc.get_input_embeddings().weight.shape[-1] for _t, enc in pairs]
    pairs_of = zip(parts, widths, strict=True)
    return all(p.ndim == 2 and 0 < p.shape[0] <= MAX_VECTORS and p.shape[-1] == w for p, w in pairs_of)


def unload(pipe: Any) -> None:
    """Worker thread only: every textual-inversion token removed from ``pipe``'s tokenizers and encoders."""
    for tokenizer, encoder in _encoders(pipe):
        if any(not t.special for t in tokenizer.added_tokens_decoder.values()):
            pipe.unload_textual_inversion(tokenizer=tokenizer, text_encoder=encoder)


def load(pipe: Any, files: list[NamedFile]) -> Embeddings:
    """Worker thread only: the files that fit ``pipe`` loaded into it (those loaded before removed first)."""
    unload(pipe)
    pairs = _encoders(pipe)
    out = Embeddings()
    for i, file in enumerate(files):
        if i >= MAX_EMBEDDINGS or file.path.stat().st_size > MAX_FILE_BYTES:
            log.warning("embedding %s skipped: more than %d files or over %d bytes", file.name, i, MAX_FILE_BYTES)
            out.skipped[file.name] = Embedding(name=file.name, vectors=0, shape=None)
            continue
        try:
            tensors, metadata = _read(file)
        except (OSError, ValueError, RuntimeError) as exc:  # safetensors raises SafetensorError (an OSError/ValueError)
            log.warning("embedding %s skipped: unreadable (%s)", file.name, type(exc).__name__)
            out.skipped[file.name] = Embedding(name=file.name, vectors=0, shape=None)
            continue
        parts = _parts(tensors)
        info = _describe(file, parts, metadata)
        if not _fits(parts, pairs):
            out.skipped[file.name] = info
            continue
        if any(file.name in tokenizer.get_vocab() for tokenizer, _e in pairs):
            log.warning("embedding %s skipped: its name is already a word of the tokenizer", file.name)
            out.skipped[file.name] = info
            continue
        for part, (tokenizer, encoder) in zip(parts, pairs, strict=True):
            pipe.load_textual_inversion(part, token=file.name, tokenizer=tokenizer, text_encoder=encoder)
        out.loaded[file.name] = info
    return out
