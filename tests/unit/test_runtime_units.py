"""Unit tests of the runtime's pure parts: sampler mapping, ldm key layout, upscaling, model lookup."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sd_runtime import CONFIGS_DIR
from sd_runtime.errors import InvalidInputError, TooLargeError, UnknownUpscalerError
from sd_runtime.models import UnknownModelError, discover, resolve
from sd_runtime.samplers import A1111_SAMPLERS, a1111_samplers, a1111_scheduler
from sd_runtime.upscale import target_size, upscale
from sdeks.contract import SAMPLERS

SCHED_CONFIG = json.loads((CONFIGS_DIR / "tiny-sd" / "scheduler" / "scheduler_config.json").read_text())


def test_every_contract_sampler_is_mapped() -> None:
    assert set(A1111_SAMPLERS) == set(SAMPLERS)
    assert [s["name"] for s in a1111_samplers()] == list(SAMPLERS)


@pytest.mark.parametrize(
    ("name", "cls", "attrs"),
    [
        ("Euler a", "EulerAncestralDiscreteScheduler", {}),
        ("Euler", "EulerDiscreteScheduler", {}),
        ("DPM++ 2M", "DPMSolverMultistepScheduler", {"use_karras_sigmas": False, "algorithm_type": "dpmsolver++"}),
        ("DPM++ 2M Karras", "DPMSolverMultistepScheduler", {"use_karras_sigmas": True, "solver_order": 2}),
        ("DPM++ SDE Karras", "DPMSolverSDEScheduler", {"use_karras_sigmas": True}),
        ("DDIM", "DDIMScheduler", {}),
        ("UniPC", "UniPCMultistepScheduler", {}),
        ("LMS", "LMSDiscreteScheduler", {}),
        ("Heun", "HeunDiscreteScheduler", {}),
    ],
)
def test_a1111_scheduler(name: str, cls: str, attrs: dict) -> None:
    sched = a1111_scheduler(name, SCHED_CONFIG)
    assert type(sched).__name__ == cls
    for key, value in attrs.items():
        assert sched.config[key] == value
    # the model's noise schedule is kept
    assert sched.config["beta_schedule"] == "scaled_linear" and sched.config["beta_end"] == 0.012


def test_karras_option_does_not_leak_between_samplers() -> None:
    karras = a1111_scheduler("DPM++ 2M Karras", SCHED_CONFIG)
    plain = a1111_scheduler("DPM++ 2M", dict(karras.config))
    assert plain.config["use_karras_sigmas"] is False


def test_ldm_layout_round_trips_through_diffusers_converters() -> None:
    """Our diffusers→ldm conversion is exactly inverted by diffusers' own ldm→diffusers converters."""
    import torch
    from diffusers.loaders.single_file_utils import (
        convert_ldm_clip_checkpoint,
        convert_ldm_unet_checkpoint,
        convert_ldm_vae_checkpoint,
    )

    from sd_runtime.tiny import build_pipeline, single_file_state_dict

    pipe = build_pipeline()
    ldm = single_file_state_dict(pipe)
    assert all(k.startswith(("model.diffusion_model.", "first_stage_model.", "cond_stage_model.")) for k in ldm)
    pairs = [
        (pipe.unet.state_dict(), convert_ldm_unet_checkpoint(ldm, dict(pipe.unet.config))),
        (pipe.vae.state_dict(), convert_ldm_vae_checkpoint(ldm, dict(pipe.vae.config))),
    ]
    clip = {k.removeprefix("text_model."): v for k, v in convert_ldm_clip_checkpoint(ldm).items()}
    pairs.append(({k.removeprefix("text_model."): v for k, v in pipe.text_encoder.state_dict().items()}, clip))
    for original, converted in pairs:
        assert set(original) == set(converted)
        for key, value in original.items():
            assert torch.equal(value, converted[key].reshape(value.shape)), key


def test_tiny_build_is_deterministic() -> None:
    import torch

    from sd_runtime.tiny import build_pipeline

    a, b = build_pipeline().unet.state_dict(), build_pipeline().unet.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize(
    ("size", "mode", "factor", "wh", "expected"),
    [
        ((40, 30), 0, 2.0, (None, None), (80, 60)),
        ((40, 30), 0, 1.5, (None, None), (60, 45)),
        ((40, 30), 1, 2.0, (100, 100), (100, 100)),
        ((64, 32), 1, 2.0, (128, 32), (128, 32)),
    ],
)
def test_upscale_sizes(size: tuple, mode: int, factor: float, wh: tuple, expected: tuple) -> None:
    from PIL import Image

    out = upscale(Image.new("RGB", size), "Lanczos", mode, factor, *wh)
    assert out.size == expected


def test_upscale_refuses_unknown_and_huge() -> None:
    from PIL import Image

    with pytest.raises(UnknownUpscalerError, match="not installed"):
        upscale(Image.new("RGB", (8, 8)), "SwinIR 4x", 0, 2.0)
    with pytest.raises(UnknownUpscalerError, match="unknown"):
        upscale(Image.new("RGB", (8, 8)), "Bogus", 0, 2.0)
    assert target_size(2048, 2048, 0, 8.0, None, None)[0] == 16384
    with pytest.raises(TooLargeError, match="exceeds"):
        upscale(Image.new("RGB", (2048, 2048)), "Nearest", 0, 8.0)


def test_model_discovery_and_resolution(tmp_path: Path) -> None:
    (tmp_path / "mydiff").mkdir()
    (tmp_path / "mydiff" / "model_index.json").write_text("{}")
    (tmp_path / "v1-5.safetensors").write_bytes(b"")
    (tmp_path / "ignored.ckpt").write_bytes(b"")
    (tmp_path / "notes").mkdir()
    refs = discover(tmp_path)
    assert [(r.title, r.kind) for r in refs] == [("mydiff", "diffusers"), ("v1-5.safetensors", "single_file")]
    assert resolve("v1-5", tmp_path, refs).title == "v1-5.safetensors"  # model_name, like A1111
    assert resolve("v1-5.safetensors [6ce0161689]", tmp_path, refs).kind == "single_file"
    assert resolve(str(tmp_path / "mydiff"), tmp_path, refs, allow_paths=True).kind == "diffusers"  # the operator's
    with pytest.raises(UnknownModelError) as err:
        resolve("ignored.ckpt", tmp_path, refs)
    assert err.value.details == {"available": ["mydiff", "v1-5.safetensors"]}
    assert "v1-5" not in err.value.message  # the message does not enumerate the server's files
    for path in (str(tmp_path / "mydiff"), "../mydiff", "/etc/passwd", "Stable-diffusion/../../x"):
        with pytest.raises(InvalidInputError, match="not by path"):
            resolve(path, tmp_path, refs)  # a request's path is refused, even one inside the models dir


def test_shipped_sd15_tokenizer_tokenizes_as_clip(tmp_path: Path) -> None:
    """Single-file SD 1.x checkpoints load with the shipped CLIP vocabulary (no hub access)."""
    from sd_runtime.models import _tokenizer_for

    tokenizer = _tokenizer_for(CONFIGS_DIR / "sd15", tmp_path / "v1-5-pruned-emaonly.safetensors")
    assert len(tokenizer) == 49408
    # Reference ids of CLIP ViT-L/14 for this prompt (start, a, photo, of, a, cat, end).
    assert tokenizer("a photo of a cat").input_ids == [49406, 320, 1125, 539, 320, 2368, 49407]
    assert tokenizer.model_max_length == 77
