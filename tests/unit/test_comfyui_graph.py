"""ComfyUI dialect units: workflow validation, execution order, scheduler mapping, the file store."""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path
from types import SimpleNamespace

import pytest
from PIL import Image

from sd_runtime.comfyui.files import FileStore
from sd_runtime.comfyui.graph import PromptError, validate
from sd_runtime.comfyui.nodes import NODES
from sd_runtime.comfyui.nodes_sampling import steps_for_denoise
from sd_runtime.imageio import inline_bytes
from sd_runtime.models import ModelRef
from sd_runtime.samplers import COMFY_SAMPLERS, COMFY_SCHEDULERS, make_scheduler
from tests.integration.test_comfyui_api import default_workflow, img2img_workflow


class FakeEngine:
    model = None
    models_dir = None

    def loras(self) -> list:
        return []

    def models(self) -> list[ModelRef]:
        return [
            ModelRef("tiny-sd", Path("/m/tiny-sd"), "diffusers"),
            ModelRef("b.safetensors", Path("/m/b.safetensors"), "single_file"),
        ]


def state() -> SimpleNamespace:
    return SimpleNamespace(engine=FakeEngine(), files=FileStore())


def png(color: str = "red") -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (16, 16), color).save(buf, format="PNG")
    return buf.getvalue()


def rejected(prompt) -> dict:
    with pytest.raises(PromptError) as info:
        validate(prompt, state())
    body = info.value.body
    json.dumps(body)  # serializable as is
    return body


def test_default_workflow_plan_is_topological_and_converts_values():
    wf = default_workflow()
    wf["3"]["inputs"]["cfg"] = "7.5"  # ComfyUI converts constants to the input's type
    plan = validate(wf, state())
    assert plan.outputs == ["9"] and plan.node_errors == {}
    pos = {nid: i for i, nid in enumerate(plan.order)}
    for nid in plan.order:
        for value in plan.inputs[nid].values():
            if isinstance(value, tuple):
                assert pos[value[0]] < pos[nid]
    assert plan.inputs["3"]["cfg"] == 7.5
    assert set(plan.order) == {"3", "4", "5", "6", "7", "8", "9"}


def test_nodes_not_feeding_an_output_are_not_run():
    wf = default_workflow()
    wf["50"] = {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}}
    assert "50" not in validate(wf, state()).order


def test_ckpt_by_model_name_and_loadimage_base64_are_accepted():
    wf = img2img_workflow("data:image/png;base64," + base64.b64encode(png()).decode())
    wf["4"]["inputs"]["ckpt_name"] = "b"  # model name of b.safetensors
    validate(wf, state())


@pytest.mark.parametrize(
    ("prompt", "kind"),
    [
        ([], "invalid_prompt"),
        ({}, "invalid_prompt"),
        ({"1": {"inputs": {}}}, "invalid_prompt"),
        ({"1": "KSampler"}, "invalid_prompt"),
        (
            {"1": {"class_type": "EmptyLatentImage", "inputs": {"width": 8, "height": 8, "batch_size": 1}}},
            "prompt_no_outputs",
        ),
    ],
)
def test_malformed_prompts(prompt, kind):
    assert rejected(prompt)["error"]["type"] == kind


def test_unknown_nodes_are_all_listed():
    wf = default_workflow()
    wf["8"]["class_type"] = "VAEDecodeTiled"
    wf["30"] = {"class_type": "Nope", "inputs": {}}
    body = rejected(wf)
    assert set(body["node_errors"]) == {"8", "30"}
    assert body["node_errors"]["8"]["errors"][0]["extra_info"]["supported"] == sorted(NODES)


def test_cycle_is_a_node_error():
    wf = default_workflow()
    wf["3"]["inputs"]["latent_image"] = ["20", 0]
    wf["20"] = {
        "class_type": "LatentUpscaleBy",
        "inputs": {"samples": ["3", 0], "upscale_method": "bilinear", "scale_by": 1.0},
    }
    body = rejected(wf)
    kinds = {e["type"] for entry in body["node_errors"].values() for e in entry["errors"]}
    assert "dependency_cycle" in kinds


