"""ComfyUI nodes beyond the basic graph, the node cache and ``/free``, driven through one real
server process (tiny SD; a second one with tiny SDXL) with a real ComfyUI client library,
``comfy_api_simplified`` (HTTP + websocket, as its users run it against ComfyUI)."""

from __future__ import annotations

import copy
import io
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from comfy_api_simplified import ComfyApiError, ComfyApiWrapper
from PIL import Image

from tests.fixtures.runtime import start_sd_runtime
from tests.integration.test_comfyui_api import default_workflow, png_bytes

pytestmark = pytest.mark.slow

SAVE = "Save Image"


@pytest.fixture(scope="module")
def api(sd_runtime_url: str) -> ComfyApiWrapper:
    return ComfyApiWrapper(sd_runtime_url)


@pytest.fixture(scope="module")
def client(sd_runtime_url: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=sd_runtime_url, timeout=60) as c:
        yield c


def workflow(**kw: Any) -> dict[str, Any]:
    """The default graph, its SaveImage titled for the client library."""
    wf = default_workflow(**kw)
    wf["9"]["_meta"] = {"title": SAVE}
    return wf


def render(api: ComfyApiWrapper, wf: dict[str, Any]) -> list[np.ndarray]:
    """The images the client library gets back for ``wf``, as arrays, in saved order."""
    titled = {nid: {"_meta": {"title": f"#{nid}"}, **node} for nid, node in copy.deepcopy(wf).items()}
    images = api.queue_and_wait_images(titled, SAVE)
    return [np.asarray(Image.open(io.BytesIO(data))) for _, data in sorted(images.items())]


def cached_nodes(api: ComfyApiWrapper, wf: dict[str, Any]) -> tuple[list[str], float]:
    """Run ``wf``; the nodes it listed in ``execution_cached`` and the wall time to its result."""
    t0 = time.monotonic()
    pid = api.queue_prompt(copy.deepcopy(wf))["prompt_id"]
    while not (entry := api.get_history(pid).get(pid)):
        time.sleep(0.02)
    elapsed = time.monotonic() - t0
    assert entry["status"]["status_str"] == "success", entry["status"]
    (nodes,) = [data["nodes"] for event, data in entry["status"]["messages"] if event == "execution_cached"]
    return nodes, elapsed


def rgba_png(alpha: int, size: int = 64, color: tuple[int, int, int] = (200, 40, 40)) -> bytes:
    """An image whose LoadImage MASK is ``1 - alpha/255`` everywhere (ComfyUI's convention)."""
    buf = io.BytesIO()
    Image.new("RGBA", (size, size), (*color, alpha)).save(buf, format="PNG")
    return buf.getvalue()


def upload(client: httpx.Client, name: str, data: bytes) -> str:
    resp = client.post("/upload/image", files={"image": (name, data, "image/png")}, data={"overwrite": "true"})
    assert resp.status_code == 200, resp.text
    return resp.json()["name"]


# ---- request bodies as ComfyUI reads them ---------------------------------------------


def test_json_bodies_without_a_json_content_type_unless_cross_site(client):
    """ComfyUI clients send none or form-urlencoded (urllib); a browser's cross-site simple request is refused."""
    body = json.dumps({"prompt": workflow(seed=2)}).encode()
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    assert client.post("/prompt", content=body, headers=form).status_code == 200
    same_site = {"Content-Type": "text/plain", "Origin": str(client.base_url).rstrip("/")}
    assert client.post("/api/prompt", content=body, headers=same_site).status_code == 200
    cross_site = {"Content-Type": "text/plain", "Origin": "https://evil.example"}
    resp = client.post("/prompt", content=body, headers=cross_site)
    assert resp.status_code == 403 and resp.json()["error"]["type"] == "forbidden"
    assert client.post("/free", content=b'{"free_memory": true}', headers=cross_site).status_code == 403


# ---- node cache and /free -------------------------------------------------------------


def idle(client: httpx.Client) -> None:
    """Wait until no prompt is pending or running (one still running would fill the cache after a /free)."""
    while client.get("/prompt").json()["exec_info"]["queue_remaining"]:
        time.sleep(0.02)


