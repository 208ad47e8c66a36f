"""A1111 sampler names → diffusers schedulers.

The names are the contract's ``SAMPLERS`` (the queue agent and the API validate
against the same tuple); this module only says which diffusers scheduler, with
which options, renders each one. The mapping follows the diffusers
documentation's A1111 ↔ diffusers table. A scheduler is always built from the
loaded model's own scheduler config, so the model's beta schedule and
prediction type are kept.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sdeks.contract import SAMPLERS


@dataclass(frozen=True)
class SamplerSpec:
    """Which diffusers scheduler class renders an A1111 sampler, and its extra options."""

    scheduler: str
    options: dict[str, Any] = field(default_factory=dict)
    aliases: tuple[str, ...] = ()


SAMPLER_MAP: dict[str, SamplerSpec] = {
    "Euler a": SamplerSpec("EulerAncestralDiscreteScheduler", aliases=("k_euler_a",)),
    "Euler": SamplerSpec("EulerDiscreteScheduler", aliases=("k_euler",)),
    "DPM++ 2M": SamplerSpec(
        "DPMSolverMultistepScheduler", {"algorithm_type": "dpmsolver++", "solver_order": 2}, ("k_dpmpp_2m",)
    ),
    "DPM++ 2M Karras": SamplerSpec(
        "DPMSolverMultistepScheduler",
        {"algorithm_type": "dpmsolver++", "solver_order": 2, "use_karras_sigmas": True},
        ("k_dpmpp_2m_ka",),
    ),
    "DPM++ SDE Karras": SamplerSpec("DPMSolverSDEScheduler", {"use_karras_sigmas": True}, ("k_dpmpp_sde_ka",)),
    "DDIM": SamplerSpec("DDIMScheduler", {"set_alpha_to_one": False}, ("ddim",)),
    "UniPC": SamplerSpec("UniPCMultistepScheduler", aliases=("unipc",)),
    "LMS": SamplerSpec("LMSDiscreteScheduler", aliases=("k_lms",)),
    "Heun": SamplerSpec("HeunDiscreteScheduler", aliases=("k_heun",)),
}

_missing = set(SAMPLERS) ^ set(SAMPLER_MAP)
if _missing:  # fail at import, not at request time, if the contract and the runtime drift apart
    raise RuntimeError(f"sampler mapping out of sync with sdeks.contract.SAMPLERS: {sorted(_missing)}")

# Options a model's scheduler config may carry that are wrong for another scheduler class.
_RESET = ("use_karras_sigmas", "algorithm_type", "solver_order")


def make_scheduler(name: str, base_config: dict[str, Any]):
    """A fresh scheduler for sampler ``name`` built on the model's scheduler config.

    A new instance per request: diffusers schedulers keep per-run state (timesteps,
    step index), so sharing one across requests is not safe.
    """
    import diffusers

    spec = SAMPLER_MAP[name]
    cls = getattr(diffusers, spec.scheduler)
    config = {k: v for k, v in base_config.items() if k not in _RESET}
    return cls.from_config(config, **spec.options)


def a1111_samplers() -> list[dict[str, Any]]:
    """``GET /sdapi/v1/samplers`` body: name, aliases, options, in the contract's order."""
    return [
        {
            "name": name,
            "aliases": list(SAMPLER_MAP[name].aliases),
            "options": {"scheduler": SAMPLER_MAP[name].scheduler},
        }
        for name in SAMPLERS
    ]
