"""The AUTOMATIC1111 ``/sdapi/v1`` dialect over the engine.

Request bodies are typed FastAPI bodies built on the contract's content models (the
same ones the API front door uses), so a body the API accepted is one the runtime
accepts, and the runtime's own ``/docs`` page documents every request.
Fields the runtime does not implement are accepted, ignored, and listed in
``info["ignored_fields"]`` so a caller can see that they had no effect.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from typing import Any

from fastapi import APIRouter
from PIL import Image
from pydantic import BaseModel, ConfigDict, Field

from sd_runtime import a1111_overrides, lora, vae
from sd_runtime import hires as hires_fix
from sd_runtime.a1111_fields import ignored_fields, prompt_syntax
from sd_runtime.engine import Engine, GenerationRequest, GenerationResult
from sd_runtime.errors import InvalidInputError, NoModelError
from sd_runtime.imageio import decode_image, encode_png
from sd_runtime.samplers import a1111_samplers, a1111_schedulers
from sd_runtime.upscale import a1111_upscalers, resolve, upscale
from sd_runtime.upscale_models import MAX_OVERLAP, MAX_TILE, TileStats
from sdeks.contract import (
    ExtraBatchImagesContent,
    ExtraSingleImageContent,
    Img2ImgContent,
    Txt2ImgContent,
)

GEN_FIELDS = (set(GenerationRequest.__dataclass_fields__) & set(Txt2ImgContent.model_fields)) - {"denoising_strength"}
"""Contract fields the engine request takes as they are (img2img adds its own)."""
IMG2IMG_FIELDS = GEN_FIELDS | {"init_images", "mask", "denoising_strength"}  # resize_mode 0 (resize) is what we do
UPSCALE_FIELDS = {
    "resize_mode",
    "upscaling_resize",
    "upscaling_resize_w",
    "upscaling_resize_h",
    "upscaler_1",
    "upscaler_2",
    "extras_upscaler_2_visibility",
}


class PngInfoBody(BaseModel):
    """``POST /sdapi/v1/png-info``: an inline base64 PNG (bare or data URI)."""

    model_config = ConfigDict(extra="forbid")

    image: str = Field(min_length=1, description="base64 PNG, as the images this API returns")


def parse_infotext(text: str) -> dict[str, Any]:
    """A1111's generation parameters text → ``{"Prompt", "Negative prompt", "Steps", ...}``."""
    lines = text.strip().split("\n")
    params_line = lines.pop() if lines and re.match(r"^\w[\w ]*: ", lines[-1]) else ""
    prompt, negative, in_negative = [], [], False
    for line in lines:
        if line.startswith("Negative prompt: "):
            in_negative, line = True, line.removeprefix("Negative prompt: ")
        (negative if in_negative else prompt).append(line)
    out: dict[str, Any] = {"Prompt": "\n".join(prompt), "Negative prompt": "\n".join(negative)}
    for key, value in re.findall(r"\s*(\w[\w \-/+]*):\s*([^,]*)(?:,|$)", params_line):
        out[key.strip()] = value.strip()
    return out


class OptionsBody(BaseModel):
    """``POST /sdapi/v1/options``: the options this runtime can change (any other one is a 422 naming it)."""

    model_config = ConfigDict(extra="forbid")

    sd_model_checkpoint: str | None = Field(
        default=None, min_length=1, max_length=256, description="checkpoint to load (title, name or file name)"
    )
    ESRGAN_tile: int | None = Field(  # A1111's option name
        default=None, ge=0, le=MAX_TILE, description="model upscalers' tile size in input pixels (0: no tiling)"
    )
    ESRGAN_tile_overlap: int | None = Field(  # A1111's option name
        default=None, ge=0, le=MAX_OVERLAP, description="overlap of those tiles in input pixels"
    )


def infotext(req: GenerationRequest, prompt: str, seed: int, model: str) -> str:
    """A1111's human-readable generation parameters (also stored in the PNG)."""
    parts = [
        f"Steps: {req.steps}",
        f"Sampler: {req.sampler_name}",
        f"Schedule type: {req.scheduler or 'automatic'}",
        f"CFG scale: {req.cfg_scale:g}",
        f"Seed: {seed}",
        f"Size: {req.width}x{req.height}",
        f"Model: {model}",
    ]
    if req.init_images:
        parts.append(f"Denoising strength: {req.denoising_strength:g}")
    if req.hires is not None:
        parts.append(f"Denoising strength: {req.hires.denoising:g}")
        parts.append(f"Hires upscale: {req.hires.scale:g}")
        parts.append(f"Hires steps: {req.hires.steps}")
        parts.append(f"Hires upscaler: {req.hires.upscaler}")
    if req.loras:
        parts.append("Lora: " + " ".join(f"{u.ref.name}:{u.text_encoder:g}:{u.unet:g}" for u in req.loras))
    neg = f"\nNegative prompt: {req.negative_prompt}" if req.negative_prompt else ""
    return f"{prompt}{neg}\n{', '.join(parts)}"