def test_second_run_reuses_cached_nodes_and_free_drops_them(api, client):
    idle(client)
    assert client.post("/free", json={"unload_models": True, "free_memory": True}).status_code == 200
    wf = workflow(seed=11, steps=12, size=128)
    first, t_first = cached_nodes(api, wf)
    again, t_again = cached_nodes(api, wf)
    assert first == []
    assert sorted(again) == ["3", "4", "5", "6", "7", "8"]  # everything but SaveImage, which saves anew
    reseeded, _ = cached_nodes(api, {**wf, "3": {**wf["3"], "inputs": {**wf["3"]["inputs"], "seed": 12}}})
    assert sorted(reseeded) == ["4", "5", "6", "7"]  # the checkpoint, encodings and latent are reused
    print(f"\ncache: first run {t_first:.2f}s, identical second run {t_again:.2f}s")
    assert t_again < t_first

    images = [render(api, wf)[0] for _ in range(2)]
    assert np.array_equal(images[0], images[1])  # the cached result is the same image

    idle(client)
    assert client.post("/free", json={"free_memory": True}).status_code == 200
    assert cached_nodes(api, wf)[0] == []


@pytest.mark.parametrize(
    ("body", "field"), [({"unload_models": "perhaps"}, "unload_models"), ({"gpu_only": True}, "gpu_only")]
)
def test_free_refuses_a_bad_body_naming_the_field(client, body, field):
    resp = client.post("/free", json=body)
    assert resp.status_code == 400 and field in resp.json()["error"]["message"]


def test_cache_is_dropped_when_the_engine_switches_models(api, client):
    wf = workflow(seed=21)
    cached_nodes(api, wf)
    assert cached_nodes(api, wf)[0] != []
    for model in ("tiny-sd.safetensors", "tiny-sd"):  # A1111 switches to the single file, then back
        resp = client.post("/sdapi/v1/options", json={"sd_model_checkpoint": model})
        assert resp.status_code == 200, resp.text
        assert cached_nodes(api, wf)[0] == []  # nothing from before the switch is reused
        assert cached_nodes(api, wf)[0] != []


def test_reuploaded_image_is_not_served_from_the_cache(api, client):
    name = upload(client, "cache-probe.png", png_bytes("red"))
    wf = workflow(seed=5)
    del wf["5"]
    wf["10"] = {"class_type": "LoadImage", "inputs": {"image": name}}
    wf["11"] = {"class_type": "VAEEncode", "inputs": {"pixels": ["10", 0], "vae": ["4", 2]}}
    wf["3"]["inputs"].update(latent_image=["11", 0], denoise=0.5)
    red = render(api, wf)[0]
    assert "10" in cached_nodes(api, wf)[0]
    upload(client, name, png_bytes("blue"))
    nodes, _ = cached_nodes(api, wf)
    assert "10" not in nodes and "11" not in nodes
    assert not np.array_equal(render(api, wf)[0], red)


# ---- latent and inpaint nodes --------------------------------------------------------


def test_repeat_latent_batch(api, client):
    wf = workflow(seed=3)
    wf["20"] = {"class_type": "RepeatLatentBatch", "inputs": {"samples": ["5", 0], "amount": 3}}
    wf["3"]["inputs"]["latent_image"] = ["20", 0]
    images = render(api, wf)
    assert len(images) == 3 and all(i.shape == (64, 64, 3) for i in images)
    assert not np.array_equal(images[0], images[1])  # one noise batch: three different images

    wf["20"]["inputs"]["amount"] = 65
    with pytest.raises(ComfyApiError, match="400"):
        api.queue_prompt(wf)
    resp = client.post("/prompt", json={"prompt": wf})
    assert resp.json()["node_errors"]["20"]["errors"][0]["type"] == "value_bigger_than_max"


def masked_workflow(image: str, encoder: str = "SetLatentNoiseMask", denoise: float = 1.0) -> dict[str, Any]:
    """LoadImage → (VAEEncode → SetLatentNoiseMask | VAEEncodeForInpaint) with the image's alpha mask → KSampler."""
    wf = workflow(seed=9)
    del wf["5"]
    wf["10"] = {"class_type": "LoadImage", "inputs": {"image": image}}
    if encoder == "SetLatentNoiseMask":
        wf["11"] = {"class_type": "VAEEncode", "inputs": {"pixels": ["10", 0], "vae": ["4", 2]}}
        wf["12"] = {"class_type": "SetLatentNoiseMask", "inputs": {"samples": ["11", 0], "mask": ["10", 1]}}
    else:
        wf["12"] = {
            "class_type": "VAEEncodeForInpaint",
            "inputs": {"pixels": ["10", 0], "vae": ["4", 2], "mask": ["10", 1], "grow_mask_by": 6},
        }
    wf["3"]["inputs"].update(latent_image=["12", 0], denoise=denoise)
    return wf


