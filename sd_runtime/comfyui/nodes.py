"""The ComfyUI nodes sdeks implements, on the engine's diffusers components.

Each node is a :class:`NodeDef`: its input spec in ComfyUI's ``/object_info``
format, its output types and a function run on the engine's worker thread.
Values passed between nodes keep ComfyUI's conventions where clients can see
them (IMAGE = float tensor ``[B, H, W, C]`` in 0..1 on the CPU, MASK =
``[B, H, W]``, LATENT = ``{"samples": [B, 4, H/8, W/8]}``); the latents are
kept in diffusers' scaled space (``× vae.config.scaling_factor``), which no
client observes.

The samplers live in :mod:`.nodes_sampling`; the other modules ``nodes_*`` add their
nodes to :data:`NODES` at the end of this one.
"""

from __future__ import annotations

import hashlib
import json
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from PIL import Image, ImageOps

from sd_runtime import imageio, lora, prompt_weighting
from sd_runtime.errors import RuntimeApiError
from sd_runtime.interrupt import Interrupted  # ComfyUI's name; the engine's hard stop raises it too
from sd_runtime.models import resolve

MAX_RESOLUTION = 16384
MAX_SEED = 0xFFFF_FFFF_FFFF_FFFF
"""ComfyUI's own KSampler seed bound (64-bit), not the sdeks contract's A1111 seed bound."""
MAX_BATCH = 64

UPSCALE_METHODS_LATENT = ["nearest-exact", "bilinear", "area", "bicubic"]
"""ComfyUI's ``bislerp`` is not offered: a workflow naming it is refused rather than silently rendered bilinear."""
UPSCALE_METHODS_IMAGE = ["nearest-exact", "bilinear", "area", "bicubic", "lanczos"]
CROP_METHODS = ["disabled", "center"]


MAX_PIXELS_OUT = 4096 * 4096
"""Largest image (pixels per batch item) a node may produce: beyond it one request could exhaust memory."""


def check_size(width: int, height: int, batch: int = 1) -> None:
    if width * height > MAX_PIXELS_OUT or width * height * batch > MAX_PIXELS_OUT * 4:
        raise NodeExecutionError(
            f"{batch}x{width}x{height} exceeds this runtime's limit of {MAX_PIXELS_OUT} pixels per image "
            f"({MAX_PIXELS_OUT * 4} per batch)"
        )


class NodeExecutionError(Exception):
    """A node failed in a way the client should read (an unknown checkpoint, a bad image)."""


# ---- values passed between nodes ---------------------------------------------------


@dataclass
class Model:
    """MODEL: the loaded pipelines, plus the LoRAs its UNet runs with (applied only while sampling)."""

    pipes: dict[str, Any]
    title: str
    scheduler_config: dict[str, Any]
    loras: tuple[lora.LoraUse, ...] = ()


@dataclass
class Clip:
    """CLIP: the text encoder's pipeline, plus the LoRAs it encodes with (applied only while encoding)."""

    pipe: Any
    clip_skip: int | None = None
    loras: tuple[lora.LoraUse, ...] = ()


@dataclass
class Vae:
    vae: Any
    scale_factor: int


@dataclass
class Conditioning:
    """CONDITIONING: token embeddings, and for SDXL the second encoder's pooled embedding too."""

    embeds: Any  # [1 or B, tokens, dim] on the CPU
    pooled: Any = None  # SDXL: [1 or B, dim] on the CPU
    sizes: dict[str, tuple[int, int]] | None = None  # SDXL micro-conditioning (CLIPTextEncodeSDXL); None: latent size
    area: tuple[int, int, int, int] | None = None  # ConditioningSetArea: (h, w, y, x) in latent pixels
    strength: float = 1.0
    others: tuple[Conditioning, ...] = ()  # ConditioningCombine: the entries sampled with this one

    def entries(self) -> tuple[Conditioning, ...]:
        """ComfyUI's conditioning list: this entry, then the ones combined with it."""
        return (replace(self, others=()), *self.others)


# ---- node definitions ----------------------------------------------------------------


