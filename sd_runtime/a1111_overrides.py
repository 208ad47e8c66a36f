"""A1111's per-request ``override_settings``: the ones this runtime applies, and the rest.

``sd_model_checkpoint`` renders the request with that model (switched back afterwards
unless ``override_settings_restore_afterwards`` is false, as A1111 does);
``CLIP_stop_at_last_layers`` is the clip skip (1 = last layer, 2 = the penultimate ...);
``sd_vae`` a file of the models dir's ``VAE/`` folder (or ``Automatic``/``None``) for this request.
Any other setting has no effect here and is reported in ``info.ignored_fields`` as
``override_settings.<name>``; a supported one with a wrong value is a 422 naming it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from pydantic import BaseModel

from sd_runtime.errors import InvalidInputError

SUPPORTED = ("sd_model_checkpoint", "CLIP_stop_at_last_layers", "sd_vae")
MAX_CLIP_STOP = 12  # CLIP ViT-L has 12 layers; A1111's slider goes to 12


@dataclass
class Overrides:
    """The applied overrides as engine inputs, and the names of the ignored ones."""

    checkpoint: str | None = None
    clip_skip: int | None = None
    vae: str | None = None
    restore: bool = True
    ignored: list[str] = field(default_factory=list)


def parse(content: BaseModel) -> Overrides:
    """Read ``override_settings`` (an extra field of the contract's content models)."""
    extra = content.model_extra or {}
    settings = extra.get("override_settings")
    settings = {} if settings is None else settings
    if not isinstance(settings, dict):
        raise InvalidInputError("override_settings: must be an object of setting name → value")
    restore = extra.get("override_settings_restore_afterwards", True)
    if not isinstance(restore, bool):
        raise InvalidInputError("override_settings_restore_afterwards: must be true or false")
    out = Overrides(restore=restore, ignored=sorted(f"override_settings.{k}" for k in settings if k not in SUPPORTED))
    checkpoint = settings.get("sd_model_checkpoint")
    if checkpoint is not None:
        if not isinstance(checkpoint, str) or not checkpoint.strip():
            raise InvalidInputError("override_settings.sd_model_checkpoint: must be a model name")
        out.checkpoint = checkpoint
    vae = settings.get("sd_vae")
    if vae is not None:
        if not isinstance(vae, str) or not vae.strip():
            raise InvalidInputError("override_settings.sd_vae: must be a VAE name, Automatic or None")
        if not restore:
            raise InvalidInputError(
                "override_settings.sd_vae: applies to this request only; "
                "override_settings_restore_afterwards false is not supported with it"
            )
        out.vae = vae
    stop = settings.get("CLIP_stop_at_last_layers")
    if stop is not None:
        if isinstance(stop, bool) or not isinstance(stop, int) or not 1 <= stop <= MAX_CLIP_STOP:
            raise InvalidInputError(
                f"override_settings.CLIP_stop_at_last_layers: must be an integer 1..{MAX_CLIP_STOP}"
            )
        out.clip_skip = stop - 1 or None
    return out