@pytest.mark.parametrize(
    ("node", "inputs", "kind"),
    [
        ("8", {"samples": ["3"]}, "bad_linked_input"),
        ("8", {"samples": ["3", "0"]}, "bad_linked_input"),
        ("8", {"samples": 3}, "invalid_input_type"),
        ("3", {"seed": 1.5}, "invalid_input_type"),
        ("3", {"seed": True}, "invalid_input_type"),
        ("3", {"denoise": 1.5}, "value_bigger_than_max"),
        ("3", {"cfg": float("nan")}, "invalid_input_type"),
        ("5", {"width": 8}, "value_smaller_than_min"),
        ("4", {"ckpt_name": "/etc/passwd"}, "value_not_in_list"),
    ],
)
def test_input_errors(node, inputs, kind):
    wf = default_workflow()
    wf[node]["inputs"].update(inputs)
    body = rejected(wf)
    assert body["node_errors"][node]["errors"][0]["type"] == kind


def test_bislerp_is_refused_not_rendered_bilinear():
    wf = default_workflow()
    wf["20"] = {
        "class_type": "LatentUpscaleBy",
        "inputs": {"samples": ["3", 0], "upscale_method": "bislerp", "scale_by": 1.5},
    }
    wf["8"]["inputs"]["samples"] = ["20", 0]
    assert rejected(wf)["node_errors"]["20"]["errors"][0]["type"] == "value_not_in_list"


def test_every_sampler_and_scheduler_builds_a_diffusers_scheduler():
    from sd_runtime import CONFIGS_DIR

    config = json.loads((CONFIGS_DIR / "tiny-sd" / "scheduler" / "scheduler_config.json").read_text())
    for sampler in COMFY_SAMPLERS:
        for scheduler in COMFY_SCHEDULERS:
            sched = make_scheduler(sampler, scheduler, config)
            assert type(sched).__name__ == COMFY_SAMPLERS[sampler][0]
    assert make_scheduler("dpmpp_2m", "karras", config).config.use_karras_sigmas is True
    assert make_scheduler("euler", "normal", config).config.timestep_spacing == "linspace"


@pytest.mark.parametrize("steps", [1, 4, 20, 33])
@pytest.mark.parametrize("denoise", [0.05, 0.3, 0.6, 0.75, 0.999, 1.0])
def test_partial_denoise_runs_the_requested_number_of_steps(steps, denoise):
    n = steps_for_denoise(steps, denoise)
    assert int(n * denoise) == steps if denoise < 1 else n == steps


def test_file_store_bounds_names_and_inputs():
    store = FileStore(max_bytes=100, max_files=3)
    for i in range(5):
        store.put("output", "", f"f{i}.png", b"x" * 10)
    assert store.get("output", "", "f0.png") is None and store.get("output", "", "f4.png") == b"x" * 10
    store.put("output", "", "big.png", b"y" * 200)  # alone beyond the bound: kept, everything older evicted
    assert store.get("output", "", "f4.png") is None and store.get("output", "", "big.png")
    assert store.next_name("output", "", "ComfyUI") == "ComfyUI_00001_.png"
    assert store.next_name("output", "", "ComfyUI") == "ComfyUI_00002_.png"
    assert store.next_name("output", "sub", "ComfyUI") == "ComfyUI_00001_.png"
    store.put("input", "sub", "a.png", png())
    assert store.input_names() == ["sub/a.png"]
    assert store.load_input("sub/a.png") == png()
    assert store.load_input("a.png [output]") is None
    assert store.load_input(base64.b64encode(png()).decode()) == png()
    assert inline_bytes(base64.b64encode(b"not an image at all, just bytes").decode()) is None
    assert inline_bytes("data:text/plain,hello") is None
