"""SDXL through a real sd_runtime: the tiny random-weight SDXL in both layouts, A1111 and ComfyUI dialects."""

from __future__ import annotations

import base64
import io
import json
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from PIL import Image

from tests.fixtures.runtime import start_sd_runtime
from tests.integration.test_comfyui_api import default_workflow

pytestmark = pytest.mark.slow

BASE = {"prompt": "a lighthouse", "steps": 3, "width": 64, "height": 64, "seed": 11}


@pytest.fixture(scope="module")
def sdxl_url(tiny_sdxl_dir: Path) -> Iterator[str]:
    with start_sd_runtime("tiny-sdxl", models_dir=tiny_sdxl_dir) as url:
        yield url


def txt2img(url: str, **fields: object) -> tuple[Image.Image, dict]:
    r = httpx.post(f"{url}/sdapi/v1/txt2img", json={**BASE, **fields}, timeout=120)
    assert r.status_code == 200, r.text
    body = r.json()
    return Image.open(io.BytesIO(base64.b64decode(body["images"][0]))), json.loads(body["info"])


def test_sdxl_txt2img_is_deterministic_and_follows_the_prompt(sdxl_url: str) -> None:
    assert httpx.get(f"{sdxl_url}/healthz").json()["model"] == "tiny-sdxl"
    img, info = txt2img(sdxl_url, width=96)
    assert img.size == (96, 64) and info["sd_model_name"] == "tiny-sdxl" and info["ignored_fields"] == []
    again, _ = txt2img(sdxl_url, width=96)
    other, _ = txt2img(sdxl_url, width=96, prompt="a red fox")
    assert img.tobytes() == again.tobytes() and img.tobytes() != other.tobytes()
    # both text encoders feed the image: the negative prompt and a second sampler change it too
    assert txt2img(sdxl_url, width=96, negative_prompt="blurry")[0].tobytes() != img.tobytes()
    assert txt2img(sdxl_url, width=96, sampler_name="DPM++ 2M", scheduler="karras")[0].tobytes() != img.tobytes()


def test_sdxl_single_file_is_detected_from_its_tensors(sdxl_url: str) -> None:
    titles = [m["title"] for m in httpx.get(f"{sdxl_url}/sdapi/v1/sd-models").json()]
    assert titles == ["tiny-sdxl", "tiny-sdxl.safetensors"]
    diffusers_layout, _ = txt2img(sdxl_url)
    opts = f"{sdxl_url}/sdapi/v1/options"
    try:
        assert httpx.post(opts, json={"sd_model_checkpoint": "tiny-sdxl.safetensors"}, timeout=120).is_success
        single, info = txt2img(sdxl_url)
        assert info["sd_model_name"] == "tiny-sdxl.safetensors"
        assert single.tobytes() == diffusers_layout.tobytes()  # same weights, same pixels
    finally:
        assert httpx.post(opts, json={"sd_model_checkpoint": "tiny-sdxl"}, timeout=120).is_success


def test_sdxl_img2img(sdxl_url: str) -> None:
    buf = io.BytesIO()
    Image.new("RGB", (64, 64), (200, 30, 30)).save(buf, format="PNG")
    body = {**BASE, "init_images": [base64.b64encode(buf.getvalue()).decode()], "denoising_strength": 0.5}
    r = httpx.post(f"{sdxl_url}/sdapi/v1/img2img", json=body, timeout=120)
    assert r.status_code == 200, r.text
    assert Image.open(io.BytesIO(base64.b64decode(r.json()["images"][0]))).size == (64, 64)


def run_workflow(url: str, wf: dict) -> dict:
    resp = httpx.post(f"{url}/prompt", json={"prompt": wf}, timeout=30)
    assert resp.status_code == 200, resp.text
    pid = resp.json()["prompt_id"]
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        entry = httpx.get(f"{url}/history/{pid}", timeout=10).json().get(pid)
        if entry:
            return entry
        time.sleep(0.1)
    raise AssertionError("workflow did not finish")


