"""Several conditionings in one sampler step, as ComfyUI's ``calc_cond_batch`` does.

A CONDITIONING made by ``ConditioningCombine`` holds several entries, each maybe limited
to an area (``ConditioningSetArea``) with a strength. At every step ComfyUI runs the model
once per entry on that entry's area of the latent, weights each prediction by its strength
(faded over up to 8 latent pixels at area edges inside the image) and divides by the sum
of the weights per pixel; classifier-free guidance then mixes the positive and negative
results. diffusers' pipelines take one conditioning, so :func:`regional_unet` replaces
the UNet's forward for one pipeline call: it gets the pipeline's batch (negative half,
positive half under CFG) and returns the weighted predictions instead.

ComfyUI mixes denoised images, this mixes noise predictions: with weights that sum to
one per pixel the two are the same. Where no entry covers a pixel ComfyUI predicts a
denoised value of zero; that has no noise-prediction equivalent here, so a conditioning
that leaves part of the latent uncovered fails the sampler naming it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from sd_runtime.comfyui.nodes import Conditioning, NodeExecutionError, _torch

FUZZ = 8
"""ComfyUI's edge fade of an area, in latent pixels (at most a quarter of the area's side)."""


def needs_regions(*conds: Conditioning) -> bool:
    return any(c.others or c.area is not None for c in conds)


def _weights(x: Any, area: tuple[int, int, int, int] | None, strength: float) -> tuple[tuple[slice, slice], Any]:
    """The latent region of an entry and its weight there (strength, faded at inner edges)."""
    torch = _torch()
    height, width = x.shape[2], x.shape[3]
    h, w, y, left = area or (height, width, 0, 0)
    h, w = min(height - y, h), min(width - left, w)
    if h <= 0 or w <= 0:
        return (slice(0, 0), slice(0, 0)), None
    mult = torch.full((1, 1, h, w), float(strength), dtype=x.dtype, device=x.device)
    if area is not None:
        for dim, (offset, size, full) in enumerate(((y, h, height), (left, w, width))):
            rr = min(FUZZ, size // 4)
            for t in range(rr):
                fade = (t + 1) / rr
                if offset != 0:
                    mult.narrow(2 + dim, t, 1).mul_(fade)
                if offset + size < full:
                    mult.narrow(2 + dim, size - 1 - t, 1).mul_(fade)
    return (slice(y, y + h), slice(left, left + w)), mult


def _time_ids(entry: Conditioning, latent_hw: tuple[int, int], batch: int, like: Any) -> Any:
    """SDXL's add_time_ids of one entry: its own sizes, else the latent's (ComfyUI's default)."""
    torch = _torch()
    full = (latent_hw[0] * 8, latent_hw[1] * 8)
    sizes = entry.sizes or {"original_size": full, "crops_coords_top_left": (0, 0), "target_size": full}
    ids = [*sizes["original_size"], *sizes["crops_coords_top_left"], *sizes["target_size"]]
    return torch.tensor([ids], dtype=like.dtype, device=like.device).repeat(batch, 1)


@contextlib.contextmanager
def regional_unet(unet: Any, positive: Conditioning, negative: Conditioning, batch: int) -> Iterator[None]:
    """While the block runs, ``unet`` predicts as ComfyUI mixes the entries of ``positive`` and ``negative``."""
    torch = _torch()
    original = unet.forward

    def mixed(x: Any, timestep: Any, entries: tuple[Conditioning, ...], kwargs: dict[str, Any]) -> Any:
        out = torch.zeros_like(x)
        count = torch.full_like(x, 1e-37)
        for entry in entries:
            (ys, xs), mult = _weights(x, entry.area, entry.strength)
            if mult is None:
                continue
            extra = dict(kwargs)
            embeds = entry.embeds[:1].repeat(x.shape[0], 1, 1).to(device=x.device, dtype=x.dtype)
            if entry.pooled is not None:
                extra["added_cond_kwargs"] = {
                    "text_embeds": entry.pooled[:1].repeat(x.shape[0], 1).to(device=x.device, dtype=x.dtype),
                    "time_ids": _time_ids(entry, (x.shape[2], x.shape[3]), x.shape[0], x),
                }
            pred = original(x[:, :, ys, xs], timestep, encoder_hidden_states=embeds, return_dict=False, **extra)[0]
            out[:, :, ys, xs] += pred * mult
            count[:, :, ys, xs] += mult
        if bool((count <= 1e-30).any()):
            raise NodeExecutionError(
                "the conditioning leaves part of the latent without any entry (ComfyUI predicts zero there): "
                "not implemented; combine the areas with a conditioning that covers the whole image"
            )
        return out / count

    def forward(sample: Any, timestep: Any, **kwargs: Any) -> Any:
        return_dict = kwargs.pop("return_dict", True)
        kwargs.pop("encoder_hidden_states", None)
        added = kwargs.pop("added_cond_kwargs", None)
        if added is not None:
            kwargs["added_cond_kwargs"] = added  # SD 1.x passes None; SDXL's is replaced per entry
        halves = (negative, positive) if sample.shape[0] == 2 * batch else (positive,)
        chunks = sample.chunk(len(halves))
        result = torch.cat([mixed(x, timestep, c.entries(), kwargs) for x, c in zip(chunks, halves, strict=True)])
        if return_dict:
            from diffusers.models.unets.unet_2d_condition import UNet2DConditionOutput

            return UNet2DConditionOutput(sample=result)
        return (result,)

    unet.forward = forward
    try:
        yield
    finally:
        del unet.forward