def roundtrip_workflow(image: str) -> dict[str, Any]:
    """LoadImage → VAEEncode → VAEDecode: what an unrepainted image decodes to."""
    wf = workflow()
    for node in ("3", "5", "6", "7"):
        del wf[node]
    wf["10"] = {"class_type": "LoadImage", "inputs": {"image": image}}
    wf["11"] = {"class_type": "VAEEncode", "inputs": {"pixels": ["10", 0], "vae": ["4", 2]}}
    wf["8"]["inputs"]["samples"] = ["11", 0]
    return wf


def test_set_latent_noise_mask_repaints_only_the_masked_part(api, client):
    keep_all = upload(client, "opaque.png", rgba_png(255))  # mask 0: nothing to repaint
    repaint_all = upload(client, "clear.png", rgba_png(0))  # mask 1: everything
    half = Image.new("RGBA", (64, 64), (200, 40, 40, 255))
    half.paste((200, 40, 40, 0), (0, 0, 32, 64))  # the left half is transparent: repaint it
    buf = io.BytesIO()
    half.save(buf, format="PNG")
    repaint_left = upload(client, "half.png", buf.getvalue())

    untouched = render(api, roundtrip_workflow(keep_all))[0]
    assert np.array_equal(render(api, masked_workflow(keep_all))[0], untouched)  # blended back exactly

    unmasked = workflow(seed=9)
    del unmasked["5"]
    unmasked["10"] = {"class_type": "LoadImage", "inputs": {"image": repaint_all}}
    unmasked["11"] = {"class_type": "VAEEncode", "inputs": {"pixels": ["10", 0], "vae": ["4", 2]}}
    unmasked["3"]["inputs"]["latent_image"] = ["11", 0]
    assert np.array_equal(render(api, masked_workflow(repaint_all))[0], render(api, unmasked)[0])

    partial = render(api, masked_workflow(repaint_left))[0].astype(int)
    plain = render(api, roundtrip_workflow(repaint_left))[0].astype(int)
    left, right = np.abs(partial - plain)[:, :32].mean(), np.abs(partial - plain)[:, 32:].mean()
    assert left > right  # the transparent half changed more than the kept half


def test_vae_encode_for_inpaint(api, client):
    name = upload(client, "inpaint.png", rgba_png(0))
    img = render(api, masked_workflow(name, encoder="VAEEncodeForInpaint"))[0]
    assert img.shape == (64, 64, 3)
    other = render(api, masked_workflow(name))[0]
    assert not np.array_equal(img, other)  # the masked pixels were greyed before encoding


# ---- KSamplerAdvanced ------------------------------------------------------------------


def advanced(wf: dict[str, Any], node: str, latent: list, add_noise: str, start: int, end: int, leftover: str):
    """A KSamplerAdvanced with KSampler ``3``'s model, conditioning and settings."""
    base = wf["3"]["inputs"]
    wf[node] = {
        "class_type": "KSamplerAdvanced",
        "inputs": {
            "model": base["model"],
            "add_noise": add_noise,
            "noise_seed": base["seed"],
            "steps": base["steps"],
            "cfg": base["cfg"],
            "sampler_name": base["sampler_name"],
            "scheduler": base["scheduler"],
            "positive": base["positive"],
            "negative": base["negative"],
            "latent_image": latent,
            "start_at_step": start,
            "end_at_step": end,
            "return_with_leftover_noise": leftover,
        },
    }
    return wf


def test_ksampler_advanced_full_range_is_ksampler(api):
    wf = workflow(seed=31, steps=4)
    plain = render(api, wf)[0]
    adv = advanced(copy.deepcopy(wf), "20", ["5", 0], "enable", 0, 10000, "disable")
    adv["8"]["inputs"]["samples"] = ["20", 0]
    del adv["3"]
    assert np.array_equal(render(api, adv)[0], plain)


def test_ksampler_advanced_two_stages_continue_one_schedule(api):
    """Steps 0-2 with leftover noise, then 2-4 without adding noise: the same image as 4 steps at once (euler)."""
    wf = workflow(seed=32, steps=4)
    whole = render(api, wf)[0]
    staged = advanced(copy.deepcopy(wf), "20", ["5", 0], "enable", 0, 2, "enable")
    staged = advanced(staged, "21", ["20", 0], "disable", 2, 10000, "disable")
    staged["8"]["inputs"]["samples"] = ["21", 0]
    del staged["3"]
    assert np.array_equal(render(api, staged)[0], whole)

    first_half = advanced(copy.deepcopy(wf), "20", ["5", 0], "enable", 0, 2, "enable")
    first_half["8"]["inputs"]["samples"] = ["20", 0]
    del first_half["3"]
    assert not np.array_equal(render(api, first_half)[0], whole)  # still noisy after 2 of 4 steps