@dataclass
class Context:
    """What a node sees while it runs (on the worker thread)."""

    engine: Any
    files: Any  # api.FileStore
    prompt: dict[str, Any]
    prompt_id: str
    node_id: str = ""
    on_progress: Callable[[int, int], None] = lambda value, total: None
    interrupted: Callable[[], bool] = lambda: False

    def check_interrupt(self) -> None:
        if self.interrupted():
            raise Interrupted()


Choices = list[str] | Callable[[Any], list[str]]


@dataclass
class NodeDef:
    name: str
    display_name: str
    category: str
    required: dict[str, tuple[Any, dict[str, Any]]]
    outputs: tuple[str, ...]
    fn: Callable[..., tuple]
    output_names: tuple[str, ...] = ()
    optional: dict[str, tuple[Any, dict[str, Any]]] = field(default_factory=dict)
    output_node: bool = False
    description: str = ""
    validate_inputs: Callable[[dict[str, Any]], list[tuple[str, str]]] | None = None
    """ComfyUI's VALIDATE_INPUTS: (input, reason) for constant inputs this runtime refuses together."""
    is_changed: Callable[[Any, dict[str, Any]], Any] | None = None
    """ComfyUI's IS_CHANGED: what, beyond the inputs, makes the output differ (a file's content)."""

    def input_spec(self, name: str) -> tuple[Any, dict[str, Any]] | None:
        return self.required.get(name) or self.optional.get(name)

    def object_info(self, state: Any) -> dict[str, Any]:
        def spec(entry: tuple[Any, dict[str, Any]]) -> list[Any]:
            kind, opts = entry
            if callable(kind):
                kind = kind(state)
            return [kind, opts] if opts else [kind]

        info_input: dict[str, Any] = {"required": {k: spec(v) for k, v in self.required.items()}}
        if self.optional:
            info_input["optional"] = {k: spec(v) for k, v in self.optional.items()}
        order: dict[str, list[str]] = {"required": list(self.required)}
        if self.optional:
            order["optional"] = list(self.optional)
        return {
            "input": info_input,
            "input_order": order,
            "output": list(self.outputs),
            "output_is_list": [False] * len(self.outputs),
            "output_name": list(self.output_names or self.outputs),
            "name": self.name,
            "display_name": self.display_name,
            "description": self.description,
            "python_module": "nodes",
            "category": self.category,
            "output_node": self.output_node,
            "deprecated": False,
            "experimental": False,
        }


# ---- helpers -------------------------------------------------------------------------


def _torch():
    import torch

    return torch


def engine_pipes(engine: Any) -> dict[str, Any]:
    """The loaded model's pipelines (txt2img / img2img / inpaint share one set of components)."""
    pipes = engine.pipes
    if not pipes:
        raise NodeExecutionError("no model is loaded")
    return pipes


def png_bytes(img: Image.Image, prompt: dict[str, Any] | None) -> bytes:
    """PNG with ComfyUI's ``prompt`` text chunk (the API-format workflow that made it)."""
    return imageio.png_bytes(img, {"prompt": json.dumps(prompt)} if prompt is not None else None, compress_level=4)


def image_to_pil(images: Any) -> list[Image.Image]:
    import numpy as np

    arr = (images.clamp(0, 1).numpy() * 255.0).round().astype(np.uint8)
    return [Image.fromarray(a[..., :3] if a.shape[-1] >= 3 else a[..., 0]) for a in arr]


def pil_to_image(img: Image.Image) -> tuple[Any, Any]:
    """PIL → (IMAGE [1,H,W,3], MASK [1,H,W]) as ComfyUI's LoadImage: mask = 1 - alpha."""
    import numpy as np

    torch = _torch()
    img = ImageOps.exif_transpose(img)
    rgb = np.asarray(img.convert("RGB"), dtype=np.float32) / 255.0
    image = torch.from_numpy(rgb)[None]
    if "A" in img.getbands():
        alpha = np.asarray(img.getchannel("A"), dtype=np.float32) / 255.0
        mask = 1.0 - torch.from_numpy(alpha)[None]
    else:
        mask = torch.zeros((1, 64, 64), dtype=torch.float32)
    return image, mask


