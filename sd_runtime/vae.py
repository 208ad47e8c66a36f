"""VAEs by name: ``*.safetensors`` in the models dir's ``VAE/`` folder, for one request at a time.

A1111 picks one with ``override_settings.sd_vae`` (``Automatic`` / ``None``: the
checkpoint's own). A file is read into a fresh ``AutoencoderKL`` with the loaded model's
VAE config: the original (ldm) layout A1111 users download is converted with diffusers'
own converter, a diffusers-layout file is used as it is; a file that does not fit the
model is a 422. Names resolve among the discovered files only (``named_files``).
"""

from __future__ import annotations

from typing import Any

from sd_runtime import named_files
from sd_runtime.errors import BadRequestError, InvalidInputError
from sd_runtime.named_files import NamedFile
from sdeks.contract import ErrorCode

VAE_DIR = "VAE"
OWN = ("Automatic", "None")
"""A1111's values meaning "the checkpoint's own VAE"."""


class UnknownVaeError(BadRequestError):
    code = ErrorCode.UNKNOWN_VAE


class InvalidVaeError(InvalidInputError):
    code = ErrorCode.INVALID_VAE


def discover(models_dir: Any) -> list[NamedFile]:
    return named_files.discover(models_dir, VAE_DIR)


def a1111_entries(files: list[NamedFile]) -> list[dict[str, str]]:
    """``GET /sdapi/v1/sd-vae``: names and paths relative to the models dir."""
    return [{"model_name": f.file, "filename": f"{VAE_DIR}/{f.file}"} for f in files]


def find(name: str, known: list[NamedFile], field: str) -> NamedFile | None:
    """The named VAE file, None for the checkpoint's own; :class:`UnknownVaeError` names an unknown one."""
    if name in OWN:
        return None
    found = named_files.find(name, known)
    if found is None:
        raise UnknownVaeError(
            f"{field}: VAE {name!r} not found in the models dir's {VAE_DIR}/ folder",
            {"vae": name, "available": [*OWN, *(f.file for f in known)]},
        )
    return found


def load(file: NamedFile, like: Any) -> Any:
    """Worker thread only: the VAE in ``file``, built with ``like``'s config, dtype and device."""
    from diffusers import AutoencoderKL
    from diffusers.loaders.single_file_utils import convert_ldm_vae_checkpoint
    from safetensors.torch import load_file

    try:
        state = load_file(str(file.path))
        vae = AutoencoderKL.from_config(like.config)
        diffusers_layout = any(k.startswith("encoder.down_blocks.") for k in state)
        converted = state if diffusers_layout else convert_ldm_vae_checkpoint(state, dict(like.config))
        vae.load_state_dict(converted, strict=True)
    except (OSError, RuntimeError, KeyError, ValueError) as exc:
        raise InvalidVaeError(
            f"VAE {file.name!r} does not fit this model ({type(exc).__name__})", {"vae": file.name}
        ) from None
    return vae.to(device=like.device, dtype=like.dtype).eval()
