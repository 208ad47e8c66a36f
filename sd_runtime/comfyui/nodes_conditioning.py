"""Conditioning nodes beyond ``CLIPTextEncode``: ``CLIPTextEncodeSDXL`` and ``ConditioningZeroOut``.

``CLIPTextEncodeSDXL`` sends ``text_l`` to SDXL's first encoder (CLIP ViT-L, diffusers'
``prompt``) and ``text_g`` to the second (OpenCLIP bigG, ``prompt_2``, which also gives the
pooled embedding), and carries its sizes to the sampler as SDXL's micro-conditioning:
``original_size`` = (height, width), ``crops_coords_top_left`` = (crop_h, crop_w),
``target_size`` = (target_height, target_width) — ComfyUI's ``encode_adm`` order.

``ConditioningCombine`` makes one CONDITIONING of both inputs' entries (ComfyUI's list
concatenation) and ``ConditioningSetArea`` limits each entry to an area with a strength;
the sampler mixes the entries' predictions by area (:mod:`.regional`).
"""

from __future__ import annotations

from dataclasses import replace

from sd_runtime import lora
from sd_runtime.comfyui.nodes import MAX_RESOLUTION, Clip, Conditioning, Context, NodeDef, NodeExecutionError, _torch


def clip_text_encode_sdxl(
    ctx: Context,
    clip: Clip,
    width: int,
    height: int,
    crop_w: int,
    crop_h: int,
    target_width: int,
    target_height: int,
    text_g: str,
    text_l: str,
) -> tuple:
    torch = _torch()
    pipe = clip.pipe
    if getattr(pipe, "text_encoder_2", None) is None:
        raise NodeExecutionError("CLIPTextEncodeSDXL needs an SDXL checkpoint (this CLIP has one text encoder)")
    text_only = [replace(u, unet=0.0) for u in clip.loras]
    with lora.applied(pipe, text_only), torch.inference_mode():
        embeds, _, pooled, _ = pipe.encode_prompt(
            prompt=text_l,
            prompt_2=text_g,
            device=pipe.text_encoder_2.device,
            num_images_per_prompt=1,
            do_classifier_free_guidance=False,
            clip_skip=clip.clip_skip,
        )
    sizes = {
        "original_size": (height, width),
        "crops_coords_top_left": (crop_h, crop_w),
        "target_size": (target_height, target_width),
    }
    return (Conditioning(embeds=embeds.float().cpu(), pooled=pooled.float().cpu(), sizes=sizes),)


def _each(conditioning: Conditioning, change) -> Conditioning:
    """``change`` applied to every entry of a conditioning (ComfyUI's nodes map over its list)."""
    head, *rest = (change(e) for e in conditioning.entries())
    return replace(head, others=tuple(rest))


def conditioning_zero_out(ctx: Context, conditioning: Conditioning) -> tuple:
    torch = _torch()

    def zero(e: Conditioning) -> Conditioning:
        pooled = torch.zeros_like(e.pooled) if e.pooled is not None else None
        return replace(e, embeds=torch.zeros_like(e.embeds), pooled=pooled)

    return (_each(conditioning, zero),)


def conditioning_combine(ctx: Context, conditioning_1: Conditioning, conditioning_2: Conditioning) -> tuple:
    head, *rest = entries = (*conditioning_1.entries(), *conditioning_2.entries())
    if len({e.pooled is None for e in entries}) > 1:
        raise NodeExecutionError("conditioning_1 and conditioning_2 come from different model families")
    return (replace(head, others=tuple(rest)),)


def conditioning_set_area(
    ctx: Context, conditioning: Conditioning, width: int, height: int, x: int, y: int, strength: float
) -> tuple:
    area = (height // 8, width // 8, y // 8, x // 8)
    return (_each(conditioning, lambda e: replace(e, area=area, strength=strength)),)


_AREA = ("INT", {"default": 64, "min": 64, "max": MAX_RESOLUTION, "step": 8})
_OFFSET = ("INT", {"default": 0, "min": 0, "max": MAX_RESOLUTION, "step": 8})
_SIZE = ("INT", {"default": 1024, "min": 0, "max": MAX_RESOLUTION})
_CROP = ("INT", {"default": 0, "min": 0, "max": MAX_RESOLUTION})
_TEXT = ("STRING", {"multiline": True, "dynamicPrompts": True})

NODE_DEFS = [
    NodeDef(
        "CLIPTextEncodeSDXL",
        "CLIPTextEncodeSDXL",
        "advanced/conditioning",
        {
            "clip": ("CLIP", {}),
            "width": _SIZE,
            "height": _SIZE,
            "crop_w": _CROP,
            "crop_h": _CROP,
            "target_width": _SIZE,
            "target_height": _SIZE,
            "text_g": _TEXT,
            "text_l": _TEXT,
        },
        ("CONDITIONING",),
        clip_text_encode_sdxl,
        description="SDXL: text_g to the OpenCLIP bigG encoder, text_l to CLIP ViT-L; the sizes are SDXL's "
        "micro-conditioning.",
    ),
    NodeDef(
        "ConditioningZeroOut",
        "ConditioningZeroOut",
        "advanced/conditioning",
        {"conditioning": ("CONDITIONING", {})},
        ("CONDITIONING",),
        conditioning_zero_out,
        description="Zeros the embeddings (and the pooled embedding) of a conditioning.",
    ),
    NodeDef(
        "ConditioningCombine",
        "Conditioning (Combine)",
        "conditioning",
        {"conditioning_1": ("CONDITIONING", {}), "conditioning_2": ("CONDITIONING", {})},
        ("CONDITIONING",),
        conditioning_combine,
        description="Both conditionings' entries: the sampler runs each and averages the predictions by area.",
    ),
    NodeDef(
        "ConditioningSetArea",
        "Conditioning (Set Area)",
        "conditioning",
        {
            "conditioning": ("CONDITIONING", {}),
            "width": _AREA,
            "height": _AREA,
            "x": _OFFSET,
            "y": _OFFSET,
            "strength": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 10.0, "step": 0.01}),
        },
        ("CONDITIONING",),
        conditioning_set_area,
        description="Limits the conditioning to an area (pixels) with a strength, for ConditioningCombine.",
    ),
]