def _center_crop(t: Any, width: int, height: int) -> Any:
    """Crop a ``[B, C, H, W]`` tensor to the target aspect ratio, centered (ComfyUI's ``crop: center``)."""
    old_w, old_h = t.shape[3], t.shape[2]
    old_aspect, new_aspect = old_w / old_h, width / height
    x = y = 0
    if old_aspect > new_aspect:
        x = round((old_w - old_w * (new_aspect / old_aspect)) / 2)
    elif old_aspect < new_aspect:
        y = round((old_h - old_h * (old_aspect / new_aspect)) / 2)
    return t[:, :, y : old_h - y, x : old_w - x]


def _target_size(width: int, height: int, old_w: int, old_h: int) -> tuple[int, int]:
    """0 for one side keeps the aspect ratio (ComfyUI); both 0 keeps the size."""
    if width == 0 and height == 0:
        return old_w, old_h
    if width == 0:
        width = max(1, round(old_w * height / old_h))
    elif height == 0:
        height = max(1, round(old_h * width / old_w))
    return width, height


def _resize(t: Any, width: int, height: int, method: str, crop: str) -> Any:
    """Resize ``[B, C, H, W]`` with a ComfyUI upscale method."""
    torch = _torch()
    import numpy as np

    if crop == "center":
        t = _center_crop(t, width, height)
    if method == "lanczos":
        out = []
        for frame in t:
            arr = (frame.permute(1, 2, 0).clamp(0, 1).numpy() * 255).round().astype(np.uint8)
            img = Image.fromarray(arr).resize((width, height), Image.Resampling.LANCZOS)
            out.append(torch.from_numpy(np.asarray(img, dtype=np.float32) / 255.0).permute(2, 0, 1))
        return torch.stack(out)
    kwargs = {"align_corners": False} if method in ("bilinear", "bicubic") else {}
    return torch.nn.functional.interpolate(t, size=(height, width), mode=method, **kwargs)


# ---- node implementations ---------------------------------------------------------


def checkpoint_choices(state: Any) -> list[str]:
    return [r.title for r in state.engine.models()]


def find_checkpoint(engine: Any, name: str) -> Any | None:
    """A model by name, resolved as the A1111 side does (:func:`sd_runtime.models.resolve`); never a path on disk."""
    if engine.model is not None and name in (engine.model.title, engine.model.model_name):
        return engine.model
    try:
        return resolve(name, engine.models_dir, engine.models())
    except RuntimeApiError:
        return None


def checkpoint_loader(ctx: Context, ckpt_name: str) -> tuple:
    ref = find_checkpoint(ctx.engine, ckpt_name)
    if ref is None:
        raise NodeExecutionError(f"checkpoint {ckpt_name!r} not found (GET /object_info lists the choices)")
    ctx.engine.load_on_worker(ref)  # worker thread: the whole prompt runs on it
    pipes = engine_pipes(ctx.engine)
    txt = pipes["txt2img"]
    model = Model(pipes=pipes, title=ref.title, scheduler_config=dict(txt.scheduler.config))
    return model, Clip(pipe=txt), Vae(vae=txt.vae, scale_factor=int(txt.vae_scale_factor))


def clip_set_last_layer(ctx: Context, clip: Clip, stop_at_clip_layer: int) -> tuple:
    skip = -stop_at_clip_layer - 1
    return (replace(clip, clip_skip=skip or None),)


def clip_text_encode(ctx: Context, text: str, clip: Clip) -> tuple:
    torch = _torch()
    pipe = clip.pipe
    text_only = [replace(u, unet=0.0) for u in clip.loras]
    with lora.applied(pipe, text_only), torch.inference_mode():
        encoded = prompt_weighting.encode(pipe, text, clip.clip_skip, a1111=False)  # (word:1.2), long prompts
    pooled = encoded.pooled.float().cpu() if encoded.pooled is not None else None
    return (Conditioning(embeds=encoded.embeds.float().cpu(), pooled=pooled),)


def lora_choices(state: Any) -> list[str]:
    """LoRA files under the models dir's ``Lora/`` folder, named as ComfyUI lists them (relative path)."""
    return [ref.file for ref in state.engine.loras()]


