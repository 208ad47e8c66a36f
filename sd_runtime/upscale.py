"""Upscalers of the extras endpoints and the hires fix, by A1111 name.

``None``, ``Lanczos`` and ``Nearest`` are built in (PIL). Model upscalers are the files
of the models dir's ``ESRGAN/``, ``RealESRGAN/`` and ``upscale_models/`` folders
(:mod:`sd_runtime.upscale_models`). As in A1111, a model runs (up to 3 passes) until
the image is at least the size asked for, then Lanczos brings it to that size exactly.
A name that is neither is a 400 listing what is installed; naming a known A1111
upscaler whose weights are not in the models dir says so.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from PIL import Image

from sd_runtime.errors import TooLargeError, UnknownUpscalerError
from sd_runtime.upscale_models import A1111_NAMES, TileStats, UpscaleModels, UpscalerFile, find, upscale_image

BUILTIN: dict[str, Image.Resampling | None] = {
    "None": None,
    "Lanczos": Image.Resampling.LANCZOS,
    "Nearest": Image.Resampling.NEAREST,
}
KNOWN_NOT_BUILTIN = ("ESRGAN_4x", "LDSR", "ScuNET", "ScuNET PSNR", "SwinIR 4x", *A1111_NAMES.values())
"""A1111 upscalers that exist only as weight files: named, they are 'not installed' rather than 'unknown'."""
MAX_OUTPUT_PIXELS = 8192 * 8192
MAX_MODEL_PASSES = 3
"""A1111 runs a model at most 3 times to reach the requested size (modules/upscaler.py)."""


def a1111_upscalers(models: UpscaleModels) -> list[dict[str, Any]]:
    """``GET /sdapi/v1/upscalers``: the built-in ones, then each model file with the scale read from it.

    ``model_path`` is the file's place in the models dir (never the server's path);
    ``scale`` is None for a file that cannot be loaded (naming it in a request is a 422).
    """
    out: list[dict[str, Any]] = [
        {"name": name, "model_name": None, "model_path": None, "model_url": None, "scale": 4} for name in BUILTIN
    ]
    for u in models.discover():
        scale, _arch = models.describe(u)
        path = f"{u.file.folder}/{u.file.file}"
        out.append({"name": u.name, "model_name": u.file.name, "model_path": path, "model_url": None, "scale": scale})
    return out


def resolve(name: str, models: UpscaleModels, field: str) -> UpscalerFile | None:
    """The model file ``name`` refers to, None for a built-in upscaler; a 400 listing what is installed otherwise."""
    if name in BUILTIN:
        return None
    known = models.discover()
    ref = find(name, known)
    if ref is not None:
        return ref
    available = [*BUILTIN, *(u.name for u in known)]
    state = "not installed (no such file in the models dir)" if name in KNOWN_NOT_BUILTIN else "unknown"
    raise UnknownUpscalerError(
        f"{field}: upscaler {name!r} is {state}; installed: {', '.join(available)}", {"available": available}
    )


def target_size(
    w: int, h: int, resize_mode: int, factor: float, tw: int | None, th: int | None
) -> tuple[int, int, tuple[int, int]]:
    """(scaled width, scaled height, final size). Mode 1 scales to cover tw×th then center-crops, as A1111 does."""
    if resize_mode == 1 and tw and th:
        scale = max(tw / w, th / h)
        return max(1, round(w * scale)), max(1, round(h * scale)), (tw, th)
    sw, sh = max(1, round(w * factor)), max(1, round(h * factor))
    return sw, sh, (sw, sh)


def resize_to(
    img: Image.Image,
    size: tuple[int, int],
    ref: UpscalerFile | None,
    method: Image.Resampling | None,
    models: UpscaleModels,
    should_stop: Callable[[], bool] | None = None,
    stats: TileStats | None = None,
) -> Image.Image:
    """Worker thread only: ``img`` at ``size`` — model passes until it is at least that large, then Lanczos."""
    if ref is not None:
        loaded = models.load(ref)
        for _ in range(MAX_MODEL_PASSES):
            if img.width >= size[0] and img.height >= size[1]:
                break
            before = img.size
            img = upscale_image(
                loaded, img, models.tile, models.overlap, should_stop, stats, max_pixels=MAX_OUTPUT_PIXELS
            )
            if img.size == before:  # a 1x restoration model (SCUNet …): one pass, then Lanczos, as A1111
                break
        method = Image.Resampling.LANCZOS
    method = method or Image.Resampling.LANCZOS  # "None" still honours the requested size
    return img.resize(size, method) if img.size != size else img.copy()


def upscale(
    img: Image.Image,
    upscaler: str,
    resize_mode: int,
    factor: float,
    tw: int | None,
    th: int | None,
    models: UpscaleModels,
    field: str = "upscaler_1",
    stats: TileStats | None = None,
) -> Image.Image:
    """Worker thread only: A1111's extras upscale (by ``factor``, or to cover ``tw``×``th`` and center-crop)."""
    ref = resolve(upscaler, models, field)
    sw, sh, final = target_size(img.width, img.height, resize_mode, factor, tw, th)
    if max(sw * sh, final[0] * final[1]) > MAX_OUTPUT_PIXELS:
        raise TooLargeError(f"output {sw}x{sh} exceeds {MAX_OUTPUT_PIXELS} pixels")
    out = resize_to(img, (sw, sh), ref, BUILTIN.get(upscaler), models, stats=stats)
    if (sw, sh) != final:
        left, top = (sw - final[0]) // 2, (sh - final[1]) // 2
        out = out.crop((left, top, left + final[0], top + final[1]))
    return out