def build_response(
    req: GenerationRequest, prompt: str, result: GenerationResult, parameters: dict[str, Any], ignored: list[str]
) -> dict[str, Any]:
    """A1111's answer; ``prompt`` is the prompt as written (with its LoRA tags), as A1111 reports it."""
    texts = [infotext(req, prompt, s, result.model) for s in result.all_seeds]
    info = {
        "prompt": prompt,
        "all_prompts": [prompt] * len(result.images),
        "negative_prompt": req.negative_prompt,
        "all_negative_prompts": [req.negative_prompt] * len(result.images),
        "seed": result.seed,
        "all_seeds": result.all_seeds,
        "subseed": -1,
        "all_subseeds": [-1] * len(result.images),
        "width": req.width,
        "height": req.height,
        "sampler_name": req.sampler_name,
        "scheduler": req.scheduler or "automatic",
        "cfg_scale": req.cfg_scale,
        "steps": req.steps,
        "batch_size": req.batch_size,
        "n_iter": req.n_iter,
        "denoising_strength": req.denoising_strength if req.init_images else (req.hires and req.hires.denoising),
        "hires": None if req.hires is None else req.hires.info(),
        "loras": [{"name": u.ref.name, "te": u.text_encoder, "unet": u.unet} for u in req.loras],
        "sd_model_name": result.model,
        "sd_model_hash": None,
        "index_of_first_image": 0,
        "infotexts": texts,
        "job_timestamp": time.strftime("%Y%m%d%H%M%S"),
        "interrupted": result.interrupted,
        "ignored_fields": ignored,
        "run_s": round(result.run_s, 4),
        "version": "sdeks-sd_runtime",
    }
    images = [encode_png(img, text) for img, text in zip(result.images, texts, strict=True)]
    if parameters.get("send_images") is False:  # A1111: render (and report) but do not send the images
        images = []
    return {"images": images, "parameters": parameters, "info": json.dumps(info)}


def _generation_routes(router: APIRouter, engine: Engine) -> None:
    """``txt2img`` and ``img2img``: contract bodies → engine requests → A1111 answers."""

    async def run(req: GenerationRequest) -> GenerationResult:
        if engine.model is None:
            raise NoModelError(engine.load_error or "no model loaded yet", {"loading": engine.loading})
        return await engine.submit(engine.generate, req)

    def generation(content: Txt2ImgContent, **extra: Any) -> GenerationRequest:
        """The engine request: LoRA tags taken out of the prompt and resolved, override_settings applied."""
        text, tags = lora.parse_prompt(content.prompt)
        loras = lora.resolve(tags, engine.loras()) if tags else []
        settings = a1111_overrides.parse(content)
        model = engine.resolve(settings.checkpoint) if settings.checkpoint else None
        vae_file = vae.find(settings.vae, engine.vaes(), "override_settings.sd_vae") if settings.vae else None
        fields = {k: getattr(content, k) for k in GEN_FIELDS} | {"prompt": text}
        return GenerationRequest(
            **fields,
            loras=loras,
            clip_skip=settings.clip_skip,
            model=model,
            restore_model=settings.restore,
            vae=vae_file,
            **extra,
        )

    def ignored_fields_of(content: Txt2ImgContent, implemented: set[str]) -> list[str]:
        """ignored_fields, with the override settings and prompt syntax that had no effect."""
        unapplied = a1111_overrides.parse(content).ignored + prompt_syntax(content)
        return sorted(ignored_fields(content, implemented | {"override_settings"}) + unapplied)

    @router.post("/txt2img")
    async def txt2img(content: Txt2ImgContent) -> dict[str, Any]:
        hires = hires_fix.parse(content, engine.upscale_models.discover())
        req = generation(content, hires=hires, job="txt2img")
        result = await run(req)
        parameters = content.model_dump(mode="json")
        ignored = ignored_fields_of(content, GEN_FIELDS | (hires_fix.IMPLEMENTED if hires else set()))
        return await asyncio.to_thread(build_response, req, content.prompt, result, parameters, ignored)

    @router.post("/img2img")
    async def img2img(content: Img2ImgContent) -> dict[str, Any]:
        if not content.init_images:
            raise InvalidInputError(
                "init_images is required: the runtime accepts inline base64 images only "
                "(alwayson_scripts.image_link URLs are resolved by the queue agent)",
                [{"field": "init_images", "message": "required"}],
            )
        inits = [decode_image(v, f"init_images[{i}]") for i, v in enumerate(content.init_images)]
        mask = decode_image(content.mask, "mask", mode="L") if content.mask else None
        size = (content.width, content.height)
        inits = [im if im.size == size else im.resize(size) for im in inits]  # A1111 resize_mode 0: just resize
        if mask is not None and mask.size != size:
            mask = mask.resize(size)
        req = generation(
            content, init_images=inits, denoising_strength=content.denoising_strength, mask=mask, job="img2img"
        )
        result = await run(req)
        parameters = content.model_dump(mode="json") | {"init_images": None, "mask": None}
        ignored = ignored_fields_of(content, IMG2IMG_FIELDS)
        return await asyncio.to_thread(build_response, req, content.prompt, result, parameters, ignored)


