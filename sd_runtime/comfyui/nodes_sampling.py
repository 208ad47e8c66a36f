"""ComfyUI's samplers, ``KSampler`` and ``KSamplerAdvanced``, on diffusers' img2img pipeline.

Both run ``StableDiffusion(XL)Img2ImgPipeline`` with ``prompt_embeds`` and the input
latents (``output_type="latent"``): at ``denoise`` 1 the latent is fully noised, which is
ComfyUI's text-to-image on an empty latent; below 1 it is ComfyUI's partial denoise, run
for ``steps`` steps as ComfyUI does (diffusers gets ``ceil(steps / denoise)`` and keeps the
last ``steps``). The initial noise comes from a CPU generator seeded with ``seed``, so a
seed renders the same image on any device.

Masked sampling (a latent with ``noise_mask``, from ``SetLatentNoiseMask`` or
``VAEEncodeForInpaint``) is latent blending, as ComfyUI and diffusers' inpaint pipeline
do for a regular (4-channel) UNet: after every step the unmasked part is replaced by the
input latent noised to the next step's level (the very same noise), and after the last
step by the input latent itself.

``KSamplerAdvanced``'s window maps onto the same pipeline: ``start_at_step`` k of
``steps`` is strength ``(steps − k) / steps`` (diffusers skips the first k timesteps of a
``steps`` schedule); ``add_noise: disable`` makes the scheduler's initial ``add_noise``
return the latent unchanged (it is already noisy); ``end_at_step`` < ``steps`` stops
the loop after that step and returns the latent with its leftover noise. What diffusers
cannot do is ComfyUI's *forced* full denoise at an early ``end_at_step`` (the last step
jumping to sigma 0): that combination is refused at validation (:func:`check_advanced`).
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import replace
from typing import Any

from sd_runtime import lora
from sd_runtime.comfyui.nodes import MAX_SEED, Conditioning, Context, Model, NodeDef, NodeExecutionError, _torch
from sd_runtime.comfyui.regional import needs_regions, regional_unet
from sd_runtime.samplers import COMFY_SAMPLERS, COMFY_SCHEDULERS, make_scheduler


def steps_for_denoise(steps: int, denoise: float) -> int:
    """The diffusers ``num_inference_steps`` whose last ``steps`` steps are ComfyUI's partial denoise."""
    if denoise >= 1.0:
        return steps
    n = max(steps, int(steps / denoise))
    while int(n * denoise) < steps and n < steps * 10000:
        n += 1
    return n


def _batched(e: Any, batch: int, device: Any, dtype: Any) -> Any:
    """A conditioning tensor (embeds or pooled) repeated to the latent batch, on the UNet's device."""
    if e.shape[0] != batch:
        e = e[:1].repeat(batch, *([1] * (e.ndim - 1)))
    return e.to(device=device, dtype=dtype)


def _sdxl_kwargs(positive: Conditioning, negative: Conditioning, batch: int, size: tuple[int, int], device, dtype):
    """SDXL's pooled embeddings and size micro-conditioning for the pipeline call; none for SD 1.x.

    A conditioning without sizes (plain ``CLIPTextEncode``) is conditioned on the latent's
    size, as ComfyUI does.
    """
    if positive.pooled is None or negative.pooled is None:
        if positive.pooled is not None or negative.pooled is not None:
            raise NodeExecutionError("positive and negative conditioning come from different model families")
        return {}
    kwargs: dict[str, Any] = {
        "pooled_prompt_embeds": _batched(positive.pooled, batch, device, dtype),
        "negative_pooled_prompt_embeds": _batched(negative.pooled, batch, device, dtype),
    }
    default = {"original_size": size, "crops_coords_top_left": (0, 0), "target_size": size}
    pos = positive.sizes or default
    neg = negative.sizes or default
    kwargs.update(pos)
    kwargs.update(negative_original_size=neg["original_size"], negative_target_size=neg["target_size"])
    return kwargs


