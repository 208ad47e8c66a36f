"""Latent batch and inpaint nodes: ``RepeatLatentBatch``, ``SetLatentNoiseMask``, ``VAEEncodeForInpaint``.

A LATENT may carry ``noise_mask`` (``[B, 1, H, W]`` in pixels, 1 = repaint): the
samplers then blend the unmasked part back after every step (:mod:`.nodes_sampling`).
``VAEEncodeForInpaint`` also greys the masked pixels out before encoding and grows the
mask by ``grow_mask_by`` pixels, as ComfyUI does, for use at denoise 1.
"""

from __future__ import annotations

import math
from typing import Any

from sd_runtime.comfyui.nodes import MAX_BATCH, Context, NodeDef, NodeExecutionError, Vae, _torch, vae_encode


def repeat_latent_batch(ctx: Context, samples: dict[str, Any], amount: int) -> tuple:
    batch = samples["samples"].shape[0] * amount
    if batch > MAX_BATCH:
        raise NodeExecutionError(f"a batch of {batch} exceeds this runtime's limit of {MAX_BATCH}")
    out = {**samples, "samples": samples["samples"].repeat(amount, 1, 1, 1)}
    mask = samples.get("noise_mask")
    if mask is not None and mask.shape[0] > 1:  # one mask applies to the whole batch as it is
        out["noise_mask"] = mask.repeat(amount, 1, 1, 1)
    return (out,)


def set_latent_noise_mask(ctx: Context, samples: dict[str, Any], mask: Any) -> tuple:
    return ({**samples, "noise_mask": mask.reshape(-1, 1, mask.shape[-2], mask.shape[-1]).clone()},)


def vae_encode_for_inpaint(ctx: Context, pixels: Any, vae: Vae, mask: Any, grow_mask_by: int) -> tuple:
    torch = _torch()
    f = vae.scale_factor
    h, w = (pixels.shape[1] // f) * f, (pixels.shape[2] // f) * f
    m = mask.reshape(-1, 1, mask.shape[-2], mask.shape[-1]).float()
    m = torch.nn.functional.interpolate(m, size=(pixels.shape[1], pixels.shape[2]), mode="bilinear")
    y0, x0 = (pixels.shape[1] % f) // 2, (pixels.shape[2] % f) // 2
    pixels = pixels[:, y0 : y0 + h, x0 : x0 + w, :3].clone()
    m = m[:, :, y0 : y0 + h, x0 : x0 + w]
    if grow_mask_by == 0:
        grown = m
    else:  # grow the mask a little so the repainted region blends in latent space
        kernel = torch.ones((1, 1, grow_mask_by, grow_mask_by))
        padding = math.ceil((grow_mask_by - 1) / 2)
        grown = torch.clamp(torch.nn.functional.conv2d(m.round(), kernel, padding=padding), 0, 1)
    keep = (1.0 - m.round()).squeeze(1)[..., None]  # masked pixels become mid-grey
    pixels = (pixels - 0.5) * keep + 0.5
    (latent,) = vae_encode(ctx, pixels, vae)
    return ({**latent, "noise_mask": grown[:, :, :h, :w].round()},)


NODE_DEFS = [
    NodeDef(
        "RepeatLatentBatch",
        "Repeat Latent Batch",
        "latent/batch",
        {"samples": ("LATENT", {}), "amount": ("INT", {"default": 1, "min": 1, "max": MAX_BATCH})},
        ("LATENT",),
        repeat_latent_batch,
    ),
    NodeDef(
        "SetLatentNoiseMask",
        "Set Latent Noise Mask",
        "latent/inpaint",
        {"samples": ("LATENT", {}), "mask": ("MASK", {})},
        ("LATENT",),
        set_latent_noise_mask,
        description="Only the masked part (mask 1) is resampled; the rest is blended back after every step.",
    ),
    NodeDef(
        "VAEEncodeForInpaint",
        "VAE Encode (for Inpainting)",
        "latent/inpaint",
        {
            "pixels": ("IMAGE", {}),
            "vae": ("VAE", {}),
            "mask": ("MASK", {}),
            "grow_mask_by": ("INT", {"default": 6, "min": 0, "max": 64, "step": 1}),
        },
        ("LATENT",),
        vae_encode_for_inpaint,
    ),
]