UpscaleContent = ExtraSingleImageContent | ExtraBatchImagesContent


def _second_upscaler(content: UpscaleContent) -> tuple[str, float]:
    """(``upscaler_2``, ``extras_upscaler_2_visibility``): A1111 blends the second upscaler's result in."""
    extra = content.model_extra or {}
    name = extra.get("upscaler_2") or "None"
    visibility = extra.get("extras_upscaler_2_visibility", 0) or 0
    if not isinstance(name, str) or len(name) > 128:
        raise InvalidInputError("upscaler_2: must be an upscaler name (GET /sdapi/v1/upscalers)")
    if isinstance(visibility, bool) or not isinstance(visibility, int | float) or not 0 <= visibility <= 1:
        raise InvalidInputError(f"extras_upscaler_2_visibility: must be a number in 0..1, got {visibility!r}")
    return name, float(visibility)


def _extras_routes(router: APIRouter, engine: Engine) -> None:
    """The extras tab: upscaling one image or a batch, and reading a PNG's generation parameters.

    Upscaling runs on the engine's worker thread (model upscalers share the device with generation).
    """
    models = engine.upscale_models

    async def run_upscale(content: UpscaleContent, images: list[tuple[str, str]]) -> tuple[list[str], dict[str, Any]]:
        """Names checked and images decoded first (a bad request does not wait for the worker), then the upscale."""
        second, visibility = _second_upscaler(content)
        resolve(content.upscaler_1, models, "upscaler_1")
        blend = visibility > 0 and second != "None"  # A1111 ignores a second upscaler "None"
        if blend:
            resolve(second, models, "upscaler_2")
        decoded = await asyncio.to_thread(lambda: [decode_image(data, field) for data, field in images])
        stats = TileStats()
        sizes = (content.resize_mode, content.upscaling_resize, content.upscaling_resize_w, content.upscaling_resize_h)

        def work() -> list[str]:
            """Worker thread: every image through upscaler_1 (and upscaler_2 blended in), PNG-encoded."""
            out = []
            for img in decoded:
                result = upscale(img, content.upscaler_1, *sizes, models, "upscaler_1", stats)
                if blend:
                    other = upscale(img, second, *sizes, models, "upscaler_2", stats)
                    result = Image.blend(result.convert("RGB"), other.convert("RGB"), visibility)
                out.append(encode_png(result))
            return out

        encoded = await engine.submit(work)
        info = {
            "upscaler_1": content.upscaler_1,
            "upscaler_2": second if blend else None,
            "model_tiles": stats.tiles,
            "tile": stats.tile,
        }
        return encoded, info

    def html_info(content: UpscaleContent) -> str:
        """A1111's postprocessing text for the upscale step."""
        if content.resize_mode == 1:
            size = f"Postprocess upscale to: {content.upscaling_resize_w}x{content.upscaling_resize_h}"
        else:
            size = f"Postprocess upscale by: {content.upscaling_resize:g}"
        return f"{size}, Postprocess upscaler: {content.upscaler_1}"

    @router.post("/extra-single-image")
    async def extra_single(content: ExtraSingleImageContent) -> dict[str, Any]:
        (image,), info = await run_upscale(content, [(content.image, "image")])
        ignored = ignored_fields(content, UPSCALE_FIELDS | {"image"})
        return {"html_info": html_info(content), "image": image, "info": info, "ignored_fields": ignored}

    @router.post("/extra-batch-images")
    async def extra_batch(content: ExtraBatchImagesContent) -> dict[str, Any]:
        pairs = [(b.data, f"imageList[{i}].data") for i, b in enumerate(content.imageList)]
        images, info = await run_upscale(content, pairs)
        ignored = ignored_fields(content, UPSCALE_FIELDS | {"imageList"})
        return {"html_info": html_info(content), "images": images, "info": info, "ignored_fields": ignored}

    @router.post("/png-info")
    async def png_info(body: PngInfoBody) -> dict[str, Any]:
        img = decode_image(body.image, "image", mode=None)
        items = {k: v for k, v in img.info.items() if isinstance(v, str)}
        text = items.pop("parameters", "")
        return {"info": text, "items": items, "parameters": parse_infotext(text) if text else {}}


