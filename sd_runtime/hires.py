"""A1111's txt2img hires fix: render small, upscale, then a second img2img pass at the large size.

The upscale is either in latent space (A1111's ``Latent`` modes: the first pass's latents
interpolated, no decode in between) or in image space: the first pass is decoded, upscaled
with a built-in upscaler (``Lanczos``, ``Nearest``, ``None`` = Lanczos to the size) or a
model upscaler of the models dir (``R-ESRGAN 4x+`` …, see :mod:`sd_runtime.upscale`), and
encoded again by the img2img pass. The second pass runs ``hr_second_pass_steps`` (0: the
first pass's ``steps``) at ``denoising_strength``, so ``int(steps × strength)`` steps are
sampled, as A1111 does; each image keeps its seed. Any other upscaler name is a 400
listing what is installed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

from sd_runtime.errors import InvalidInputError, UnknownUpscalerError
from sd_runtime.upscale import BUILTIN
from sd_runtime.upscale_models import UpscalerFile, find

LATENT_MODES: dict[str, tuple[str, bool]] = {
    "Latent": ("bilinear", False),
    "Latent (antialiased)": ("bilinear", True),
    "Latent (bicubic)": ("bicubic", False),
    "Latent (bicubic antialiased)": ("bicubic", True),
    "Latent (nearest)": ("nearest", False),
    "Latent (nearest-exact)": ("nearest-exact", False),
}
"""A1111's latent upscale modes → ``torch.nn.functional.interpolate`` (mode, antialias)."""

MAX_SIDE = 4096
MAX_STEPS = 150
IMPLEMENTED = frozenset(
    {"enable_hr", "hr_scale", "hr_upscaler", "hr_second_pass_steps", "hr_resize_x", "hr_resize_y", "denoising_strength"}
)
"""The txt2img fields this module reads (while ``enable_hr`` is true)."""


def upscalers(models: list[UpscalerFile]) -> list[str]:
    """What ``hr_upscaler`` may name: the latent modes, the built-in upscalers, the model files."""
    return [*LATENT_MODES, *BUILTIN, *(m.name for m in models)]


@dataclass(frozen=True)
class Hires:
    """The second pass of one txt2img request."""

    width: int
    height: int
    upscaler: str
    steps: int
    denoising: float
    scale: float
    model: UpscalerFile | None = None
    """The model file of a model upscaler (None for latent modes and built-in ones)."""

    def info(self) -> dict[str, Any]:
        """What ``info.hires`` reports (the upscaler by its A1111 name)."""
        return {
            "width": self.width,
            "height": self.height,
            "upscaler": self.upscaler,
            "steps": self.steps,
            "denoising": self.denoising,
            "scale": self.scale,
        }

    @property
    def latent(self) -> bool:
        return self.upscaler in LATENT_MODES


def _number(extra: dict[str, Any], key: str, default: float, low: float, high: float, integer: bool = False) -> Any:
    value = extra.get(key, default)
    if value is None:
        value = default
    kinds = (int,) if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kinds) or not low <= value <= high:
        kind = "an integer" if integer else "a number"
        raise InvalidInputError(f"{key}: must be {kind} in {low:g}..{high:g}, got {value!r}")
    return value


def parse(content: BaseModel, models: list[UpscalerFile]) -> Hires | None:
    """The hires pass a txt2img body asks for (``enable_hr``), validated; None without one.

    ``models``: the model upscalers installed (``hr_upscaler`` may name one by any of its names).
    """
    extra = content.model_extra or {}
    enable = extra.get("enable_hr", False)
    if not isinstance(enable, bool):
        raise InvalidInputError("enable_hr: must be true or false")
    if not enable:
        return None
    upscaler = extra.get("hr_upscaler") or "Latent"
    model = find(upscaler, models)
    if model is None and upscaler not in upscalers([]):
        raise UnknownUpscalerError(
            f"hr_upscaler: {upscaler!r} is not installed; available: {', '.join(upscalers(models))}",
            {"available": upscalers(models)},
        )
    scale = _number(extra, "hr_scale", 2.0, 1.0, 8.0)
    rx = _number(extra, "hr_resize_x", 0, 0, MAX_SIDE, integer=True)
    ry = _number(extra, "hr_resize_y", 0, 0, MAX_SIDE, integer=True)
    width, height = content.width, content.height  # type: ignore[attr-defined]
    if rx or ry:  # A1111: one of them 0 keeps the aspect ratio
        tw = rx or round(width * ry / height)
        th = ry or round(height * rx / width)
    else:
        tw, th = round(width * scale), round(height * scale)
    tw, th = max(8, tw // 8 * 8), max(8, th // 8 * 8)
    if max(tw, th) > MAX_SIDE:
        raise InvalidInputError(f"hr_scale: the hires size {tw}x{th} exceeds {MAX_SIDE} pixels a side")
    return Hires(
        width=tw,
        height=th,
        upscaler=model.name if model else upscaler,
        model=model,
        steps=_number(extra, "hr_second_pass_steps", 0, 0, MAX_STEPS, integer=True) or content.steps,  # type: ignore[attr-defined]
        denoising=_number(extra, "denoising_strength", 0.7, 0.0, 1.0),
        scale=tw / width,
    )


def upscale_first_pass(hires: Hires, first: Any, resize: Callable[[Any, tuple[int, int]], Any]) -> Any:
    """The first pass's output (latents, or PIL images) at the hires size, ready for img2img.

    ``resize(image, size)`` upscales one decoded image with ``hires.upscaler`` (built-in or model).
    """
    if hires.latent:
        import torch

        mode, antialias = LATENT_MODES[hires.upscaler]
        size = (hires.height // 8, hires.width // 8)
        return torch.nn.functional.interpolate(first, size=size, mode=mode, antialias=antialias)
    return [resize(im, (hires.width, hires.height)) for im in first]