def test_ksampler_advanced_refuses_a_forced_early_end(client):
    wf = advanced(workflow(steps=4), "20", ["5", 0], "enable", 0, 2, "disable")
    wf["8"]["inputs"]["samples"] = ["20", 0]
    del wf["3"]
    resp = client.post("/prompt", json={"prompt": wf})
    assert resp.status_code == 400
    (error,) = resp.json()["node_errors"]["20"]["errors"]
    assert error["type"] == "custom_validation_failed"
    assert error["extra_info"]["input_name"] == "return_with_leftover_noise" and "not implemented" in error["message"]


# ---- conditioning and VAE nodes -------------------------------------------------------


def test_conditioning_zero_out_changes_the_negative(api):
    plain = render(api, workflow(seed=41))[0]
    wf = workflow(seed=41)
    wf["20"] = {"class_type": "ConditioningZeroOut", "inputs": {"conditioning": ["7", 0]}}
    wf["3"]["inputs"]["negative"] = ["20", 0]
    assert not np.array_equal(render(api, wf)[0], plain)


def test_vae_loader_decodes_with_the_named_file(api, client):
    info = api.get_object_info("VAELoader")["VAELoader"]
    assert info["input"]["required"]["vae_name"][0] == ["tiny-vae.safetensors"]
    plain = render(api, workflow(seed=51))[0]
    wf = workflow(seed=51)
    wf["20"] = {"class_type": "VAELoader", "inputs": {"vae_name": "tiny-vae.safetensors"}}
    wf["8"]["inputs"]["vae"] = ["20", 0]
    own_file = render(api, wf)[0]
    assert not np.array_equal(own_file, plain)
    wf["20"]["inputs"]["vae_name"] = "tiny-vae"  # the stem, as A1111 names it
    assert np.array_equal(render(api, wf)[0], own_file)

    wf["20"]["inputs"]["vae_name"] = "../tiny-sd.safetensors"
    resp = client.post("/prompt", json={"prompt": wf})
    assert resp.status_code == 400
    assert resp.json()["node_errors"]["20"]["errors"][0]["type"] == "value_not_in_list"


def with_positive(wf: dict[str, Any], extra: dict[str, dict[str, Any]], positive: list) -> dict[str, Any]:
    """``wf`` with more nodes and KSampler ``3``'s positive conditioning taken from ``positive``."""
    wf = {**copy.deepcopy(wf), **copy.deepcopy(extra)}
    wf["3"]["inputs"]["positive"] = positive
    return wf


OTHER = {"class_type": "CLIPTextEncode", "inputs": {"text": "a red bicycle in the snow", "clip": ["4", 1]}}


def area(cond: list, x: int, width: int, strength: float = 1.0) -> dict[str, Any]:
    inputs = {"conditioning": cond, "width": width, "height": 64, "x": x, "y": 0, "strength": strength}
    return {"class_type": "ConditioningSetArea", "inputs": inputs}


def combine(a: list, b: list) -> dict[str, Any]:
    return {"class_type": "ConditioningCombine", "inputs": {"conditioning_1": a, "conditioning_2": b}}


def test_conditioning_combine_and_set_area(api):
    wf = workflow(seed=81, size=128)
    plain = render(api, wf)[0].astype(int)
    other = render(api, with_positive(wf, {"20": OTHER}, ["20", 0]))[0].astype(int)
    twice = render(api, with_positive(wf, {"30": combine(["6", 0], ["6", 0])}, ["30", 0]))[0].astype(int)
    assert np.abs(twice - plain).max() <= 2  # one prompt twice: its own prediction, per entry

    both = render(api, with_positive(wf, {"20": OTHER, "30": combine(["6", 0], ["20", 0])}, ["30", 0]))[0]
    assert not np.array_equal(both, plain) and not np.array_equal(both, other)

    # an entry of strength 0 weighs nothing: the same image as the prompt alone, through the same path
    muted = {"20": OTHER, "21": area(["20", 0], 64, 64, strength=0.0), "30": combine(["6", 0], ["21", 0])}
    assert np.array_equal(render(api, with_positive(wf, muted, ["30", 0]))[0], twice)

    right = {"20": OTHER, "21": area(["20", 0], 64, 64, strength=3.0), "30": combine(["6", 0], ["21", 0])}
    regional = render(api, with_positive(wf, right, ["30", 0]))[0].astype(int)
    changed = np.abs(regional - twice)
    assert changed[:, 64:].mean() > changed[:, :32].mean()  # the other prompt acts on its area


