"""ComfyUI's model upscaler nodes: ``UpscaleModelLoader`` and ``ImageUpscaleWithModel``.

The files are the runtime's model upscalers (:mod:`sd_runtime.upscale_models`: the models
dir's ``upscale_models/``, ``ESRGAN/`` and ``RealESRGAN/`` folders), listed by their path
under the folder as ComfyUI lists ``upscale_models/``. The image is upscaled in tiles of
512 input pixels overlapping by 32, ComfyUI's own tiling, and the prompt can be
interrupted between tiles.
"""

from __future__ import annotations

from typing import Any

from sd_runtime.comfyui.nodes import Context, NodeDef, NodeExecutionError, check_size
from sd_runtime.upscale_models import InvalidUpscalerError, Loaded, find, tiled_scale

TILE, OVERLAP = 512, 32
"""ComfyUI's ``ImageUpscaleWithModel`` tiling (input pixels)."""


def upscale_model_choices(state: Any) -> list[str]:
    return [u.file.file for u in state.engine.upscale_models.discover()]


def upscale_model_loader(ctx: Context, model_name: str) -> tuple:
    models = ctx.engine.upscale_models
    ref = find(model_name, models.discover())
    if ref is None:
        raise NodeExecutionError(f"upscale model {model_name!r} not found (GET /object_info lists the choices)")
    try:
        return (models.load(ref),)
    except InvalidUpscalerError as exc:
        raise NodeExecutionError(exc.message) from None


def image_upscale_with_model(ctx: Context, upscale_model: Loaded, image: Any) -> tuple:
    """IMAGE ``[B, H, W, C]`` → the same batch ``scale`` times larger, frame by frame."""
    import torch

    batch, h, w, _ = image.shape
    scale = upscale_model.scale
    check_size(w * scale, h * scale, batch)
    model = upscale_model.model
    frames = []
    with torch.inference_mode():
        for frame in image:
            x = frame[..., :3].permute(2, 0, 1)[None].to(device=model.device, dtype=model.dtype)
            y = tiled_scale(model, x, TILE, OVERLAP, ctx.interrupted)
            frames.append(y[0].float().clamp(0, 1).permute(1, 2, 0).cpu())
    return (torch.stack(frames),)


NODE_DEFS = [
    NodeDef(
        "UpscaleModelLoader",
        "Load Upscale Model",
        "loaders",
        {"model_name": (upscale_model_choices, {})},
        ("UPSCALE_MODEL",),
        upscale_model_loader,
        description="An upscaler file of the models dir (upscale_models/, ESRGAN/, RealESRGAN/), loaded by spandrel.",
    ),
    NodeDef(
        "ImageUpscaleWithModel",
        "Upscale Image (using Model)",
        "image/upscaling",
        {"upscale_model": ("UPSCALE_MODEL", {}), "image": ("IMAGE", {})},
        ("IMAGE",),
        image_upscale_with_model,
        description="Upscales the image with the model, in tiles (512 px, 32 px overlap).",
    ),
]
