"""Task content: the runtime parameters of each tasktype.

The sdwebui content models are the AUTOMATIC1111 API parameter sets, with the
bounds a user would expect enforced at the front door so a bad task is a 400,
not a failed GPU job.

Unknown content fields are *kept* (``extra="allow"``) so a task round-trips (its
fingerprint, the claim check), but they are never forwarded: a stock A1111 runtime
would act on them (an extension's image URL, ``override_settings.outdir_samples``),
so the queue agent sends only the fields modelled here and lists the others as
``ignored_fields`` in the task's info.
"""

from __future__ import annotations

from typing import Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, RootModel, model_validator

from sdeks.contract.images import ImageRef
from sdeks.contract.names import ModelName, check_model_name

SAMPLERS: tuple[str, ...] = (
    "Euler a",
    "Euler",
    "DPM++ 2M",
    "DPM++ 2M Karras",
    "DPM++ SDE Karras",
    "DDIM",
    "UniPC",
    "LMS",
    "Heun",
    "DPM++ SDE",
    "DPM++ 2M SDE",
    "DPM++ 2M SDE Karras",
    "DPM++ 3M SDE",
    "DPM++ 3M SDE Karras",
    "DPM2",
    "DPM2 a",
    "DPM2 Karras",
    "DPM2 a Karras",
    "LMS Karras",
    "LCM",
)
"""A1111 sampler names every sdeks runtime serves (the "X Karras" names are A1111's pre-1.9 spelling
of sampler X with the Karras schedule; they are still accepted there)."""

SAMPLER_ALIASES: dict[str, str] = {
    "k_euler_a": "Euler a",
    "k_euler": "Euler",
    "k_dpmpp_2m": "DPM++ 2M",
    "k_dpmpp_2m_ka": "DPM++ 2M Karras",
    "k_dpmpp_sde_ka": "DPM++ SDE Karras",
    "ddim": "DDIM",
    "unipc": "UniPC",
    "k_lms": "LMS",
    "k_heun": "Heun",
    "k_dpmpp_sde": "DPM++ SDE",
    "k_dpmpp_2m_sde": "DPM++ 2M SDE",
    "k_dpmpp_2m_sde_ka": "DPM++ 2M SDE Karras",
    "k_dpmpp_3m_sde": "DPM++ 3M SDE",
    "k_dpmpp_3m_sde_ka": "DPM++ 3M SDE Karras",
    "k_dpm_2": "DPM2",
    "k_dpm_2_a": "DPM2 a",
    "k_dpm_2_ka": "DPM2 Karras",
    "k_dpm_2_a_ka": "DPM2 a Karras",
    "k_lms_ka": "LMS Karras",
    "k_lcm": "LCM",
}
"""A1111's sampler aliases (``GET /sdapi/v1/samplers`` lists them); accepted as ``sampler_name``."""

SCHEDULE_TYPES: tuple[str, ...] = (
    "automatic",
    "uniform",
    "karras",
    "exponential",
    "sgm_uniform",
    "simple",
    "normal",
    "ddim",
    "beta",
)
"""A1111 1.9+ ``scheduler`` (schedule type) names every sdeks runtime serves; A1111's labels
(``Karras``, ``SGM Uniform`` ...) are accepted too. ``automatic``: the sampler's own schedule."""

MAX_IMAGES_PER_TASK = 16
MAX_PROMPT_CHARS = 4000
MAX_SEED = 2**32 - 1

Dimension = Field(default=512, ge=64, le=2048, multiple_of=8)


STRICT = ConfigDict(extra="allow", strict=True)
"""Content models take JSON types as they are: ``"64"`` is not a width and ``false`` is not a seed.

Lax coercion would let a typo or a client bug render something the user did not ask for.
"""


class AlwaysOnScripts(BaseModel):
    """``alwayson_scripts`` as the AWS sample uses it: a carrier for URLs and the checkpoint."""

    model_config = STRICT

    image_link: ImageRef | None = Field(
        default=None, description="init image URL (AWS sample convention for image-to-image)"
    )
    sd_model_checkpoint: ModelName | None = Field(
        default=None, min_length=1, max_length=256, description="checkpoint to switch to, by name"
    )


MODEL_SETTINGS = ("sd_model_checkpoint", "sd_vae")
"""``override_settings`` keys that pick a file on the runtime: names only."""