def test_uncovered_area_fails_the_sampler_naming_it(api):
    wf = with_positive(workflow(seed=82, size=128), {"21": area(["6", 0], 64, 64)}, ["21", 0])
    pid = api.queue_prompt(wf)["prompt_id"]
    while not (entry := api.get_history(pid).get(pid)):
        time.sleep(0.05)
    event, data = entry["status"]["messages"][-1]
    assert event == "execution_error" and data["node_type"] == "KSampler"
    assert "without any entry" in data["exception_message"]


# ---- /object_info against ComfyUI's own node definitions ------------------------------

COMFY_SHAPES: dict[str, dict[str, Any]] = {
    "VAELoader": {"required": ["vae_name"], "output": ["VAE"], "category": "loaders"},
    "RepeatLatentBatch": {
        "required": {"samples": ["LATENT"], "amount": ["INT", {"default": 1, "min": 1, "max": 64}]},
        "output": ["LATENT"],
        "category": "latent/batch",
    },
    "ConditioningZeroOut": {
        "required": {"conditioning": ["CONDITIONING"]},
        "output": ["CONDITIONING"],
        "category": "advanced/conditioning",
    },
    "SetLatentNoiseMask": {
        "required": {"samples": ["LATENT"], "mask": ["MASK"]},
        "output": ["LATENT"],
        "category": "latent/inpaint",
    },
    "VAEEncodeForInpaint": {
        "required": {
            "pixels": ["IMAGE"],
            "vae": ["VAE"],
            "mask": ["MASK"],
            "grow_mask_by": ["INT", {"default": 6, "min": 0, "max": 64, "step": 1}],
        },
        "output": ["LATENT"],
        "category": "latent/inpaint",
    },
    "ConditioningCombine": {
        "required": {"conditioning_1": ["CONDITIONING"], "conditioning_2": ["CONDITIONING"]},
        "output": ["CONDITIONING"],
        "category": "conditioning",
    },
    "ConditioningSetArea": {
        "required": {
            "conditioning": ["CONDITIONING"],
            "width": ["INT", {"default": 64, "min": 64, "max": 16384, "step": 8}],
            "height": ["INT", {"default": 64, "min": 64, "max": 16384, "step": 8}],
            "x": ["INT", {"default": 0, "min": 0, "max": 16384, "step": 8}],
            "y": ["INT", {"default": 0, "min": 0, "max": 16384, "step": 8}],
            "strength": ["FLOAT", {"default": 1.0, "min": 0.0, "max": 10.0, "step": 0.01}],
        },
        "output": ["CONDITIONING"],
        "category": "conditioning",
    },
    "KSamplerAdvanced": {
        "required": [
            *("model", "add_noise", "noise_seed", "steps", "cfg", "sampler_name", "scheduler", "positive"),
            *("negative", "latent_image", "start_at_step", "end_at_step", "return_with_leftover_noise"),
        ],
        "output": ["LATENT"],
        "category": "sampling",
    },
    "CLIPTextEncodeSDXL": {
        "required": [
            *("clip", "width", "height", "crop_w", "crop_h", "target_width", "target_height", "text_g", "text_l")
        ],
        "output": ["CONDITIONING"],
        "category": "advanced/conditioning",
    },
}


def test_object_info_has_comfyuis_shapes(api):
    info = api.get_object_info()
    for name, shape in COMFY_SHAPES.items():
        node = info[name]
        required = node["input"]["required"]
        if isinstance(shape["required"], dict):
            assert required == shape["required"], name
        else:
            assert list(required) == shape["required"] == node["input_order"]["required"], name
        assert node["output"] == shape["output"] and node["category"] == shape["category"], name
    adv = info["KSamplerAdvanced"]["input"]["required"]
    assert adv["add_noise"] == [["enable", "disable"]]
    assert adv["return_with_leftover_noise"] == [["disable", "enable"]]
    assert adv["start_at_step"] == ["INT", {"default": 0, "min": 0, "max": 10000}]
    assert adv["end_at_step"] == ["INT", {"default": 10000, "min": 0, "max": 10000}]
    sdxl = info["CLIPTextEncodeSDXL"]["input"]["required"]
    assert sdxl["width"] == ["INT", {"default": 1024, "min": 0, "max": 16384}]
    assert sdxl["text_g"] == ["STRING", {"multiline": True, "dynamicPrompts": True}]


