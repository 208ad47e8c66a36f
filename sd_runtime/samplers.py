"""One scheduler factory for both API dialects.

A diffusers scheduler is a sampler (the solver: Euler, DPM++ 2M ...) plus a
noise schedule (Karras sigmas, trailing spacing ...). ComfyUI names the two
apart (``sampler_name`` + ``scheduler``); an A1111 sampler name is one such pair
(``DPM++ 2M Karras`` = ``dpmpp_2m`` + ``karras``), or a sampler with the model's
own schedule. So the tables below are ComfyUI's names, A1111's names point into
them, and :func:`make_scheduler` builds either. The mapping follows the diffusers
documentation's A1111 ↔ diffusers table.

A scheduler is always built from the loaded model's own scheduler config, so
the model's beta schedule and prediction type are kept.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any

from sdeks.contract import SAMPLERS

COMFY_SAMPLERS: dict[str, tuple[str, dict[str, Any]]] = {
    "euler": ("EulerDiscreteScheduler", {}),
    "euler_ancestral": ("EulerAncestralDiscreteScheduler", {}),
    "heun": ("HeunDiscreteScheduler", {}),
    "dpm_2": ("KDPM2DiscreteScheduler", {}),
    "dpm_2_ancestral": ("KDPM2AncestralDiscreteScheduler", {}),
    "lms": ("LMSDiscreteScheduler", {}),
    "dpmpp_2m": ("DPMSolverMultistepScheduler", {"algorithm_type": "dpmsolver++", "solver_order": 2}),
    "dpmpp_2m_sde": ("DPMSolverMultistepScheduler", {"algorithm_type": "sde-dpmsolver++", "solver_order": 2}),
    "dpmpp_sde": ("DPMSolverSDEScheduler", {}),
    "ddpm": ("DDPMScheduler", {}),
    "ddim": ("DDIMScheduler", {"set_alpha_to_one": False}),
    "uni_pc": ("UniPCMultistepScheduler", {}),
    "uni_pc_bh2": ("UniPCMultistepScheduler", {"solver_type": "bh2"}),
}
"""ComfyUI sampler name → (diffusers scheduler class, options)."""

COMFY_SCHEDULERS: dict[str, dict[str, Any]] = {
    "normal": {"timestep_spacing": "linspace"},
    "karras": {"use_karras_sigmas": True},
    "exponential": {"use_exponential_sigmas": True},
    "sgm_uniform": {"timestep_spacing": "trailing"},
    "simple": {"timestep_spacing": "trailing"},
    "ddim_uniform": {"timestep_spacing": "leading"},
    "beta": {"use_beta_sigmas": True},
}
"""ComfyUI scheduler (noise schedule) name → diffusers options. ComfyUI allows any
pairing; an option the sampler's class does not take is not passed to it."""


@dataclass(frozen=True)
class A1111Sampler:
    """An A1111 sampler: a ComfyUI sampler, a schedule (None: the model's own) and A1111's aliases."""

    sampler: str
    schedule: str | None = None
    aliases: tuple[str, ...] = ()

    @property
    def scheduler_class(self) -> str:
        return COMFY_SAMPLERS[self.sampler][0]


A1111_SAMPLERS: dict[str, A1111Sampler] = {
    "Euler a": A1111Sampler("euler_ancestral", aliases=("k_euler_a",)),
    "Euler": A1111Sampler("euler", aliases=("k_euler",)),
    "DPM++ 2M": A1111Sampler("dpmpp_2m", aliases=("k_dpmpp_2m",)),
    "DPM++ 2M Karras": A1111Sampler("dpmpp_2m", "karras", ("k_dpmpp_2m_ka",)),
    "DPM++ SDE Karras": A1111Sampler("dpmpp_sde", "karras", ("k_dpmpp_sde_ka",)),
    "DDIM": A1111Sampler("ddim", aliases=("ddim",)),
    "UniPC": A1111Sampler("uni_pc", aliases=("unipc",)),
    "LMS": A1111Sampler("lms", aliases=("k_lms",)),
    "Heun": A1111Sampler("heun", aliases=("k_heun",)),
}

_missing = set(SAMPLERS) ^ set(A1111_SAMPLERS)
if _missing:  # fail at import, not at request time, if the contract and the runtime drift apart
    raise RuntimeError(f"sampler mapping out of sync with sdeks.contract.SAMPLERS: {sorted(_missing)}")

# Options a model's scheduler config may carry that are wrong for another sampler or schedule.
_RESET = (
    "use_karras_sigmas",
    "use_exponential_sigmas",
    "use_beta_sigmas",
    "algorithm_type",
    "solver_order",
    "solver_type",
)


def make_scheduler(sampler: str, schedule: str | None, base_config: dict[str, Any]) -> Any:
    """A fresh diffusers scheduler for a ComfyUI (sampler, schedule) pair on the model's scheduler config.

    A new instance per request: diffusers schedulers keep per-run state (timesteps,
    step index), so sharing one across requests is not safe.
    """
    import diffusers

    cls_name, options = COMFY_SAMPLERS[sampler]
    cls = getattr(diffusers, cls_name)
    accepted = set(inspect.signature(cls.__init__).parameters)
    config = {k: v for k, v in base_config.items() if k not in _RESET}
    schedule_options = COMFY_SCHEDULERS[schedule] if schedule else {}
    extra = {k: v for k, v in {**options, **schedule_options}.items() if k in accepted}
    if extra.get("timestep_spacing") == "leading":
        config.setdefault("steps_offset", 1)
    return cls.from_config(config, **extra)


def a1111_scheduler(name: str, base_config: dict[str, Any]) -> Any:
    """The scheduler of an A1111 sampler name (one of the contract's ``SAMPLERS``)."""
    spec = A1111_SAMPLERS[name]
    return make_scheduler(spec.sampler, spec.schedule, base_config)


def a1111_samplers() -> list[dict[str, Any]]:
    """``GET /sdapi/v1/samplers`` body: name, aliases, options, in the contract's order."""
    return [
        {
            "name": name,
            "aliases": list(A1111_SAMPLERS[name].aliases),
            "options": {"scheduler": A1111_SAMPLERS[name].scheduler_class},
        }
        for name in SAMPLERS
    ]