APPLIED_OVERRIDE_SETTINGS = ("sd_model_checkpoint", "CLIP_stop_at_last_layers", "sd_vae")
"""``override_settings`` keys the sdeks runtime applies; the agent forwards these and no others."""

APPLIED_EXTRA_FIELDS = frozenset(
    {
        "enable_hr",
        "hr_scale",
        "hr_upscaler",
        "hr_second_pass_steps",
        "hr_resize_x",
        "hr_resize_y",
        "denoising_strength",
        "override_settings",
        "override_settings_restore_afterwards",
        "send_images",
    }
)
"""A1111 fields beyond the typed ones that the sdeks runtime applies (hires fix, per-request settings).

The agent forwards these (``override_settings`` reduced to :data:`APPLIED_OVERRIDE_SETTINGS`, whose
file names the contract already checks) and reports every other unmodelled field as ignored; the
runtime validates their values and answers a 4xx naming the field.
"""


class _Sdwebui(BaseModel):
    model_config = STRICT

    @model_validator(mode="before")
    @classmethod
    def _a1111_spellings(cls, data: Any) -> Any:
        """What A1111 accepts besides the canonical names, mapped to them before validation.

        ``sampler_index`` names the sampler when ``sampler_name`` is absent (A1111 uses
        ``sampler_name or sampler_index``); sampler aliases (``k_euler_a``) and schedule
        labels (``Karras``) become names. Done here, not in a runtime, because the API
        fills defaults: after the front door a task always carries a ``sampler_name``.
        """
        if not isinstance(data, dict):
            return data
        data = dict(data)
        if data.get("sampler_name") is None and data.get("sampler_index") is not None:
            data["sampler_name"] = data["sampler_index"]
        if isinstance(data.get("sampler_name"), str):
            data["sampler_name"] = SAMPLER_ALIASES.get(data["sampler_name"], data["sampler_name"])
        if isinstance(data.get("scheduler"), str):
            data["scheduler"] = data["scheduler"].strip().lower().replace(" ", "_")
        return data

    alwayson_scripts: AlwaysOnScripts | None = None

    @model_validator(mode="after")
    def _models_by_name(self) -> _Sdwebui:
        overrides = (self.model_extra or {}).get("override_settings")
        if isinstance(overrides, dict):
            for key in MODEL_SETTINGS:
                value = overrides.get(key)
                if value is None:
                    continue
                if not isinstance(value, str):
                    raise ValueError(f"override_settings.{key} must be a string (a model name)")
                try:
                    check_model_name(value)
                except ValueError as exc:
                    raise ValueError(f"override_settings.{key}: {exc}") from None
        return self

    @property
    def checkpoint(self) -> str | None:
        """The checkpoint this task asks for, if any."""
        return self.alwayson_scripts.sd_model_checkpoint if self.alwayson_scripts else None


class Txt2ImgContent(_Sdwebui):
    """Parameters of ``/sdapi/v1/txt2img``."""

    prompt: str = Field(default="", max_length=MAX_PROMPT_CHARS)
    negative_prompt: str = Field(default="", max_length=MAX_PROMPT_CHARS)
    steps: int = Field(default=20, ge=1, le=150)
    width: int = Dimension
    height: int = Dimension
    cfg_scale: float = Field(default=7.0, ge=1.0, le=30.0)
    sampler_name: Literal[SAMPLERS] = "Euler a"  # type: ignore[valid-type]
    scheduler: Literal[SCHEDULE_TYPES] | None = Field(  # type: ignore[valid-type]
        default=None, description="A1111 1.9+ schedule type; null or automatic: the sampler's own"
    )
    seed: int = Field(default=-1, ge=-1, le=MAX_SEED, description="-1 picks a random seed")
    batch_size: int = Field(default=1, ge=1, le=MAX_IMAGES_PER_TASK)
    n_iter: int = Field(default=1, ge=1, le=MAX_IMAGES_PER_TASK)

    @model_validator(mode="after")
    def _bounded_image_count(self) -> Txt2ImgContent:
        if self.batch_size * self.n_iter > MAX_IMAGES_PER_TASK:
            raise ValueError(
                f"batch_size × n_iter = {self.batch_size * self.n_iter} exceeds {MAX_IMAGES_PER_TASK} images per task"
            )
        return self