# ---- SDXL ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sdxl_api(tiny_sdxl_dir: Path) -> Iterator[ComfyApiWrapper]:
    with start_sd_runtime("tiny-sdxl", models_dir=tiny_sdxl_dir) as url:
        yield ComfyApiWrapper(url)


def sdxl_workflow(seed: int = 61, **sizes: int) -> dict[str, Any]:
    """The default graph on tiny SDXL, the positive prompt through CLIPTextEncodeSDXL."""
    wf = workflow(seed=seed)
    wf["4"]["inputs"]["ckpt_name"] = "tiny-sdxl"
    text = wf["6"]["inputs"]["text"]
    dims = {"width": 64, "height": 64, "crop_w": 0, "crop_h": 0, "target_width": 64, "target_height": 64}
    wf["6"] = {
        "class_type": "CLIPTextEncodeSDXL",
        "inputs": {**dims, **sizes, "text_g": text, "text_l": text, "clip": ["4", 1]},
    }
    return wf


def test_clip_text_encode_sdxl(sdxl_api):
    plain = workflow(seed=61)
    plain["4"]["inputs"]["ckpt_name"] = "tiny-sdxl"
    # same text to both encoders and the latent's own sizes: exactly what CLIPTextEncode gives
    same = render(sdxl_api, sdxl_workflow())[0]
    assert np.array_equal(same, render(sdxl_api, plain)[0])
    assert not np.array_equal(render(sdxl_api, sdxl_workflow(width=1024, height=1024))[0], same)
    assert not np.array_equal(render(sdxl_api, sdxl_workflow(crop_w=32))[0], same)
    swapped = sdxl_workflow()
    swapped["6"]["inputs"]["text_l"] = "a red bicycle"
    assert not np.array_equal(render(sdxl_api, swapped)[0], same)

    zeroed = sdxl_workflow()
    zeroed["20"] = {"class_type": "ConditioningZeroOut", "inputs": {"conditioning": ["7", 0]}}
    zeroed["3"]["inputs"]["negative"] = ["20", 0]
    assert not np.array_equal(render(sdxl_api, zeroed)[0], same)


def test_clip_text_encode_sdxl_on_sd15_fails_naming_the_node(api):
    wf = sdxl_workflow()
    wf["4"]["inputs"]["ckpt_name"] = "tiny-sd"
    pid = api.queue_prompt(wf)["prompt_id"]
    while not (entry := api.get_history(pid).get(pid)):
        time.sleep(0.05)
    event, data = entry["status"]["messages"][-1]
    assert event == "execution_error" and data["node_type"] == "CLIPTextEncodeSDXL"
    assert "SDXL checkpoint" in data["exception_message"]


def test_sdxl_two_stage_sampling_and_masked_sampling(sdxl_api):
    wf = sdxl_workflow(seed=71)
    wf["3"]["inputs"]["steps"] = 4
    whole = render(sdxl_api, wf)[0]
    staged = advanced(copy.deepcopy(wf), "20", ["5", 0], "enable", 0, 2, "enable")
    staged = advanced(staged, "21", ["20", 0], "disable", 2, 10000, "disable")
    staged["8"]["inputs"]["samples"] = ["21", 0]
    del staged["3"]
    assert np.array_equal(render(sdxl_api, staged)[0], whole)  # the refiner-style split of one schedule

    with httpx.Client(base_url=sdxl_api.url, timeout=60) as c:
        opaque = upload(c, "opaque.png", rgba_png(255))
    keep = masked_workflow(opaque)
    roundtrip = roundtrip_workflow(opaque)
    for graph in (keep, roundtrip):
        graph["4"]["inputs"]["ckpt_name"] = "tiny-sdxl"
    assert np.array_equal(render(sdxl_api, keep)[0], render(sdxl_api, roundtrip)[0])


def test_sdxl_conditioning_combine(sdxl_api):
    wf = sdxl_workflow(seed=91)
    plain = render(sdxl_api, wf)[0].astype(int)
    twice = with_positive(wf, {"30": combine(["6", 0], ["6", 0])}, ["30", 0])
    assert np.abs(render(sdxl_api, twice)[0].astype(int) - plain).max() <= 2
    mixed = with_positive(wf, {"20": OTHER, "30": combine(["6", 0], ["20", 0])}, ["30", 0])
    assert not np.array_equal(render(sdxl_api, mixed)[0], plain)
