"""Finding, naming and loading checkpoints, with no hub access.

A model is either a diffusers directory (``model_index.json``) or a single
``.safetensors`` checkpoint in the original SD layout, of the SD 1.x or the SDXL
architecture. The architecture of a single file is read from its tensor names
(SDXL's second, OpenCLIP text encoder and its ``label_emb`` micro-conditioning);
of a diffusers directory from its UNet config (``addition_embed_type: text_time``),
which is what diffusers builds the UNet from. Single files are loaded with
``from_single_file(config=<dir shipped in sd_runtime/configs>, local_files_only=True)``:
the config is picked by the architecture and the checkpoint's tensor shapes (no
weights are read for that), so nothing is ever fetched from the hub. ``.ckpt``
pickles are not loaded on purpose (arbitrary code execution).
"""

from __future__ import annotations

import contextlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from sd_runtime import CONFIGS_DIR
from sd_runtime.errors import InvalidInputError, NotFoundError
from sdeks.contract import ErrorCode
from sdeks.contract.names import check_model_name

log = logging.getLogger("sd_runtime.models")


class ModelError(InvalidInputError):
    """A model exists but cannot be used (wrong architecture, missing tokenizer, a failed load)."""

    code = ErrorCode.UNSUPPORTED_MODEL


class ModelLoadError(ModelError):
    code = ErrorCode.MODEL_LOAD_FAILED


class TokenizerMissingError(ModelError):
    code = ErrorCode.TOKENIZER_MISSING


class UnknownModelError(NotFoundError):
    """No model by that name; ``details["available"]`` lists the names that exist."""

    code = ErrorCode.UNKNOWN_MODEL


@dataclass(frozen=True)
class ModelRef:
    """A checkpoint on disk and the name A1111 clients use for it (``title``)."""

    title: str
    path: Path
    kind: Literal["diffusers", "single_file"]

    @property
    def model_name(self) -> str:
        return self.path.stem if self.kind == "single_file" else self.path.name

    def a1111(self) -> dict[str, Any]:
        """One entry of ``GET /sdapi/v1/sd-models``. No hash: hashing a 4 GB file per listing is not worth it."""
        return {
            "title": self.title,
            "model_name": self.model_name,
            "hash": None,
            "sha256": None,
            "filename": str(self.path),
            "config": None,
        }


def ref_for_path(path: Path) -> ModelRef | None:
    """A ModelRef if ``path`` is a loadable model, else None."""
    if path.is_dir() and (path / "model_index.json").is_file():
        return ModelRef(path.name, path.resolve(), "diffusers")
    if path.is_file() and path.suffix == ".safetensors":
        return ModelRef(path.name, path.resolve(), "single_file")
    return None


def discover(models_dir: Path | None, extra: ModelRef | None = None) -> list[ModelRef]:
    """Models in ``models_dir`` (top level, plus an ``Stable-diffusion/`` subdir as A1111 lays it out)."""
    found: dict[Path, ModelRef] = {}
    if extra is not None:
        found[extra.path] = extra
    if models_dir is not None:
        for base in (models_dir, models_dir / "Stable-diffusion"):
            if base.is_dir():
                for child in sorted(base.iterdir()):
                    if not child.name.startswith(".") and (ref := ref_for_path(child)):
                        found.setdefault(ref.path, ref)
    return sorted(found.values(), key=lambda r: r.title)


def resolve(spec: str, models_dir: Path | None, known: list[ModelRef], *, allow_paths: bool = False) -> ModelRef:
    """Find a model by title (``name [hash]`` accepted), model name or file name in the models dir.

    Requests name models; only the operator (``--model PATH`` at startup) may give a path
    (``allow_paths``). A path in a request is refused before the filesystem is touched, and the
    error never lists the server's files (``GET /sdapi/v1/sd-models`` does, for who may see them).
    """
    name = spec.strip()
    if " [" in name and name.endswith("]"):
        name = name[: name.rindex(" [")]
    for ref in known:
        if name == ref.title or (allow_paths and name == str(ref.path)):
            return ref
    candidates = [r for r in known if name == r.model_name]
    if len(candidates) == 1:
        return candidates[0]
    available = {"available": [r.title for r in known]}
    if allow_paths:
        path = Path(name).expanduser()
        if (path.is_absolute() or "/" in name) and (ref := ref_for_path(path)):
            return ref
    else:
        try:
            check_model_name(name)
        except ValueError as exc:
            raise InvalidInputError(f"sd_model_checkpoint {spec!r} refused: {exc}") from None
    if models_dir is not None and "/" not in name and (ref := ref_for_path(models_dir / name)):
        return ref
    raise UnknownModelError(f"model {spec!r} not found (GET /sdapi/v1/sd-models lists the models)", available)


def missing_model_reason(spec: str, models_dir: Path | None) -> str:
    """Why ``spec`` cannot be served, naming the file as the operator put it under the models dir.

    The reason leaves the process (health answer, agent logs, task errors): it never carries a
    server path outside the models dir, only the name relative to it (or the bare file name).
    """
    name = spec.strip()
    path = Path(name)
    if path.is_absolute() or "/" in name:
        shown = path.name
        if models_dir is not None and path.is_absolute():
            with contextlib.suppress(ValueError):
                shown = str(path.resolve().relative_to(models_dir.resolve()))
    else:
        shown = name
    return f"model file not found: {shown}"


def _shapes(path: Path) -> dict[str, tuple[int, ...]]:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        return {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}  # noqa: SIM118 (safe_open is not a dict)


