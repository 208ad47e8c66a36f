"""Which fields of an A1111 request had no effect, for ``info.ignored_fields``.

A1111 clients send far more than this runtime implements, most of it at values that
switch a feature off (``webuiapi`` sends every parameter of ``txt2img`` on every call).
A field is reported when it was sent, is not implemented, and its value would have
changed what A1111 renders; values that mean "off" in A1111 are not reported, so the
list is empty for a plain request and names exactly what was asked for and not done.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from sd_runtime import prompt_weighting

NEUTRAL: dict[str, tuple[Any, ...]] = {
    "restore_faces": (False,),
    "tiling": (False,),
    "enable_hr": (False,),
    "subseed": (-1,),
    "subseed_strength": (0,),
    "seed_resize_from_h": (-1, 0),
    "seed_resize_from_w": (-1, 0),
    "send_images": (True, False),  # implemented: false leaves the images out of the answer
    "save_images": (False,),
    "do_not_save_samples": (False,),
    "do_not_save_grid": (False,),
    "styles": ([],),
    "override_settings": ({},),
    "override_settings_restore_afterwards": (True, False),  # no settings overridden: nothing to restore
    "script_name": ("",),
    "script_args": ([],),
    "alwayson_scripts": ({},),
    "s_churn": (0,),
    "s_tmin": (0,),
    "s_tmax": (0,),
    "s_noise": (1,),
    "upscaler_2": ("None",),
    "extras_upscaler_2_visibility": (0,),
    "gfpgan_visibility": (0,),
    "codeformer_visibility": (0,),
    "upscaling_crop": (True,),
    "show_extras_results": (True,),
    "resize_mode": (0,),
    "include_init_images": (False,),
    "initial_noise_multiplier": (1,),
    "hr_checkpoint_name": ("", "Use same checkpoint"),
    "hr_sampler_name": ("", "Use same sampler"),
    "hr_scheduler": ("", "Use same scheduler"),
    "hr_prompt": ("",),
    "hr_negative_prompt": ("",),
    "hr_additional_modules": ([], ["Use same choices"]),
    "firstphase_width": (0,),
    "firstphase_height": (0,),
}
"""A1111 fields and the values at which they have no effect (None always has none)."""

HIRES_FIELDS = frozenset(
    {
        "hr_scale",
        "hr_upscaler",
        "hr_second_pass_steps",
        "hr_resize_x",
        "hr_resize_y",
        "hr_checkpoint_name",
        "hr_sampler_name",
        "hr_scheduler",
        "hr_prompt",
        "hr_negative_prompt",
        "hr_additional_modules",
        "denoising_strength",
        "firstphase_width",
        "firstphase_height",
    }
)
"""txt2img's hires-fix parameters: without ``enable_hr`` A1111 does not read them."""

MASK_FIELDS = frozenset(
    {
        "mask_blur",
        "mask_blur_x",
        "mask_blur_y",
        "inpainting_fill",
        "inpaint_full_res",
        "inpaint_full_res_padding",
        "inpainting_mask_invert",
        "mask_round",
    }
)
"""img2img's inpainting parameters: without a ``mask`` A1111 does not read them."""


def sent_value(content: BaseModel, key: str) -> Any:
    """What the client sent for ``key``: nested models as they were given (unset fields left out)."""
    value = getattr(content, key) if key in type(content).model_fields else (content.model_extra or {})[key]
    return value.model_dump(exclude_unset=True) if isinstance(value, BaseModel) else value


PIX2PIX_ONLY = frozenset({"image_cfg_scale"})
"""Read by A1111 only for instruct-pix2pix models, which this runtime does not serve."""


def _without_effect(content: BaseModel, key: str, value: Any, implemented: set[str]) -> bool:
    if value is None or value in NEUTRAL.get(key, ()) or key in PIX2PIX_ONLY:
        return True
    if key == "sampler_index":  # A1111 reads it only without sampler_name, which the contract then fills from it
        return True
    if key in HIRES_FIELDS and key not in implemented:
        return not sent_value(content, "enable_hr") if "enable_hr" in _sent(content) else True
    if key in MASK_FIELDS:
        return getattr(content, "mask", None) is None
    return False


def _sent(content: BaseModel) -> set[str]:
    return content.model_fields_set | set(content.model_extra or {})


def ignored_fields(content: BaseModel, implemented: set[str]) -> list[str]:
    """Fields present in the request that had no effect (see the module docstring)."""
    return sorted(
        key
        for key in _sent(content)
        if key not in implemented and not _without_effect(content, key, sent_value(content, key), implemented)
    )


def prompt_syntax(content: BaseModel) -> list[str]:
    """``prompt (prompt editing [from:to:when])`` etc.: A1111 prompt syntax this runtime encodes as plain text.

    Attention weights, ``BREAK`` and long prompts are implemented (sd_runtime.prompt_weighting).
    """
    return [
        f"{name} ({what})"
        for name in ("prompt", "negative_prompt")
        for what in prompt_weighting.unsupported(getattr(content, name, "") or "")
    ]