def _resized_mask(mask: Any, samples: Any) -> Any:
    """A ``[B, 1, H, W]`` noise mask at the latent's size and batch (bilinear, as ComfyUI's ``prepare_mask``)."""
    torch = _torch()
    m = mask.reshape(-1, 1, mask.shape[-2], mask.shape[-1]).float()
    m = torch.nn.functional.interpolate(m, size=samples.shape[-2:], mode="bilinear")
    if m.shape[0] < samples.shape[0]:
        m = m.repeat(-(-samples.shape[0] // m.shape[0]), 1, 1, 1)
    return m[: samples.shape[0]]


def sample(
    ctx: Context,
    model: Model,
    seed: int,
    steps: int,
    cfg: float,
    sampler_name: str,
    scheduler: str,
    positive: Conditioning,
    negative: Conditioning,
    latent: dict[str, Any],
    denoise: float = 1.0,
    add_noise: bool = True,
    start: int = 0,
    end: int | None = None,
) -> dict[str, Any]:
    """Denoise ``latent``: ``denoise`` < 1 (KSampler) or the step window ``start``..``end`` (KSamplerAdvanced)."""
    torch = _torch()
    from diffusers.utils.torch_utils import randn_tensor

    samples = latent["samples"]
    last = steps if end is None else min(end, steps)
    if denoise <= 0.0 or start >= last:
        return {**latent, "samples": samples.clone()}
    if start > 0:  # diffusers skips int(steps × (1 − strength)) timesteps: exactly `start` with this strength
        num_steps, strength = steps, min(1.0, (steps - start + 0.5) / steps)
    else:
        num_steps, strength = steps_for_denoise(steps, denoise), denoise
    stop_after = last - start if last < steps else None

    pipe = model.pipes["img2img"]
    device, dtype = pipe.unet.device, pipe.unet.dtype
    batch = samples.shape[0]
    pos = _batched(positive.embeds, batch, device, dtype)
    neg = _batched(negative.embeds, batch, device, dtype)
    extra = _sdxl_kwargs(positive, negative, batch, (samples.shape[2] * 8, samples.shape[3] * 8), device, dtype)
    if neg.shape[1] != pos.shape[1]:  # different token lengths: pad the shorter with its last token
        n = max(pos.shape[1], neg.shape[1])
        pos, neg = (torch.cat([t, t[:, -1:].repeat(1, n - t.shape[1], 1)], 1) for t in (pos, neg))
    sched = make_scheduler(sampler_name, scheduler, model.scheduler_config)
    if not add_noise:  # the latent already carries its noise (a previous sampler's leftover)
        sched.add_noise = lambda original_samples, noise, timesteps: original_samples
    pipe.scheduler = sched
    orig = samples.to(device=device, dtype=dtype)
    mask = latent.get("noise_mask")
    if mask is not None:
        mask = _resized_mask(mask, samples).to(device=device, dtype=dtype)
        # the pipeline's own initial noise, drawn again from the same seed (diffusers' prepare_latents)
        noise = randn_tensor(tuple(orig.shape), generator=torch.Generator("cpu").manual_seed(seed), device=device)
        noise = noise.to(dtype) if add_noise else torch.zeros_like(orig)

    def on_step(p: Any, i: int, _t: Any, kwargs: dict) -> dict:
        ctx.check_interrupt()
        total = stop_after or int(p.num_timesteps)
        ctx.on_progress(min(i + 1, total), total)
        stopping = stop_after is not None and i + 1 >= stop_after
        if mask is not None:
            timesteps = p.scheduler.timesteps[-int(p.num_timesteps) :]
            proper = orig
            if i + 1 < len(timesteps):  # not the schedule's last step: the input noised to the next level
                proper = type(sched).add_noise(sched, orig, noise, timesteps[i + 1 : i + 2])
            kwargs["latents"] = mask * kwargs["latents"] + (1 - mask) * proper
        if stopping:
            p._interrupt = True  # diffusers skips the remaining steps and returns the latents as they are
        return kwargs

    ctx.check_interrupt()
    ctx.on_progress(0, stop_after or steps)
    unet_only = [replace(u, text_encoder=0.0) for u in model.loras]
    regional = needs_regions(positive, negative)
    regions = regional_unet(pipe.unet, positive, negative, batch) if regional else nullcontext()
    with lora.applied(model.pipes["txt2img"], unet_only), regions, torch.inference_mode():
        out = pipe(
            prompt_embeds=pos,
            negative_prompt_embeds=neg,
            image=orig,
            strength=strength,
            num_inference_steps=num_steps,
            guidance_scale=cfg,
            generator=torch.Generator("cpu").manual_seed(seed),
            output_type="latent",
            callback_on_step_end=on_step,
            **extra,
        )
    return {**latent, "samples": out.images.float().cpu()}


def ksampler(
    ctx: Context,
    model: Model,
    seed: int,
    steps: int,
    cfg: float,
    sampler_name: str,
    scheduler: str,
    positive: Conditioning,
    negative: Conditioning,
    latent_image: dict[str, Any],
    denoise: float,
) -> tuple:
    args = (ctx, model, seed, steps, cfg, sampler_name, scheduler, positive, negative, latent_image)
    return (sample(*args, denoise=denoise),)


def ksampler_advanced(
    ctx: Context,
    model: Model,
    add_noise: str,
    noise_seed: int,
    steps: int,
    cfg: float,
    sampler_name: str,
    scheduler: str,
    positive: Conditioning,
    negative: Conditioning,
    latent_image: dict[str, Any],
    start_at_step: int,
    end_at_step: int,
    return_with_leftover_noise: str,
) -> tuple:
    args = (ctx, model, noise_seed, steps, cfg, sampler_name, scheduler, positive, negative, latent_image)
    return (sample(*args, add_noise=add_noise == "enable", start=start_at_step, end=end_at_step),)


def check_advanced(inputs: dict[str, Any]) -> list[tuple[str, str]]:
    """KSamplerAdvanced combinations diffusers cannot render faithfully, as (input, reason)."""
    steps, end = inputs.get("steps"), inputs.get("end_at_step")
    start, leftover = inputs.get("start_at_step", 0), inputs.get("return_with_leftover_noise")
    if isinstance(steps, int) and isinstance(end, int) and end < steps and start < end and leftover == "disable":
        return [
            (
                "return_with_leftover_noise",
                f"end_at_step {end} < steps {steps} with return_with_leftover_noise 'disable' (ComfyUI forces the "
                "last step to sigma 0) is not implemented: diffusers' schedulers cannot jump to zero noise "
                "mid-schedule. Use 'enable' (the latent keeps its leftover noise) or end_at_step >= steps",
            )
        ]
    return []


_SAMPLER_COMMON: dict[str, tuple[Any, dict[str, Any]]] = {
    "steps": ("INT", {"default": 20, "min": 1, "max": 10000}),
    "cfg": ("FLOAT", {"default": 8.0, "min": 0.0, "max": 100.0, "step": 0.1, "round": 0.01}),
    "sampler_name": (list(COMFY_SAMPLERS), {}),
    "scheduler": (list(COMFY_SCHEDULERS), {}),
    "positive": ("CONDITIONING", {}),
    "negative": ("CONDITIONING", {}),
    "latent_image": ("LATENT", {}),
}
_SEED = ("INT", {"default": 0, "min": 0, "max": MAX_SEED, "control_after_generate": True})

NODE_DEFS = [
    NodeDef(
        "KSampler",
        "KSampler",
        "sampling",
        {
            "model": ("MODEL", {}),
            "seed": _SEED,
            **_SAMPLER_COMMON,
            "denoise": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 1.0, "step": 0.01}),
        },
        ("LATENT",),
        ksampler,
        description="Uses the provided model, positive and negative conditioning to denoise the latent image.",
    ),
    NodeDef(
        "KSamplerAdvanced",
        "KSampler (Advanced)",
        "sampling",
        {
            "model": ("MODEL", {}),
            "add_noise": (["enable", "disable"], {}),
            "noise_seed": _SEED,
            **_SAMPLER_COMMON,
            "start_at_step": ("INT", {"default": 0, "min": 0, "max": 10000}),
            "end_at_step": ("INT", {"default": 10000, "min": 0, "max": 10000}),
            "return_with_leftover_noise": (["disable", "enable"], {}),
        },
        ("LATENT",),
        ksampler_advanced,
        validate_inputs=check_advanced,
        description="KSampler over a window of the schedule (start_at_step..end_at_step), optionally without "
        "adding noise and returning the latent with its leftover noise. An early end_at_step needs "
        "return_with_leftover_noise 'enable' here.",
    ),
]