Arch = Literal["sd1", "sdxl"]
SDXL_TENSORS = ("conditioner.embedders.1.model.positional_embedding", "model.diffusion_model.label_emb.0.0.weight")
"""Tensor names only an SDXL single file has (its OpenCLIP text encoder, its micro-conditioning embedding)."""


def architecture(ref: ModelRef) -> Arch:
    """``sdxl`` or ``sd1``, from the single file's tensor names or the diffusers UNet's config."""
    if ref.kind == "single_file":
        return "sdxl" if any(k in _shapes(ref.path) for k in SDXL_TENSORS) else "sd1"
    try:
        unet = json.loads((ref.path / "unet" / "config.json").read_text())
    except (OSError, ValueError):
        raise ModelError(f"{ref.title} has no readable unet/config.json") from None
    return "sdxl" if unet.get("addition_embed_type") == "text_time" else "sd1"


def _config_arch(config_dir: Path) -> Arch:
    index = json.loads((config_dir / "model_index.json").read_text())
    return "sdxl" if "XL" in index.get("_class_name", "") else "sd1"


def config_for_checkpoint(path: Path) -> Path:
    """The shipped diffusers config whose UNet matches the checkpoint's shapes.

    A ``<checkpoint stem>.config/`` directory next to the file wins, so an operator
    can serve an architecture the repo has no config for.
    """
    sidecar = path.with_name(path.stem + ".config")
    if (sidecar / "model_index.json").is_file():
        return sidecar
    shapes = _shapes(path)
    arch: Arch = "sdxl" if any(k in shapes for k in SDXL_TENSORS) else "sd1"
    conv_in = shapes.get("model.diffusion_model.input_blocks.0.0.weight")
    cross = next(
        (s for k, s in shapes.items() if k.endswith("attn2.to_k.weight") and k.startswith("model.diffusion_model.")),
        None,
    )
    if conv_in is None or cross is None:
        raise ModelError(f"{path.name} is not an SD 1.x or SDXL checkpoint in the original layout")
    for cfg in sorted(CONFIGS_DIR.iterdir()):
        unet_cfg = cfg / "unet" / "config.json"
        if not unet_cfg.is_file() or _config_arch(cfg) != arch:
            continue
        unet = json.loads(unet_cfg.read_text())
        if unet["block_out_channels"][0] == conv_in[0] and unet["cross_attention_dim"] == cross[1]:
            return cfg
    raise ModelError(
        f"no shipped {arch} config matches {path.name} (conv_in {conv_in}, cross-attention {cross[1]}); "
        f"put a diffusers config directory {sidecar.name}/ next to it",
    )


def _tokenizer_for(config_dir: Path, checkpoint: Path, sub: str = "tokenizer"):
    """A CLIP tokenizer for a single file: from the config dir, or a ``tokenizer/`` (``tokenizer_2/``) next to it."""
    from transformers import CLIPTokenizer

    for cand in (config_dir / sub, checkpoint.parent / sub):
        if (cand / "vocab.json").is_file() or (cand / "tokenizer.json").is_file():
            return CLIPTokenizer.from_pretrained(cand, local_files_only=True)
    raise TokenizerMissingError(
        f"no CLIP tokenizer for {checkpoint.name} in {config_dir.name}'s config; "
        f"put vocab.json and merges.txt into a {sub}/ directory next to it",
    )


def load_pipeline(ref: ModelRef, device: str, dtype) -> Any:
    """Load a StableDiffusionPipeline or StableDiffusionXLPipeline from disk only, on ``device`` in ``dtype``."""
    from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline

    arch = architecture(ref)
    common: dict[str, Any] = {"torch_dtype": dtype, "local_files_only": True}
    if arch == "sd1":
        cls: Any = StableDiffusionPipeline
        common |= {"safety_checker": None, "feature_extractor": None, "requires_safety_checker": False}
    else:
        cls = StableDiffusionXLPipeline
    try:
        if ref.kind == "diffusers":
            pipe = cls.from_pretrained(ref.path, **common)
        else:
            config = config_for_checkpoint(ref.path)
            tokenizers = {"tokenizer": _tokenizer_for(config, ref.path)}
            if arch == "sdxl":
                tokenizers["tokenizer_2"] = _tokenizer_for(config, ref.path, "tokenizer_2")
            pipe = cls.from_single_file(str(ref.path), config=str(config), **tokenizers, **common)
    except ModelError:
        raise
    except Exception as exc:
        # the library's message names files on the server: it goes to the log, the client gets the type
        log.warning("cannot load %s: %s", ref.title, exc)
        raise ModelLoadError(f"cannot load {ref.title}: {type(exc).__name__}") from exc
    pipe.set_progress_bar_config(disable=True)
    _clip_skip_compat(pipe.text_encoder)
    return pipe.to(device)


def _clip_skip_compat(text_encoder: Any) -> None:
    """Let diffusers' SD 1.x ``encode_prompt(clip_skip=...)`` run with transformers 5.

    transformers 5 flattened ``CLIPTextModel`` (``final_layer_norm`` is its own child, there
    is no ``.text_model``), while diffusers' SD pipeline still reads
    ``text_encoder.text_model.final_layer_norm`` when a clip skip is asked for, so
    ``CLIP_stop_at_last_layers`` / ``CLIPSetLastLayer`` failed at run time. The encoder is
    given a ``text_model`` attribute pointing at itself, set outside ``nn.Module``'s
    registry so the module tree (state dict, LoRA injection, ``.to()``) is unchanged.
    """
    if not hasattr(text_encoder, "text_model") and hasattr(text_encoder, "final_layer_norm"):
        object.__setattr__(text_encoder, "text_model", text_encoder)
