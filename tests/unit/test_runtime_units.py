"""Unit tests of the runtime's pure parts: sampler mapping, ldm key layout, upscaling, model lookup."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import ValidationError

from sd_runtime import CONFIGS_DIR
from sd_runtime.errors import InvalidInputError, TooLargeError, UnknownUpscalerError
from sd_runtime.models import UnknownModelError, discover, resolve
from sd_runtime.samplers import A1111_SAMPLERS, a1111_samplers, a1111_scheduler
from sd_runtime.upscale import target_size, upscale
from sdeks.contract import SAMPLER_ALIASES, SAMPLERS, SCHEDULE_TYPES

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
        ("DPM++ SDE", "DPMSolverSDEScheduler", {"use_karras_sigmas": False}),
        ("DPM++ 2M SDE", "DPMSolverMultistepScheduler", {"algorithm_type": "sde-dpmsolver++", "solver_order": 2}),
        (
            "DPM++ 2M SDE Karras",
            "DPMSolverMultistepScheduler",
            {"algorithm_type": "sde-dpmsolver++", "use_karras_sigmas": True},
        ),
        ("DPM++ 3M SDE", "DPMSolverMultistepScheduler", {"algorithm_type": "sde-dpmsolver++", "solver_order": 3}),
        ("DPM++ 3M SDE Karras", "DPMSolverMultistepScheduler", {"solver_order": 3, "use_karras_sigmas": True}),
        ("DPM2", "KDPM2DiscreteScheduler", {"use_karras_sigmas": False}),
        ("DPM2 a", "KDPM2AncestralDiscreteScheduler", {}),
        ("DPM2 Karras", "KDPM2DiscreteScheduler", {"use_karras_sigmas": True}),
        ("DPM2 a Karras", "KDPM2AncestralDiscreteScheduler", {"use_karras_sigmas": True}),
        ("LMS Karras", "LMSDiscreteScheduler", {"use_karras_sigmas": True}),
        ("LCM", "LCMScheduler", {}),
    ],
)
def test_a1111_scheduler(name: str, cls: str, attrs: dict) -> None:
    sched = a1111_scheduler(name, SCHED_CONFIG)
    assert type(sched).__name__ == cls
    for key, value in attrs.items():
        assert sched.config[key] == value
    # the model's noise schedule is kept
    assert sched.config["beta_schedule"] == "scaled_linear" and sched.config["beta_end"] == 0.012


@pytest.mark.parametrize("schedule", SCHEDULE_TYPES)
def test_every_schedule_type_builds_with_every_sampler(schedule: str) -> None:
    for name in SAMPLERS:
        a1111_scheduler(name, SCHED_CONFIG, schedule)


def test_explicit_schedule_type_wins_over_the_name() -> None:
    assert a1111_scheduler("DPM++ 2M", SCHED_CONFIG, "karras").config["use_karras_sigmas"] is True
    exp = a1111_scheduler("DPM++ 2M Karras", SCHED_CONFIG, "exponential").config
    assert exp["use_exponential_sigmas"] is True and exp["use_karras_sigmas"] is False
    assert a1111_scheduler("DPM++ 2M Karras", SCHED_CONFIG, "automatic").config["use_karras_sigmas"] is True
    assert a1111_scheduler("Euler", SCHED_CONFIG, "sgm_uniform").config["timestep_spacing"] == "trailing"


def test_samplers_listing_carries_the_contract_aliases() -> None:
    listed = {s["name"]: s["aliases"] for s in a1111_samplers()}
    assert listed["Euler a"] == ["k_euler_a"] and listed["DPM++ 2M Karras"] == ["k_dpmpp_2m_ka"]
    assert {alias for aliases in listed.values() for alias in aliases} == set(SAMPLER_ALIASES)


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


def test_sdxl_ldm_layout_round_trips_through_diffusers_converters() -> None:
    """SDXL: UNet with label_emb, first encoder under conditioner.embedders.0, OpenCLIP second encoder."""
    import torch
    from diffusers.loaders.single_file_utils import (
        convert_ldm_clip_checkpoint,
        convert_ldm_unet_checkpoint,
        convert_open_clip_checkpoint,
    )

    from sd_runtime.models import SDXL_TENSORS
    from sd_runtime.tiny import build_sdxl_pipeline, single_file_state_dict

    pipe = build_sdxl_pipeline()
    ldm = single_file_state_dict(pipe)
    assert all(k in ldm for k in SDXL_TENSORS)  # what the runtime detects SDXL by
    te2 = convert_open_clip_checkpoint(pipe.text_encoder_2, ldm, prefix="conditioner.embedders.1.model.")
    pairs = [
        (pipe.unet.state_dict(), convert_ldm_unet_checkpoint(ldm, dict(pipe.unet.config))),
        (pipe.text_encoder.state_dict(), convert_ldm_clip_checkpoint(ldm)),
        (pipe.text_encoder_2.state_dict(), te2),
    ]
    for original, converted in pairs:
        # transformers 5 drops CLIPTextModel's "text_model." prefix, diffusers' converter keeps it
        original = {k.removeprefix("text_model."): v for k, v in original.items() if not k.endswith("position_ids")}
        converted = {k.removeprefix("text_model."): v for k, v in converted.items()}
        assert set(original) == set(converted)
        for key, value in original.items():
            assert torch.equal(value, converted[key].reshape(value.shape)), key


def test_tiny_build_is_deterministic() -> None:
    import torch

    from sd_runtime.tiny import build_pipeline

    a, b = build_pipeline().unet.state_dict(), build_pipeline().unet.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def no_upscale_models():  # -> UpscaleModels
    """Model upscalers of a runtime without a models dir: the built-in ones only."""
    import torch

    from sd_runtime.upscale_models import UpscaleModels

    return UpscaleModels(None, "cpu", torch.float32)


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

    out = upscale(Image.new("RGB", size), "Lanczos", mode, factor, *wh, no_upscale_models())
    assert out.size == expected


def test_upscale_refuses_unknown_and_huge() -> None:
    from PIL import Image

    with pytest.raises(UnknownUpscalerError, match="not installed"):
        upscale(Image.new("RGB", (8, 8)), "SwinIR 4x", 0, 2.0, None, None, no_upscale_models())
    with pytest.raises(UnknownUpscalerError, match="unknown"):
        upscale(Image.new("RGB", (8, 8)), "Bogus", 0, 2.0, None, None, no_upscale_models())
    assert target_size(2048, 2048, 0, 8.0, None, None)[0] == 16384
    with pytest.raises(TooLargeError, match="exceeds"):
        upscale(Image.new("RGB", (2048, 2048)), "Nearest", 0, 8.0, None, None, no_upscale_models())


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


def test_requests_name_models_inside_the_models_dir_only(tmp_path: Path) -> None:
    models, outside = tmp_path / "models", tmp_path / "elsewhere"
    for d in (models / "a", outside / "b", tmp_path):
        d.mkdir(parents=True, exist_ok=True)
    for d in (models / "a", outside / "b", tmp_path):
        (d / "model_index.json").write_text("{}")
    refs = discover(models)
    for spec in (str(outside / "b"), "../elsewhere/b", "..", "../", str(tmp_path), "./a/../../elsewhere/b"):
        with pytest.raises(InvalidInputError) as err:  # a path is refused before the filesystem is touched
            resolve(spec, models, refs)
        assert str(tmp_path) not in err.value.message.replace(spec, "")
    with pytest.raises(UnknownModelError) as unknown:
        resolve("b", models, refs)
    assert unknown.value.details == {"available": ["a"]} and str(tmp_path) not in unknown.value.message
    assert resolve("a", models, refs).title == "a"
    assert resolve(str(outside / "b"), models, refs, allow_paths=True).title == "b"  # the operator's --model


def test_shipped_sd15_tokenizer_tokenizes_as_clip(tmp_path: Path) -> None:
    """Single-file SD 1.x checkpoints load with the shipped CLIP vocabulary (no hub access)."""
    from sd_runtime.models import _tokenizer_for

    tokenizer = _tokenizer_for(CONFIGS_DIR / "sd15", tmp_path / "v1-5-pruned-emaonly.safetensors")
    assert len(tokenizer) == 49408
    # Reference ids of CLIP ViT-L/14 for this prompt (start, a, photo, of, a, cat, end).
    assert tokenizer("a photo of a cat").input_ids == [49406, 320, 1125, 539, 320, 2368, 49407]
    assert tokenizer.model_max_length == 77


@pytest.mark.parametrize(
    ("prompt", "text", "tags"),
    [
        ("a cat", "a cat", []),
        ("a cat <lora:foo:0.8>", "a cat ", [("foo", 0.8, 0.8)]),
        ("<lora:foo> a <LORA:bar:0.5:1.5> cat", " a  cat", [("foo", 1.0, 1.0), ("bar", 1.5, 0.5)]),
        ("a <lora:foo:te=0.2:unet=0.7>", "a ", [("foo", 0.7, 0.2)]),
        ("a <lora:foo:unet=0>", "a ", [("foo", 0.0, 1.0)]),
    ],
)
def test_lora_tags_are_parsed_and_removed_from_the_text(prompt: str, text: str, tags: list) -> None:
    from sd_runtime.lora import parse_prompt

    got_text, got = parse_prompt(prompt)
    assert got_text == text
    assert [(t.name, t.unet, t.text_encoder) for t in got] == tags


@pytest.mark.parametrize(
    ("prompt", "needle"),
    [
        ("<lora::1>", "expected"),
        ("<lora:foo:x>", "'x'"),
        ("<lora:foo:1:2:3>", "expected"),
        ("<lora:foo:scale=1>", "'scale'"),
        ("<lora:foo:1000>", "-100..100"),
        ("<lora:a>" * 9, "at most 8"),
    ],
)
def test_bad_lora_tags_name_the_field(prompt: str, needle: str) -> None:
    from sd_runtime.errors import InvalidInputError
    from sd_runtime.lora import parse_prompt

    with pytest.raises(InvalidInputError) as err:
        parse_prompt(prompt)
    assert err.value.message.startswith("prompt: ") and needle in err.value.message


def test_loras_are_found_inside_the_lora_folder_only(tmp_path: Path) -> None:
    from sd_runtime.lora import UnknownLoraError, discover, find

    lora_dir = tmp_path / "Lora"
    (lora_dir / "style").mkdir(parents=True)
    (lora_dir / "a.safetensors").write_bytes(b"")
    (lora_dir / "style" / "b.safetensors").write_bytes(b"")
    (lora_dir / ".hidden.safetensors").write_bytes(b"")
    (lora_dir / "c.ckpt").write_bytes(b"")
    (tmp_path / "outside.safetensors").write_bytes(b"")
    (lora_dir / "link.safetensors").symlink_to(tmp_path / "outside.safetensors")
    refs = discover(tmp_path)
    assert [(r.name, r.file) for r in refs] == [("a", "a.safetensors"), ("b", "style/b.safetensors")]
    assert find("b", refs, "prompt").file == find("style/b.safetensors", refs, "prompt").file
    for name in ("../outside", "outside", "link", str(tmp_path / "outside.safetensors"), "c"):
        with pytest.raises(UnknownLoraError) as err:
            find(name, refs, "prompt")
        assert err.value.details == {"lora": name, "available": ["a", "b"]}
    assert discover(None) == [] and discover(tmp_path / "missing") == []


def test_override_settings_are_applied_or_reported() -> None:
    from sd_runtime.a1111_overrides import parse
    from sd_runtime.errors import InvalidInputError
    from sdeks.contract import Txt2ImgContent

    got = parse(
        Txt2ImgContent(
            override_settings={"CLIP_stop_at_last_layers": 2, "sd_vae": "a", "sd_model_checkpoint": "m", "x": 1}
        )
    )
    assert (got.clip_skip, got.checkpoint, got.vae, got.restore, got.ignored) == (
        1,
        "m",
        "a",
        True,
        ["override_settings.x"],
    )
    assert parse(Txt2ImgContent(override_settings={"CLIP_stop_at_last_layers": 1})).clip_skip is None
    assert parse(Txt2ImgContent(override_settings_restore_afterwards=False)).restore is False
    with pytest.raises(ValidationError):  # the contract refuses an empty model name before the runtime
        Txt2ImgContent(override_settings={"sd_model_checkpoint": ""})
    bad_values = [
        {"override_settings": []},
        {"override_settings": {"CLIP_stop_at_last_layers": True}},
        {"override_settings_restore_afterwards": "no"},
        {"override_settings": {"sd_vae": "a"}, "override_settings_restore_afterwards": False},
    ]
    for bad in bad_values:
        with pytest.raises(InvalidInputError) as err:
            parse(Txt2ImgContent(**bad))
        assert err.value.message.startswith(next(iter(bad)))


def test_infotext_round_trip() -> None:
    from sd_runtime.a1111 import infotext, parse_infotext
    from sd_runtime.engine import GenerationRequest

    req = GenerationRequest(prompt="a cat", negative_prompt="fog\nrain", steps=4, seed=3, sampler_name="DDIM")
    parsed = parse_infotext(infotext(req, "a <lora:x:1> cat", 3, "tiny-sd"))
    assert parsed["Prompt"] == "a <lora:x:1> cat" and parsed["Negative prompt"] == "fog\nrain"
    assert (parsed["Steps"], parsed["Sampler"], parsed["Seed"], parsed["Model"]) == ("4", "DDIM", "3", "tiny-sd")


def test_hires_parse_sizes_and_refusals() -> None:
    from sd_runtime.errors import InvalidInputError, UnknownUpscalerError
    from sd_runtime.hires import parse
    from sdeks.contract import Txt2ImgContent

    assert parse(Txt2ImgContent(width=128, height=96, hr_scale=4), []) is None  # no enable_hr: nothing read
    hires = parse(Txt2ImgContent(width=128, height=96, enable_hr=True, hr_scale=1.5), [])
    assert (hires.width, hires.height, hires.upscaler, hires.steps, hires.denoising) == (192, 144, "Latent", 20, 0.7)
    sized = parse(Txt2ImgContent(width=128, height=96, enable_hr=True, hr_resize_x=0, hr_resize_y=200), [])
    assert (sized.width, sized.height) == (264, 200)  # aspect kept (266.7), multiples of 8
    for bad, error in (
        ({"hr_upscaler": "4x-UltraSharp"}, UnknownUpscalerError),
        ({"hr_scale": 0.5}, InvalidInputError),
        ({"hr_second_pass_steps": 1.5}, InvalidInputError),
        ({"enable_hr": "yes"}, InvalidInputError),
        ({"hr_resize_x": 5000}, InvalidInputError),
    ):
        with pytest.raises(error) as err:
            parse(Txt2ImgContent(**{"enable_hr": True, **bad}), [])
        assert err.value.message.startswith(next(iter(bad)))


def test_missing_model_reason_names_the_file_under_the_models_dir_only(tmp_path):
    from sd_runtime.models import missing_model_reason

    models = tmp_path / "models"
    assert missing_model_reason("v1-5.safetensors", models) == "model file not found: v1-5.safetensors"
    assert missing_model_reason(str(models / "sd" / "v1-5.safetensors"), models) == (
        "model file not found: sd/v1-5.safetensors"
    )
    for outside in ("/srv/secret/place/v1-5.safetensors", "../../etc/v1-5.safetensors"):
        reason = missing_model_reason(outside, models)
        assert reason == "model file not found: v1-5.safetensors"
    assert str(tmp_path) not in missing_model_reason(str(models / "x.safetensors"), None)


# ---- prompt weighting (A1111 / ComfyUI attention syntax) ---------------------------


@pytest.mark.parametrize(
    ("text", "segments"),
    [
        ("a (b:1.5) c", [[("a ", 1.0), ("b", 1.5), (" c", 1.0)]]),
        ("((b))", [[("b", pytest.approx(1.21))]]),  # nested brackets multiply
        ("[b]", [[("b", pytest.approx(1 / 1.1))]]),
        ("(a [b])", [[("a ", 1.1), ("b", pytest.approx(1.0))]]),
        (r"\(b\) \[c\]", [[("(b) [c]", 1.0)]]),  # escaped brackets are text
        ("(b", [[("b", 1.1)]]),  # unclosed: to the end, as A1111
        ("(b:1.0) c", [[("b c", 1.0)]]),  # weight 1 merges with its neighbours: the same text as "b c"
        ("a BREAK b", [[("a", 1.0)], [("b", 1.0)]]),
        ("BREAK", [[("", 1.0)], [("", 1.0)]]),
        ("", [[("", 1.0)]]),
    ],
)
def test_parse_reads_a1111_attention_syntax(text: str, segments: list) -> None:
    from sd_runtime.prompt_weighting import parse

    assert parse(text) == segments


def test_parse_comfyui_reads_round_brackets_only() -> None:
    from sd_runtime.prompt_weighting import parse

    assert parse("[a] (b:1.2) BREAK c", a1111=False) == [[("[a] ", 1.0), ("b", 1.2), (" BREAK c", 1.0)]]


def test_unsupported_prompt_syntax_is_named() -> None:
    from sd_runtime.a1111_fields import prompt_syntax
    from sdeks.contract import Txt2ImgContent

    content = Txt2ImgContent(prompt="[cat:dog:0.5] (x:1.2) BREAK y", negative_prompt="[a|b] AND c")
    assert prompt_syntax(content) == [
        "prompt (prompt editing [from:to:when])",
        "negative_prompt (alternation [a|b])",
        "negative_prompt (AND composition)",
    ]
    assert prompt_syntax(Txt2ImgContent(prompt=r"(x:1.2), [y], \[z:w\] <lora:l:0.5> BREAK")) == []