def lora_loader(
    ctx: Context, model: Model, clip: Clip, lora_name: str, strength_model: float, strength_clip: float
) -> tuple:
    ref = lora.find(lora_name, ctx.engine.loras(), "lora_name")
    use = lora.LoraUse(ref, unet=strength_model, text_encoder=strength_clip)
    return replace(model, loras=(*model.loras, use)), replace(clip, loras=(*clip.loras, use))


def lora_loader_model_only(ctx: Context, model: Model, lora_name: str, strength_model: float) -> tuple:
    ref = lora.find(lora_name, ctx.engine.loras(), "lora_name")
    return (replace(model, loras=(*model.loras, lora.LoraUse(ref, unet=strength_model, text_encoder=0.0))),)


def empty_latent_image(ctx: Context, width: int, height: int, batch_size: int) -> tuple:
    torch = _torch()
    check_size(width, height, batch_size)
    return ({"samples": torch.zeros((batch_size, 4, height // 8, width // 8), dtype=torch.float32)},)


def vae_decode(ctx: Context, samples: dict[str, Any], vae: Vae) -> tuple:
    torch = _torch()
    model = vae.vae
    cfg = model.config
    out = []
    with torch.inference_mode():
        for lat in samples["samples"].split(1):
            ctx.check_interrupt()
            z = lat.to(device=model.device, dtype=model.dtype) / cfg.scaling_factor
            if getattr(cfg, "shift_factor", None):
                z = z + cfg.shift_factor
            img = model.decode(z).sample
            out.append((img.float() / 2 + 0.5).clamp(0, 1).permute(0, 2, 3, 1).cpu())
    return (torch.cat(out),)


def vae_encode(ctx: Context, pixels: Any, vae: Vae) -> tuple:
    torch = _torch()
    model = vae.vae
    cfg = model.config
    f = vae.scale_factor
    h, w = (pixels.shape[1] // f) * f, (pixels.shape[2] // f) * f
    if h == 0 or w == 0:
        raise NodeExecutionError(f"image {pixels.shape[2]}x{pixels.shape[1]} is smaller than {f}x{f}")
    y0, x0 = (pixels.shape[1] % f) // 2, (pixels.shape[2] % f) // 2
    px = pixels[:, y0 : y0 + h, x0 : x0 + w, :3]
    out = []
    with torch.inference_mode():
        for frame in px.split(1):
            x = frame.permute(0, 3, 1, 2).to(device=model.device, dtype=model.dtype) * 2.0 - 1.0
            z = model.encode(x).latent_dist.mode()
            if getattr(cfg, "shift_factor", None):
                z = z - cfg.shift_factor
            out.append((z * cfg.scaling_factor).float().cpu())
    return ({"samples": torch.cat(out)},)


def load_image(ctx: Context, image: str) -> tuple:
    data = ctx.files.load_input(image, ctx.prompt_id)
    if data is None:
        raise NodeExecutionError(f"image {image!r} was not uploaded (POST /upload/image) and is not base64")
    try:
        img = imageio.open_image(data, "image", mode=None)
    except RuntimeApiError as exc:
        raise NodeExecutionError(f"image {image[:64]!r}: {exc.message}") from None
    return pil_to_image(img)


def image_fingerprint(ctx: Context, inputs: dict[str, Any]) -> str | None:
    """LoadImage's IS_CHANGED: the bytes this prompt would load (an upload may be overwritten under its name)."""
    data = ctx.files.load_input(inputs.get("image"), ctx.prompt_id)
    return hashlib.sha256(data).hexdigest() if data is not None else None


def latent_upscale(ctx: Context, samples: dict[str, Any], upscale_method: str, width: int, height: int, crop: str):
    s = samples["samples"]
    w, h = _target_size(width, height, s.shape[3] * 8, s.shape[2] * 8)
    check_size(w, h, s.shape[0])
    return ({**samples, "samples": _resize(s, max(1, w // 8), max(1, h // 8), upscale_method, crop)},)


def latent_upscale_by(ctx: Context, samples: dict[str, Any], upscale_method: str, scale_by: float):
    s = samples["samples"]
    w, h = max(1, round(s.shape[3] * scale_by)), max(1, round(s.shape[2] * scale_by))
    check_size(w * 8, h * 8, s.shape[0])
    return ({**samples, "samples": _resize(s, w, h, upscale_method, "disabled")},)


def image_scale(ctx: Context, image: Any, upscale_method: str, width: int, height: int, crop: str):
    w, h = _target_size(width, height, image.shape[2], image.shape[1])
    check_size(w, h, image.shape[0])
    out = _resize(image.permute(0, 3, 1, 2), w, h, upscale_method, crop)
    return (out.permute(0, 2, 3, 1).clamp(0, 1),)


def image_scale_by(ctx: Context, image: Any, upscale_method: str, scale_by: float):
    w, h = max(1, round(image.shape[2] * scale_by)), max(1, round(image.shape[1] * scale_by))
    check_size(w, h, image.shape[0])
    out = _resize(image.permute(0, 3, 1, 2), w, h, upscale_method, "disabled")
    return (out.permute(0, 2, 3, 1).clamp(0, 1),)


def _save(ctx: Context, images: Any, prefix: str, kind: str) -> dict[str, Any]:
    subfolder, _, base = prefix.replace("\\", "/").strip("/").rpartition("/")
    base = base or "ComfyUI"
    results = []
    for img in image_to_pil(images):
        filename = ctx.files.next_name(kind, subfolder, base)
        ctx.files.put(kind, subfolder, filename, png_bytes(img, ctx.prompt), owner=ctx.prompt_id)
        results.append({"filename": filename, "subfolder": subfolder, "type": kind})
    return {"images": results}


def save_image(ctx: Context, images: Any, filename_prefix: str) -> tuple:
    return ({"ui": _save(ctx, images, filename_prefix, "output")},)


def preview_image(ctx: Context, images: Any) -> tuple:
    return ({"ui": _save(ctx, images, "ComfyUI_temp_" + secrets.token_hex(3), "temp")},)


def input_image_choices(state: Any) -> list[str]:
    return state.files.input_names()


# ---- the registry ------------------------------------------------------------------

_INT_RES = ("INT", {"default": 512, "min": 16, "max": MAX_RESOLUTION, "step": 8})
_LORA_STRENGTH = ("FLOAT", {"default": 1.0, "min": -100.0, "max": 100.0, "step": 0.01})
_INT_RES0 = ("INT", {"default": 512, "min": 0, "max": MAX_RESOLUTION, "step": 1})

NODES: dict[str, NodeDef] = {
    n.name: n
    for n in [
        NodeDef(
            "CheckpointLoaderSimple",
            "Load Checkpoint",
            "loaders",
            {"ckpt_name": (checkpoint_choices, {"tooltip": "The name of the checkpoint (model) to load."})},
            ("MODEL", "CLIP", "VAE"),
            checkpoint_loader,
            description="Loads a diffusion model checkpoint.",
        ),
        NodeDef(
            "CLIPSetLastLayer",
            "CLIP Set Last Layer",
            "conditioning",
            {"clip": ("CLIP", {}), "stop_at_clip_layer": ("INT", {"default": -1, "min": -24, "max": -1, "step": 1})},
            ("CLIP",),
            clip_set_last_layer,
        ),
        NodeDef(
            "LoraLoader",
            "Load LoRA",
            "loaders",
            {
                "model": ("MODEL", {}),
                "clip": ("CLIP", {}),
                "lora_name": (lora_choices, {"tooltip": "A LoRA file in the models dir's Lora/ folder."}),
                "strength_model": _LORA_STRENGTH,
                "strength_clip": _LORA_STRENGTH,
            },
            ("MODEL", "CLIP"),
            lora_loader,
            description="Applies a LoRA to the diffusion model and the CLIP model (for this prompt only).",
        ),
        NodeDef(
            "LoraLoaderModelOnly",
            "LoraLoaderModelOnly",
            "loaders",
            {
                "model": ("MODEL", {}),
                "lora_name": (lora_choices, {}),
                "strength_model": _LORA_STRENGTH,
            },
            ("MODEL",),
            lora_loader_model_only,
            description="Applies a LoRA to the diffusion model only (for this prompt only).",
        ),
        NodeDef(
            "CLIPTextEncode",
            "CLIP Text Encode (Prompt)",
            "conditioning",
            {"text": ("STRING", {"multiline": True, "dynamicPrompts": True}), "clip": ("CLIP", {})},
            ("CONDITIONING",),
            clip_text_encode,
            description="Encodes a text prompt with a CLIP model.",
        ),
        NodeDef(
            "EmptyLatentImage",
            "Empty Latent Image",
            "latent",
            {
                "width": _INT_RES,
                "height": _INT_RES,
                "batch_size": ("INT", {"default": 1, "min": 1, "max": MAX_BATCH}),
            },
            ("LATENT",),
            empty_latent_image,
            description="Create a new batch of empty latent images to be denoised via sampling.",
        ),
        NodeDef(
            "VAEDecode", "VAE Decode", "latent", {"samples": ("LATENT", {}), "vae": ("VAE", {})}, ("IMAGE",), vae_decode
        ),
        NodeDef(
            "VAEEncode", "VAE Encode", "latent", {"pixels": ("IMAGE", {}), "vae": ("VAE", {})}, ("LATENT",), vae_encode
        ),
        NodeDef(
            "LoadImage",
            "Load Image",
            "image",
            {"image": (input_image_choices, {"image_upload": True})},
            ("IMAGE", "MASK"),
            load_image,
            is_changed=image_fingerprint,
            description="An uploaded image (POST /upload/image) by name, or an inline base64 image.",
        ),
        NodeDef(
            "LatentUpscale",
            "Upscale Latent",
            "latent",
            {
                "samples": ("LATENT", {}),
                "upscale_method": (UPSCALE_METHODS_LATENT, {}),
                "width": _INT_RES0,
                "height": _INT_RES0,
                "crop": (CROP_METHODS, {}),
            },
            ("LATENT",),
            latent_upscale,
        ),
        NodeDef(
            "LatentUpscaleBy",
            "Upscale Latent By",
            "latent",
            {
                "samples": ("LATENT", {}),
                "upscale_method": (UPSCALE_METHODS_LATENT, {}),
                "scale_by": ("FLOAT", {"default": 1.5, "min": 0.01, "max": 8.0, "step": 0.01}),
            },
            ("LATENT",),
            latent_upscale_by,
        ),
        NodeDef(
            "ImageScale",
            "Upscale Image",
            "image/upscaling",
            {
                "image": ("IMAGE", {}),
                "upscale_method": (UPSCALE_METHODS_IMAGE, {}),
                "width": _INT_RES0,
                "height": _INT_RES0,
                "crop": (CROP_METHODS, {}),
            },
            ("IMAGE",),
            image_scale,
        ),
        NodeDef(
            "ImageScaleBy",
            "Upscale Image By",
            "image/upscaling",
            {
                "image": ("IMAGE", {}),
                "upscale_method": (UPSCALE_METHODS_IMAGE, {}),
                "scale_by": ("FLOAT", {"default": 1.0, "min": 0.01, "max": 8.0, "step": 0.01}),
            },
            ("IMAGE",),
            image_scale_by,
        ),
        NodeDef(
            "SaveImage",
            "Save Image",
            "image",
            {"images": ("IMAGE", {}), "filename_prefix": ("STRING", {"default": "ComfyUI"})},
            (),
            save_image,
            output_node=True,
            description="Saves the input images (served by GET /view, listed in /history).",
        ),
        NodeDef(
            "PreviewImage",
            "Preview Image",
            "image",
            {"images": ("IMAGE", {})},
            (),
            preview_image,
            output_node=True,
            description="Saves the input images as temporary files.",
        ),
    ]
}


def _register() -> None:
    """Add the nodes of the ``nodes_*`` modules (they import this one's types, so they load after it)."""
    from sd_runtime.comfyui import nodes_conditioning, nodes_latent, nodes_loaders, nodes_sampling, nodes_upscale

    for module in (nodes_sampling, nodes_conditioning, nodes_latent, nodes_loaders, nodes_upscale):
        NODES.update((n.name, n) for n in module.NODE_DEFS)


_register()
