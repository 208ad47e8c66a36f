"""The inference engine: one loaded model, one worker thread, progress and interrupt.

Independent of any HTTP dialect: the A1111 router turns its requests into
:class:`GenerationRequest` and awaits :meth:`Engine.submit`; the ComfyUI nodes use the
loaded pipelines (:attr:`Engine.pipes`) on the same worker thread.

Why one thread: a diffusers pipeline is not thread-safe (the scheduler keeps
per-run state, the tokenizer is shared) and one GPU gains nothing from two
concurrent runs. So every pipeline call and every model switch runs on a single
dedicated executor thread, in arrival order, while the event loop stays free to
answer ``/healthz`` and ``/progress``. Progress is written by the pipeline's
``callback_on_step_end``; interrupt sets a flag the same callback checks, which
makes diffusers skip the remaining steps and decode what it has (A1111 returns
the partially denoised images too). If the work is still running after a short
grace, hooks inside the UNet and VAE stop it mid-step or mid-decode
(:mod:`sd_runtime.interrupt`), so an interrupt takes effect in bounded time.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import random
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from sd_runtime import embeddings, lora, prompt_weighting, upscale, vae
from sd_runtime import hires as hires_fix
from sd_runtime.errors import NoModelError
from sd_runtime.interrupt import Interrupted, InterruptibleAttnProcessor, InterruptSignal, install_hooks
from sd_runtime.models import ModelError, ModelRef, discover, load_pipeline, resolve
from sd_runtime.named_files import NamedFile
from sd_runtime.samplers import a1111_scheduler
from sd_runtime.upscale_models import UpscaleModels
from sdeks.contract import MAX_SEED

log = logging.getLogger("sd_runtime.engine")
T = TypeVar("T")


@dataclass
class GenerationRequest:
    """What to render, dialect-neutral. Images are PIL images (already decoded).

    ``prompt`` is the text to encode (a dialect's own syntax, such as A1111's LoRA
    tags, already taken out; attention weights and BREAK are read by
    :mod:`sd_runtime.prompt_weighting`); ``loras`` are applied for this request only. ``clip_skip``
    is diffusers' (layers skipped from the end; A1111's ``CLIP_stop_at_last_layers`` − 1).
    ``model``: render with this model, switched to on the worker thread right before,
    and switched back after when ``restore_model`` (A1111's ``override_settings``).
    """

    prompt: str = ""
    negative_prompt: str = ""
    steps: int = 20
    width: int = 512
    height: int = 512
    cfg_scale: float = 7.0
    sampler_name: str = "Euler a"
    scheduler: str | None = None
    seed: int = -1
    batch_size: int = 1
    n_iter: int = 1
    init_images: list[Any] = field(default_factory=list)
    denoising_strength: float = 0.75
    mask: Any = None
    loras: list[lora.LoraUse] = field(default_factory=list)
    clip_skip: int | None = None
    model: ModelRef | None = None
    restore_model: bool = True
    hires: hires_fix.Hires | None = None
    vae: NamedFile | None = None
    job: str = "txt2img"


@dataclass
class GenerationResult:
    images: list[Any]
    seed: int
    all_seeds: list[int]
    model: str
    interrupted: bool
    run_s: float


@dataclass
class Progress:
    """What ``/sdapi/v1/progress`` reports; written by the worker, read by the event loop."""

    job: str = ""
    job_count: int = 0
    job_no: int = 0
    step: int = 0
    steps: int = 0
    started: float = 0.0
    job_timestamp: str = "0"
    interrupted: bool = False

    def fraction(self) -> float:
        if not self.job or not self.steps or not self.job_count:
            return 0.0
        return min(1.0, (self.job_no + self.step / self.steps) / self.job_count)


def pick_device(requested: str | None = None) -> str:
    import torch

    if requested:
        return requested
    return "cuda" if torch.cuda.is_available() else "cpu"


class Engine:
    """Owns the pipeline and the single worker thread."""

    def __init__(self, models_dir: Path | None = None, device: str | None = None, compile_unet: bool = False):
        import torch

        self.models_dir = models_dir
        self.device = pick_device(device)
        self.dtype = torch.float16 if self.device.startswith("cuda") else torch.float32
        self.compile_unet = compile_unet
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sd-worker")
        self.progress = Progress()
        self.model: ModelRef | None = None
        self.load_error: str | None = None
        self.loading: str | None = None
        self._extra: ModelRef | None = None
        self._pipes: dict[str, Any] = {}
        self._interrupt = InterruptSignal()
        self.embeddings = embeddings.Embeddings()
        self.model_listeners: list[Callable[[], None]] = []
        """Called on the worker thread after another model is loaded (the ComfyUI node cache drops its entries)."""
        self.upscale_models = UpscaleModels(models_dir, self.device, self.dtype)

    # ---- models -------------------------------------------------------
    def models(self) -> list[ModelRef]:
        return discover(self.models_dir, self._extra)

    def resolve(self, spec: str, allow_paths: bool = False) -> ModelRef:
        """A model by name (requests); ``allow_paths`` only for the operator's ``--model``."""
        return resolve(spec, self.models_dir, self.models(), allow_paths=allow_paths)

    def vaes(self) -> list[NamedFile]:
        """The VAE files in the models dir's ``VAE/`` folder."""
        return vae.discover(self.models_dir)

    def loras(self) -> list[lora.LoraRef]:
        """The LoRAs in the models dir's ``Lora/`` folder (read on every call: files may be added)."""
        return lora.discover(self.models_dir)

    def load_on_worker(self, ref: ModelRef) -> ModelRef:
        """Worker thread only. Load the new model first so a failed switch keeps the old one."""
        import torch
        from diffusers import AutoPipelineForImage2Image, AutoPipelineForInpainting
        from diffusers.models.attention_processor import AttnProcessor2_0

        if self.model == ref:
            return ref
        self.loading = ref.title
        t0 = time.monotonic()
        try:
            pipe = load_pipeline(ref, self.device, self.dtype)
        except ModelError as exc:
            self.load_error = exc.message
            raise
        finally:
            self.loading = None
        # SDPA explicitly (flash / memory-efficient kernels on CUDA); a model saved with another
        # processor would otherwise keep it. Not set_default_attn_processor(): that picks the slow classic one.
        # Long attentions are split so an interrupt can stop them (same SDPA kernels otherwise); the VAE
        # decodes image by image (same pixels, bounded memory); every block is a hard-stop checkpoint.
        # A compiled UNet keeps plain SDPA and only the step callback (hooks would break its graph).
        interruptible = InterruptibleAttnProcessor(self._interrupt)
        pipe.unet.set_attn_processor(AttnProcessor2_0() if self.compile_unet else interruptible)
        pipe.vae.set_attn_processor(interruptible)
        pipe.vae.enable_slicing()
        install_hooks([pipe.vae] if self.compile_unet else [pipe.unet, pipe.vae], self._interrupt)
        if self.compile_unet:
            pipe.unet = torch.compile(pipe.unet)
        self._pipes = {
            "txt2img": pipe,
            "img2img": AutoPipelineForImage2Image.from_pipe(pipe),  # SD or SDXL, as the loaded model
            "inpaint": AutoPipelineForInpainting.from_pipe(pipe),
        }
        for p in self._pipes.values():
            p.set_progress_bar_config(disable=True)
        self.embeddings = embeddings.load(pipe, embeddings.discover(self.models_dir))
        self.model, self.load_error = ref, None
        for listener in self.model_listeners:
            listener()
        if ref.path.parent != (self.models_dir.resolve() if self.models_dir else None):
            self._extra = ref
        gc.collect()
        if self.device.startswith("cuda"):
            torch.cuda.empty_cache()
        log.info("loaded model %s (%s) on %s in %.2fs", ref.title, ref.kind, self.device, time.monotonic() - t0)
        return ref

    def refresh_embeddings(self) -> None:
        """Worker thread only: the ``embeddings/`` folder read again into the loaded model (A1111's refresh)."""
        if self._pipes:
            self.embeddings = embeddings.load(self._pipes["txt2img"], embeddings.discover(self.models_dir))

    async def load(self, spec: str | ModelRef) -> ModelRef:
        """Resolve and load a model on the worker thread (queued behind running jobs)."""
        ref = spec if isinstance(spec, ModelRef) else self.resolve(spec)
        return await self.submit(self.load_on_worker, ref)

    # ---- execution ------------------------------------------------------
    async def submit(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self.executor, fn, *args)

    @property
    def pipes(self) -> dict[str, Any]:
        """The loaded model's pipelines by mode (txt2img, img2img, inpaint); they share components."""
        return dict(self._pipes)

    def interrupt_requested(self) -> bool:
        return self._interrupt.is_set()

    def clear_interrupt(self) -> None:
        """A new job starts: an interrupt aimed at an earlier one must not stop it."""
        self._interrupt.clear()

    def interrupt(self) -> None:
        self._interrupt.set()
        self.progress.interrupted = True

    def generate(self, req: GenerationRequest) -> GenerationResult:
        """Worker thread only: render ``batch_size × n_iter`` images. Image ``i`` uses seed ``seed + i``."""
        previous = self.model
        if req.model is None or req.model == previous:
            return self._generate(req)
        self.load_on_worker(req.model)
        try:
            return self._generate(req)
        finally:
            if req.restore_model and previous is not None:
                self.load_on_worker(previous)

    def _generate(self, req: GenerationRequest) -> GenerationResult:
        if self.model is None:
            raise NoModelError(self.load_error or "no model loaded", {"loading": self.loading})
        seed = req.seed if req.seed != -1 else random.randint(0, MAX_SEED)  # noqa: S311 (not crypto)
        all_seeds = [(seed + i) % (MAX_SEED + 1) for i in range(req.batch_size * req.n_iter)]
        if req.mask is not None:
            pipe = self._pipes["inpaint"]
        elif req.init_images:
            pipe = self._pipes["img2img"]
        else:
            pipe = self._pipes["txt2img"]
        self._interrupt.clear()
        # img2img runs int(steps × strength) steps, as A1111 does
        # strength 0 would mean zero steps, which diffusers rejects: run at least one
        strength = max(req.denoising_strength, 1.0 / req.steps)
        steps = req.steps if not req.init_images else max(1, int(req.steps * strength))
        self.progress = Progress(
            job=req.job,
            job_count=req.n_iter,
            steps=steps,
            started=time.time(),
            job_timestamp=time.strftime("%Y%m%d%H%M%S"),
        )
        t0 = time.monotonic()
        with lora.applied(self._pipes["txt2img"], req.loras), self._vae_swapped(req.vae):
            images = self._render(pipe, req, all_seeds, strength)
        interrupted = self._interrupt.is_set()
        self._interrupt.clear()
        self.progress = Progress(job_timestamp=self.progress.job_timestamp, interrupted=interrupted)
        return GenerationResult(
            images=images,
            seed=seed,
            all_seeds=all_seeds[: len(images)],
            model=self.model.title,
            interrupted=interrupted,
            run_s=time.monotonic() - t0,
        )

    @contextlib.contextmanager
    def _vae_swapped(self, file: NamedFile | None) -> Iterator[None]:
        """Worker thread only: every pipeline decodes with ``file``'s VAE for the block (None: the model's)."""
        if file is None:
            yield
            return
        own = self._pipes["txt2img"].vae
        replacement = vae.load(file, own)
        try:
            for p in self._pipes.values():
                p.vae = replacement
            yield
        finally:
            for p in self._pipes.values():
                p.vae = own

    def _render(self, pipe: Any, req: GenerationRequest, all_seeds: list[int], strength: float) -> list[Any]:
        """Worker thread only: the ``n_iter`` pipeline calls of one request (stops early on interrupt)."""
        import torch

        images: list[Any] = []

        def on_step(p: Any, i: int, _t: Any, kwargs: dict) -> dict:
            self.progress.step = i + 1
            if self._interrupt.is_set():
                p._interrupt = True
            return kwargs

        with torch.inference_mode():  # once per request: every iteration renders the same prompt
            embeds = self._embeds(req, req.batch_size)
        for it in range(req.n_iter):
            if self._interrupt.is_set():
                break
            self.progress.job_no, self.progress.step = it, 0
            seeds = all_seeds[it * req.batch_size : (it + 1) * req.batch_size]
            base = dict(self._pipes["txt2img"].scheduler.config)
            pipe.scheduler = a1111_scheduler(req.sampler_name, base, req.scheduler)
            kwargs: dict[str, Any] = {
                **embeds,
                "num_inference_steps": req.steps,
                "guidance_scale": req.cfg_scale,
                "generator": [torch.Generator("cpu").manual_seed(s) for s in seeds],
                "callback_on_step_end": on_step,
            }
            if req.init_images:
                start = it * req.batch_size
                kwargs["image"] = [req.init_images[(start + j) % len(req.init_images)] for j in range(req.batch_size)]
                kwargs["strength"] = strength
                if req.mask is not None:
                    kwargs["mask_image"] = req.mask
                    kwargs["width"], kwargs["height"] = req.width, req.height
            else:
                kwargs["width"], kwargs["height"] = req.width, req.height
            if req.hires is not None and req.hires.latent:
                kwargs["output_type"] = "latent"
            try:
                with torch.inference_mode():
                    out = pipe(**kwargs).images
                    # latents must be decoded: an interrupted latent hires pass stops after one step and decodes
                    if req.hires is not None and (req.hires.latent or not self._interrupt.is_set()):
                        out = self._hires_pass(req, out, seeds, on_step, embeds)
            except Interrupted:  # the hard stop (interrupt.py): mid-step or mid-decode, nothing to keep
                break
            images.extend(out)
        return images

    def _hires_pass(
        self, req: GenerationRequest, first: Any, seeds: list[int], on_step: Any, embeds: dict[str, Any]
    ) -> list[Any]:
        """Worker thread only: A1111's hires fix — upscale the first pass, then img2img at the large size.

        ``embeds``: the request's encoded prompts (one batch), as the first pass used them.
        """
        import torch

        hires = req.hires
        assert hires is not None
        pipe = self._pipes["img2img"]
        pipe.scheduler = a1111_scheduler(req.sampler_name, dict(self._pipes["txt2img"].scheduler.config), req.scheduler)
        self.progress.step, self.progress.steps = 0, max(1, int(hires.steps * hires.denoising))
        kwargs: dict[str, Any] = {
            **embeds,
            "image": hires_fix.upscale_first_pass(hires, first, self._hires_resize(hires)),
            "strength": max(hires.denoising, 1.0 / hires.steps),  # 0 would be zero steps: run one, as img2img
            "num_inference_steps": hires.steps,
            "guidance_scale": req.cfg_scale,
            "generator": [torch.Generator("cpu").manual_seed(s) for s in seeds],
            "callback_on_step_end": on_step,
        }
        return pipe(**kwargs).images

    def _embeds(self, req: GenerationRequest, batch: int) -> dict[str, Any]:
        """Worker thread only: the request's prompts as pipeline embeddings (weights, long prompts, clip skip)."""
        return prompt_weighting.pipeline_kwargs(
            self._pipes["txt2img"], req.prompt, req.negative_prompt, batch, req.clip_skip
        )

    def _hires_resize(self, hires: hires_fix.Hires) -> Callable[[Any, tuple[int, int]], Any]:
        """Worker thread only: how the hires fix upscales one decoded image (stops between tiles on interrupt)."""

        def resize(img: Any, size: tuple[int, int]) -> Any:
            method = upscale.BUILTIN.get(hires.upscaler)
            return upscale.resize_to(img, size, hires.model, method, self.upscale_models, self._interrupt.is_set)

        return resize

    def shutdown(self) -> None:
        self._interrupt.set()
        self.executor.shutdown(wait=False, cancel_futures=True)