def _listing_routes(router: APIRouter, engine: Engine) -> None:
    """What can be named in a request: models, LoRAs, embeddings, VAEs, samplers, schedule types, upscalers."""

    @router.get("/sd-models")
    async def sd_models() -> list[dict[str, Any]]:
        return [r.a1111() for r in engine.models()]

    @router.post("/refresh-checkpoints")
    async def refresh() -> None:
        return None  # discovery reads the models dir on every listing

    @router.get("/loras")
    async def loras() -> list[dict[str, Any]]:
        return [lora.a1111_entry(ref) for ref in engine.loras()]

    @router.post("/refresh-loras")
    async def refresh_loras() -> None:
        return None  # discovery reads the Lora/ folder on every listing

    @router.get("/embeddings")
    async def embeddings() -> dict[str, Any]:
        return engine.embeddings.a1111()

    @router.post("/refresh-embeddings")
    async def refresh_embeddings() -> None:
        await engine.submit(engine.refresh_embeddings)  # on the worker: it changes the model's tokenizers
        return None

    @router.get("/sd-vae")
    async def sd_vae() -> list[dict[str, str]]:
        return vae.a1111_entries(engine.vaes())

    @router.post("/refresh-vae")
    async def refresh_vae() -> None:
        return None  # discovery reads the VAE/ folder on every listing

    @router.get("/samplers")
    async def samplers() -> list[dict[str, Any]]:
        return a1111_samplers()

    @router.get("/schedulers")
    async def schedulers() -> list[dict[str, Any]]:
        return a1111_schedulers()

    @router.get("/upscalers")
    async def upscalers() -> list[dict[str, Any]]:
        return await asyncio.to_thread(a1111_upscalers, engine.upscale_models)  # reads new files once each

    @router.get("/latent-upscale-modes")
    async def latent_upscale_modes() -> list[dict[str, str]]:
        return [{"name": name} for name in hires_fix.LATENT_MODES]


def _control_routes(router: APIRouter, engine: Engine) -> None:
    """Options (model switch), progress, interrupt."""

    @router.get("/options")
    async def get_options() -> dict[str, Any]:
        return {
            "sd_model_checkpoint": engine.model.title if engine.model else None,
            "sd_checkpoint_hash": None,
            "samples_format": "png",
            "sd_runtime_device": engine.device,
            "sd_runtime_dtype": str(engine.dtype).removeprefix("torch."),
            "ESRGAN_tile": engine.upscale_models.tile,
            "ESRGAN_tile_overlap": engine.upscale_models.overlap,
        }

    @router.post("/options")
    async def set_options(options: OptionsBody) -> None:
        if options.ESRGAN_tile is not None:
            engine.upscale_models.tile = options.ESRGAN_tile
        if options.ESRGAN_tile_overlap is not None:
            engine.upscale_models.overlap = options.ESRGAN_tile_overlap
        if options.sd_model_checkpoint is not None:
            await engine.load(options.sd_model_checkpoint)
        return None

    @router.get("/progress")
    async def progress() -> dict[str, Any]:
        return progress_body(engine)

    @router.post("/interrupt")
    async def interrupt() -> None:
        engine.interrupt()
        return None

    @router.post("/skip")
    async def skip() -> None:
        engine.interrupt()
        return None


def create_router(engine: Engine) -> APIRouter:
    """The ``/sdapi/v1`` routes over ``engine``."""
    router = APIRouter(prefix="/sdapi/v1", tags=["a1111"])
    for add in (_generation_routes, _extras_routes, _listing_routes, _control_routes):
        add(router, engine)
    return router


def progress_body(engine: Engine) -> dict[str, Any]:
    """``GET /sdapi/v1/progress``: A1111's shape, from the engine's progress record."""
    p = engine.progress
    frac = p.fraction()
    elapsed = time.time() - p.started if p.started else 0.0
    eta = elapsed / frac - elapsed if frac > 0 else 0.0
    return {
        "progress": round(frac, 4),
        "eta_relative": round(eta, 3),
        "state": {
            "skipped": False,
            "interrupted": p.interrupted,
            "job": p.job,
            "job_count": p.job_count,
            "job_timestamp": p.job_timestamp,
            "job_no": p.job_no,
            "sampling_step": p.step,
            "sampling_steps": p.steps,
        },
        "current_image": None,
        "textinfo": None,
    }
