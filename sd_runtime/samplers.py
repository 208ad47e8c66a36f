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

from sdeks.contract import SAMPLER_ALIASES, SAMPLERS, SCHEDULE_TYPES

COMFY_SAMPLERS: dict[str, tuple[str, dict[str, Any]]] = {
    "euler": ("EulerDiscreteScheduler", {}),
    "euler_ancestral": ("EulerAncestralDiscreteScheduler", {}),
    "heun": ("HeunDiscreteScheduler", {}),
    "dpm_2": ("KDPM2DiscreteScheduler", {}),
    "dpm_2_ancestral": ("KDPM2AncestralDiscreteScheduler", {}),
    "lms": ("LMSDiscreteScheduler", {}),
    "dpmpp_2m": ("DPMSolverMultistepScheduler", {"algorithm_type": "dpmsolver++", "solver_order": 2}),
    "dpmpp_2m_sde": ("DPMSolverMultistepScheduler", {"algorithm_type": "sde-dpmsolver++", "solver_order": 2}),
    "dpmpp_2m_sde_gpu": ("DPMSolverMultistepScheduler", {"algorithm_type": "sde-dpmsolver++", "solver_order": 2}),
    "dpmpp_3m_sde": ("DPMSolverMultistepScheduler", {"algorithm_type": "sde-dpmsolver++", "solver_order": 3}),
    "dpmpp_3m_sde_gpu": ("DPMSolverMultistepScheduler", {"algorithm_type": "sde-dpmsolver++", "solver_order": 3}),
    "dpmpp_sde": ("DPMSolverSDEScheduler", {}),
    "ddpm": ("DDPMScheduler", {}),
    "ddim": ("DDIMScheduler", {"set_alpha_to_one": False}),
    "uni_pc": ("UniPCMultistepScheduler", {}),
    "uni_pc_bh2": ("UniPCMultistepScheduler", {"solver_type": "bh2"}),
    "lcm": ("LCMScheduler", {}),
    "deis": ("DEISMultistepScheduler", {}),
}
"""ComfyUI sampler name → (diffusers scheduler class, options). The ``_gpu`` variants differ in
ComfyUI only in where the noise is drawn; here noise always comes from the seeded CPU generator."""

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

A1111_SCHEDULES: dict[str, str | None] = {
    "automatic": None,
    "uniform": "normal",
    "karras": "karras",
    "exponential": "exponential",
    "sgm_uniform": "sgm_uniform",
    "simple": "simple",
    "normal": "normal",
    "ddim": "ddim_uniform",
    "beta": "beta",
}
"""A1111 schedule type (``scheduler`` field, the contract's ``SCHEDULE_TYPES``) → ComfyUI schedule;
None: the sampler's own (a "X Karras" name's Karras, else the model's config)."""


@dataclass(frozen=True)
class A1111Sampler:
    """An A1111 sampler: a ComfyUI sampler and a schedule (None: the model's own)."""

    sampler: str
    schedule: str | None = None

    @property
    def scheduler_class(self) -> str:
        return COMFY_SAMPLERS[self.sampler][0]


A1111_SAMPLERS: dict[str, A1111Sampler] = {
    "Euler a": A1111Sampler("euler_ancestral"),
    "Euler": A1111Sampler("euler"),
    "DPM++ 2M": A1111Sampler("dpmpp_2m"),
    "DPM++ 2M Karras": A1111Sampler("dpmpp_2m", "karras"),
    "DPM++ SDE Karras": A1111Sampler("dpmpp_sde", "karras"),
    "DDIM": A1111Sampler("ddim"),
    "UniPC": A1111Sampler("uni_pc"),
    "LMS": A1111Sampler("lms"),
    "Heun": A1111Sampler("heun"),
    "DPM++ SDE": A1111Sampler("dpmpp_sde"),
    "DPM++ 2M SDE": A1111Sampler("dpmpp_2m_sde"),
    "DPM++ 2M SDE Karras": A1111Sampler("dpmpp_2m_sde", "karras"),
    "DPM++ 3M SDE": A1111Sampler("dpmpp_3m_sde"),
    "DPM++ 3M SDE Karras": A1111Sampler("dpmpp_3m_sde", "karras"),
    "DPM2": A1111Sampler("dpm_2"),
    "DPM2 a": A1111Sampler("dpm_2_ancestral"),
    "DPM2 Karras": A1111Sampler("dpm_2", "karras"),
    "DPM2 a Karras": A1111Sampler("dpm_2_ancestral", "karras"),
    "LMS Karras": A1111Sampler("lms", "karras"),
    "LCM": A1111Sampler("lcm"),
}

# fail at import, not at request time, if the contract and the runtime drift apart
for _names, _mapped, _what in (
    (SAMPLERS, A1111_SAMPLERS, "SAMPLERS"),
    (SCHEDULE_TYPES, A1111_SCHEDULES, "SCHEDULE_TYPES"),
):
    if set(_names) ^ set(_mapped):
        raise RuntimeError(f"mapping out of sync with sdeks.contract.{_what}: {sorted(set(_names) ^ set(_mapped))}")

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


def a1111_scheduler(name: str, base_config: dict[str, Any], schedule_type: str | None = None) -> Any:
    """The scheduler of an A1111 sampler name and schedule type (the contract's names).

    An explicit schedule type wins over the one a "X Karras" name implies, as in A1111 1.9+.
    """
    spec = A1111_SAMPLERS[name]
    schedule = A1111_SCHEDULES[schedule_type] if schedule_type else None
    return make_scheduler(spec.sampler, schedule or spec.schedule, base_config)


def a1111_samplers() -> list[dict[str, Any]]:
    """``GET /sdapi/v1/samplers`` body: name, aliases, options, in the contract's order."""
    return [
        {
            "name": name,
            "aliases": [alias for alias, target in SAMPLER_ALIASES.items() if target == name],
            "options": {"scheduler": A1111_SAMPLERS[name].scheduler_class},
        }
        for name in SAMPLERS
    ]


def a1111_schedulers() -> list[dict[str, Any]]:
    """``GET /sdapi/v1/schedulers`` body, A1111's shape (label: the name as A1111's UI shows it)."""
    return [
        {
            "name": name,
            "label": name.replace("_", " ").title().replace("Sgm", "SGM").replace("Ddim", "DDIM"),
            "aliases": None,
            "default_rho": -1,
            "need_inner_model": False,
        }
        for name in SCHEDULE_TYPES
    ]
