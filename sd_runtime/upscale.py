"""Upscalers of the extras endpoints.

Lanczos and Nearest are built in (PIL). The model-based A1111 upscalers
(ESRGAN family, SwinIR, ScuNET, LDSR) need weights and code this runtime does
not ship; they are reported as not installed and a request naming one gets a
4xx listing what is installed, rather than a silently different result.
"""

from __future__ import annotations

from typing import Any

from PIL import Image

from sd_runtime.errors import TooLargeError, UnknownUpscalerError

BUILTIN: dict[str, Image.Resampling | None] = {
    "None": None,
    "Lanczos": Image.Resampling.LANCZOS,
    "Nearest": Image.Resampling.NEAREST,
}
KNOWN_NOT_INSTALLED = (
    "ESRGAN_4x",
    "LDSR",
    "R-ESRGAN 4x+",
    "R-ESRGAN 4x+ Anime6B",
    "ScuNET",
    "ScuNET PSNR",
    "SwinIR 4x",
)
MAX_OUTPUT_PIXELS = 8192 * 8192


def installed() -> list[str]:
    return list(BUILTIN)


def a1111_upscalers() -> list[dict[str, Any]]:
    """``GET /sdapi/v1/upscalers`` body (installed ones only)."""
    return [{"name": name, "model_name": None, "model_path": None, "model_url": None, "scale": 4} for name in BUILTIN]


def target_size(
    w: int, h: int, resize_mode: int, factor: float, tw: int | None, th: int | None
) -> tuple[int, int, tuple[int, int]]:
    """(scaled width, scaled height, final size). Mode 1 scales to cover tw×th then center-crops, as A1111 does."""
    if resize_mode == 1 and tw and th:
        scale = max(tw / w, th / h)
        return max(1, round(w * scale)), max(1, round(h * scale)), (tw, th)
    sw, sh = max(1, round(w * factor)), max(1, round(h * factor))
    return sw, sh, (sw, sh)


def upscale(
    img: Image.Image, upscaler: str, resize_mode: int, factor: float, tw: int | None = None, th: int | None = None
) -> Image.Image:
    if upscaler not in BUILTIN:
        state = "not installed" if upscaler in KNOWN_NOT_INSTALLED else "unknown"
        raise UnknownUpscalerError(
            f"upscaler {upscaler!r} is {state}; installed: {', '.join(installed())}",
            {"available": installed()},
        )
    sw, sh, final = target_size(img.width, img.height, resize_mode, factor, tw, th)
    if max(sw * sh, final[0] * final[1]) > MAX_OUTPUT_PIXELS:
        raise TooLargeError(f"output {sw}x{sh} exceeds {MAX_OUTPUT_PIXELS} pixels")
    method = BUILTIN[upscaler] or Image.Resampling.LANCZOS  # "None" still honours the requested size
    out = img.resize((sw, sh), method) if (sw, sh) != img.size else img.copy()
    if (sw, sh) != final:
        left, top = (sw - final[0]) // 2, (sh - final[1]) // 2
        out = out.crop((left, top, left + final[0], top + final[1]))
    return out