def test_comfyui_checkpoint_loader_and_clip_text_encode_with_sdxl(sdxl_url: str) -> None:
    def render(ckpt: str, text: str) -> bytes:
        wf = default_workflow(seed=3)
        wf["4"]["inputs"]["ckpt_name"] = ckpt
        wf["6"]["inputs"]["text"] = text
        entry = run_workflow(sdxl_url, wf)
        assert entry["status"]["status_str"] == "success", entry["status"]
        (ref,) = entry["outputs"]["9"]["images"]
        img = Image.open(io.BytesIO(httpx.get(f"{sdxl_url}/view", params=ref, timeout=10).content))
        assert img.size == (64, 64)
        return img.tobytes()

    first = render("tiny-sdxl", "a lighthouse")
    assert render("tiny-sdxl", "a lighthouse") == first
    assert render("tiny-sdxl", "a red fox") != first  # the text reaches the UNet (embeds and pooled)
    assert render("tiny-sdxl.safetensors", "a lighthouse") == first
    # ComfyUI's (word:weight) and long prompts go through the same encoder
    weighted = render("tiny-sdxl", "a (lighthouse:1.3)")
    assert weighted != first and render("tiny-sdxl", "a (lighthouse:1.0)") == first
    long = "a lighthouse on a cliff, " * 6
    assert render("tiny-sdxl", long + "red sky") != render("tiny-sdxl", long + "blue sea")


def test_sdxl_attention_weights_and_long_prompts_on_both_encoders(sdxl_url: str, tiny_sdxl_dir: Path) -> None:
    from transformers import CLIPTokenizer

    def render(prompt: str) -> bytes:
        img, info = txt2img(sdxl_url, prompt=prompt)
        assert info["ignored_fields"] == []
        return img.tobytes()

    plain = render("a lighthouse, fog")
    assert render("a (lighthouse:1.3), fog") != plain
    assert render("a (lighthouse:1.0), fog") == plain
    assert render("a [lighthouse], fog") != plain
    long = "a lighthouse on a cliff, " * 6
    for sub in ("tokenizer", "tokenizer_2"):
        assert len(CLIPTokenizer.from_pretrained(tiny_sdxl_dir / "tiny-sdxl" / sub)(long).input_ids) > 77
    assert render(long + "red sky") != render(long + "blue sea")  # the second chunk reaches the UNet


def test_sdxl_embeddings_load_both_encoders_and_skip_sd1_files(sdxl_url: str, tiny_sdxl_dir: Path) -> None:
    listed = httpx.get(f"{sdxl_url}/sdapi/v1/embeddings").json()
    unset = {"step": None, "sd_checkpoint": None, "sd_checkpoint_name": None}
    assert listed["loaded"] == {"tiny-embed-xl": {**unset, "shape": 96, "vectors": 2}}  # clip_l 32 + clip_g 64
    assert set(listed["skipped"]) == {"tiny-embed", "tiny-embed-diffusers"}  # SD 1.x embeddings: one encoder only
    named, info = txt2img(sdxl_url, prompt="a lighthouse tiny-embed-xl")
    assert info["ignored_fields"] == []
    file = tiny_sdxl_dir / "embeddings" / "tiny-embed-xl.safetensors"
    aside = file.with_name(".aside")
    file.rename(aside)
    try:  # without the file the name is text: a different image
        assert httpx.post(f"{sdxl_url}/sdapi/v1/refresh-embeddings", timeout=60).is_success
        assert httpx.get(f"{sdxl_url}/sdapi/v1/embeddings").json()["loaded"] == {}
        assert txt2img(sdxl_url, prompt="a lighthouse tiny-embed-xl")[0].tobytes() != named.tobytes()
    finally:
        aside.rename(file)
        assert httpx.post(f"{sdxl_url}/sdapi/v1/refresh-embeddings", timeout=60).is_success
    assert txt2img(sdxl_url, prompt="a lighthouse tiny-embed-xl")[0].tobytes() == named.tobytes()