class Img2ImgContent(Txt2ImgContent):
    """Parameters of ``/sdapi/v1/img2img``; the init image may arrive as a URL in ``alwayson_scripts.image_link``."""

    init_images: list[ImageRef] = Field(default_factory=list, max_length=4)
    denoising_strength: float = Field(default=0.75, ge=0.0, le=1.0)
    mask: ImageRef | None = None

    @model_validator(mode="after")
    def _has_init_image(self) -> Img2ImgContent:
        if not self.init_images and not (self.alwayson_scripts and self.alwayson_scripts.image_link):
            raise ValueError("image-to-image needs init_images or alwayson_scripts.image_link")
        return self


class _Upscale(_Sdwebui):
    resize_mode: Literal[0, 1] = Field(default=0, description="0: scale by factor, 1: to width/height")
    upscaling_resize: float = Field(default=2.0, ge=1.0, le=8.0)
    upscaling_resize_w: int | None = Field(default=None, ge=64, le=8192)
    upscaling_resize_h: int | None = Field(default=None, ge=64, le=8192)
    upscaler_1: ModelName = Field(default="Lanczos", min_length=1, max_length=128)

    @model_validator(mode="after")
    def _target_size_complete(self) -> _Upscale:
        if self.resize_mode == 1 and (self.upscaling_resize_w is None or self.upscaling_resize_h is None):
            raise ValueError("resize_mode 1 needs upscaling_resize_w and upscaling_resize_h")
        return self


class ExtraSingleImageContent(_Upscale):
    """Parameters of ``/sdapi/v1/extra-single-image``; ``image`` may be base64 or a URL."""

    image: ImageRef


class BatchImage(BaseModel):
    model_config = ConfigDict(strict=True)

    data: ImageRef
    name: str = Field(default="image", max_length=256)


class ExtraBatchImagesContent(_Upscale):
    """Parameters of ``/sdapi/v1/extra-batch-images``."""

    imageList: list[BatchImage] = Field(min_length=1, max_length=MAX_IMAGES_PER_TASK)  # noqa: N815 (A1111 name)


class ComfyNode(BaseModel):
    """One node of a ComfyUI API-format workflow."""

    model_config = ConfigDict(extra="allow")

    class_type: str = Field(min_length=1, max_length=256)
    inputs: dict[str, Any] = Field(default_factory=dict)


class PipelineContent(RootModel[dict[str, ComfyNode]]):
    """A ComfyUI API-format workflow ("Save (API format)"), node id → node.

    Also accepted wrapped as ``{"prompt": {...}}``, the body of ComfyUI's ``POST /prompt``.
    """

    @model_validator(mode="before")
    @classmethod
    def _unwrap_prompt(cls, value: Any) -> Any:
        if isinstance(value, dict) and set(value) == {"prompt"} and isinstance(value["prompt"], dict):
            return value["prompt"]
        return value

    @model_validator(mode="after")
    def _not_empty(self) -> PipelineContent:
        if not self.root:
            raise ValueError("workflow has no nodes")
        if len(self.root) > 500:
            raise ValueError("workflow has more than 500 nodes")
        return self


TaskType = Literal["text-to-image", "image-to-image", "extra-single-image", "extra-batch-images", "pipeline"]
RuntimeType = Literal["sdwebui", "comfyui"]
TASK_TYPES: tuple[str, ...] = get_args(TaskType)
RUNTIME_TYPES: tuple[str, ...] = get_args(RuntimeType)

CONTENT_MODELS: dict[str, type[BaseModel]] = {
    "text-to-image": Txt2ImgContent,
    "image-to-image": Img2ImgContent,
    "extra-single-image": ExtraSingleImageContent,
    "extra-batch-images": ExtraBatchImagesContent,
    "pipeline": PipelineContent,
}

TASKTYPES_BY_RUNTIME_TYPE: dict[str, tuple[str, ...]] = {
    "sdwebui": ("text-to-image", "image-to-image", "extra-single-image", "extra-batch-images"),
    "comfyui": ("pipeline",),
}

Content = Txt2ImgContent | Img2ImgContent | ExtraSingleImageContent | ExtraBatchImagesContent | PipelineContent
