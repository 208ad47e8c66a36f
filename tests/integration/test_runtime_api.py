"""img2img, extras, models/options, errors, concurrency and interrupt through a real sd_runtime."""

from __future__ import annotations

import base64
import io
import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from PIL import Image

from sdeks.contract import SAMPLERS, SCHEDULE_TYPES, Txt2ImgContent

pytestmark = pytest.mark.slow

BASE = {"prompt": "a lighthouse", "steps": 3, "width": 64, "height": 64, "seed": 7}


def png_b64(size: tuple[int, int] = (64, 64), color: tuple[int, int, int] = (200, 40, 40)) -> str:
    img = Image.new("RGB", size, color)
    for x in range(size[0] // 2):  # some structure so resampling is not trivial
        img.putpixel((x, x % size[1]), (0, 0, 255))
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


def decode(b64: str) -> Image.Image:
    return Image.open(io.BytesIO(base64.b64decode(b64)))


def post(url: str, path: str, body: object, timeout: float = 120) -> httpx.Response:
    return httpx.post(f"{url}{path}", json=body, timeout=timeout)


def assert_4xx(r: httpx.Response, status: int, code: str | None = None) -> dict:
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body["error"]) == {"code", "message", "details"} and body["error"]["message"]
    assert "detail" in body
    if code:
        assert body["error"]["code"] == code
    return body


# ---- img2img ---------------------------------------------------------------


def test_img2img_resizes_to_requested_size_and_is_deterministic(sd_runtime_url: str) -> None:
    body = {**BASE, "init_images": [png_b64((80, 48))], "denoising_strength": 0.5, "width": 64, "height": 96}
    a = post(sd_runtime_url, "/sdapi/v1/img2img", body)
    assert a.status_code == 200, a.text
    b = post(sd_runtime_url, "/sdapi/v1/img2img", body).json()
    out = decode(a.json()["images"][0])
    assert out.size == (64, 96)
    assert out.tobytes() == decode(b["images"][0]).tobytes()
    info = json.loads(a.json()["info"])
    assert info["denoising_strength"] == 0.5 and info["seed"] == 7
    assert a.json()["parameters"]["init_images"] is None  # A1111 does not echo the input images


def test_img2img_with_mask_and_batch(sd_runtime_url: str) -> None:
    mask = Image.new("L", (64, 64), 0)
    mask.paste(255, (16, 16, 48, 48))
    buf = io.BytesIO()
    mask.save(buf, format="PNG")
    body = {
        **BASE,
        "init_images": ["data:image/png;base64," + png_b64()],
        "mask": base64.b64encode(buf.getvalue()).decode(),
        "batch_size": 2,
        "denoising_strength": 0.0,  # clamped to one step, never an error
    }
    r = post(sd_runtime_url, "/sdapi/v1/img2img", body)
    assert r.status_code == 200, r.text
    assert [decode(i).size for i in r.json()["images"]] == [(64, 64), (64, 64)]
    assert json.loads(r.json()["info"])["all_seeds"] == [7, 8]


def test_img2img_url_is_refused_with_clear_message(sd_runtime_url: str) -> None:
    r = post(sd_runtime_url, "/sdapi/v1/img2img", {**BASE, "init_images": ["s3://bucket/key.png"]})
    body = assert_4xx(r, 422, "invalid_image")
    assert "queue agent" in body["error"]["message"] and "init_images[0]" in body["error"]["message"]
    r = post(sd_runtime_url, "/sdapi/v1/img2img", {**BASE, "alwayson_scripts": {"image_link": "https://x.org/a.png"}})
    assert "base64" in assert_4xx(r, 422)["error"]["message"]


# ---- extras ------------------------------------------------------------------


def test_extra_single_image_by_factor_and_to_size(sd_runtime_url: str) -> None:
    r = post(sd_runtime_url, "/sdapi/v1/extra-single-image", {"image": png_b64((40, 30)), "upscaling_resize": 2})
    assert r.status_code == 200, r.text
    assert decode(r.json()["image"]).size == (80, 60)
    body = {
        "image": png_b64((40, 30)),
        "resize_mode": 1,
        "upscaling_resize_w": 100,
        "upscaling_resize_h": 100,
        "upscaler_1": "Nearest",
    }
    r = post(sd_runtime_url, "/sdapi/v1/extra-single-image", body)
    assert decode(r.json()["image"]).size == (100, 100)


def test_extra_batch_images(sd_runtime_url: str) -> None:
    body = {
        "imageList": [{"data": png_b64((32, 32)), "name": "a"}, {"data": png_b64((16, 24)), "name": "b"}],
        "upscaling_resize": 3,
    }
    r = post(sd_runtime_url, "/sdapi/v1/extra-batch-images", body)
    assert r.status_code == 200, r.text
    assert [decode(i).size for i in r.json()["images"]] == [(96, 96), (48, 72)]


def test_upscaler_not_installed_lists_installed_upscalers(sd_runtime_url: str) -> None:
    body = {"image": png_b64(), "upscaler_1": "R-ESRGAN 4x+ Anime6B"}  # the tiny build has only R-ESRGAN 4x+
    body = assert_4xx(post(sd_runtime_url, "/sdapi/v1/extra-single-image", body), 400, "unknown_upscaler")
    assert "not installed" in body["error"]["message"]
    assert body["error"]["details"]["available"] == ["None", "Lanczos", "Nearest", "R-ESRGAN 4x+"]


# ---- listings, options, model switching -------------------------------------------


def test_listings(sd_runtime_url: str) -> None:
    samplers = httpx.get(f"{sd_runtime_url}/sdapi/v1/samplers").json()
    assert [s["name"] for s in samplers] == list(SAMPLERS)
    upscalers = httpx.get(f"{sd_runtime_url}/sdapi/v1/upscalers").json()
    assert [u["name"] for u in upscalers] == ["None", "Lanczos", "Nearest", "R-ESRGAN 4x+"]
    models = httpx.get(f"{sd_runtime_url}/sdapi/v1/sd-models").json()
    assert [m["title"] for m in models] == ["tiny-sd", "tiny-sd.safetensors"]
    progress = httpx.get(f"{sd_runtime_url}/sdapi/v1/progress").json()
    assert progress["progress"] == 0 and progress["state"]["job"] == ""


def test_switch_between_diffusers_dir_and_single_file(sd_runtime_url: str) -> None:
    opts = f"{sd_runtime_url}/sdapi/v1/options"
    assert httpx.get(opts).json()["sd_model_checkpoint"] == "tiny-sd"
    before = post(sd_runtime_url, "/sdapi/v1/txt2img", BASE).json()["images"][0]
    try:
        assert post(sd_runtime_url, "/sdapi/v1/options", {"sd_model_checkpoint": "tiny-sd.safetensors"}).is_success
        assert httpx.get(opts).json()["sd_model_checkpoint"] == "tiny-sd.safetensors"
        assert httpx.get(f"{sd_runtime_url}/healthz").json()["model"] == "tiny-sd.safetensors"
        single = post(sd_runtime_url, "/sdapi/v1/txt2img", BASE).json()
        assert json.loads(single["info"])["sd_model_name"] == "tiny-sd.safetensors"
        # same weights in both layouts → same pixels
        assert decode(single["images"][0]).tobytes() == decode(before).tobytes()
    finally:
        assert post(sd_runtime_url, "/sdapi/v1/options", {"sd_model_checkpoint": "tiny-sd [abc123]"}).is_success
    assert httpx.get(opts).json()["sd_model_checkpoint"] == "tiny-sd"


def test_unknown_model_lists_available_and_keeps_current(sd_runtime_url: str) -> None:
    r = post(sd_runtime_url, "/sdapi/v1/options", {"sd_model_checkpoint": "sd_xl_base_1.0.safetensors"})
    body = assert_4xx(r, 404, "unknown_model")
    assert body["error"]["details"]["available"] == ["tiny-sd", "tiny-sd.safetensors"]
    assert httpx.get(f"{sd_runtime_url}/healthz").json()["model"] == "tiny-sd"


# ---- A1111 field fidelity, driven by a real A1111 client ----------------------------


@pytest.fixture(scope="module")
def webui(sd_runtime_url: str):
    import webuiapi

    host, port = sd_runtime_url.removeprefix("http://").split(":")
    return webuiapi.WebUIApi(host=host, port=int(port), steps=3)


def test_webuiapi_client_sampler_and_schedule_type(webui) -> None:
    result = webui.txt2img(
        prompt="a lighthouse", width=64, height=64, seed=5, sampler_name="DPM++ 2M SDE", scheduler="Karras"
    )
    assert result.image.size == (64, 64)
    assert result.info["sampler_name"] == "DPM++ 2M SDE" and result.info["scheduler"] == "karras"
    # webuiapi sends every txt2img parameter; only eta (not implemented) is a value that would change A1111's image
    assert result.info["ignored_fields"] == ["eta"]
    assert [s["name"] for s in webui.get_schedulers()] == list(SCHEDULE_TYPES)
    assert {"name": "DPM++ 3M SDE", "aliases": ["k_dpmpp_3m_sde"]}.items() <= next(
        s for s in webui.get_samplers() if s["name"] == "DPM++ 3M SDE"
    ).items()
    assert [lo["name"] for lo in webui.get_loras()] == ["tiny-lora"]
    # img2img from the same client: its inpainting defaults have no effect without a mask
    edited = webui.img2img(images=[result.image], prompt="a lighthouse", width=64, height=64, seed=5, steps=3)
    assert edited.image.size == (64, 64) and edited.info["ignored_fields"] == ["eta"]


def test_schedule_type_is_the_karras_of_the_legacy_names(sd_runtime_url: str) -> None:
    def pixels(**fields: object) -> bytes:
        r = post(sd_runtime_url, "/sdapi/v1/txt2img", {**BASE, **fields})
        assert r.status_code == 200, r.text
        return decode(r.json()["images"][0]).tobytes()

    legacy = pixels(sampler_name="DPM++ 2M Karras")
    assert pixels(sampler_name="DPM++ 2M", scheduler="karras") == legacy
    assert pixels(sampler_name="DPM++ 2M", scheduler="Karras") == legacy  # A1111's label
    assert pixels(sampler_name="k_dpmpp_2m_ka") == legacy  # an alias /samplers lists
    assert pixels(sampler_name="DPM++ 2M Karras", scheduler="exponential") != legacy  # explicit type wins
    r = post(sd_runtime_url, "/sdapi/v1/txt2img", {**BASE, "scheduler": "align_your_steps"})
    assert "scheduler" in assert_4xx(r, 422, "validation_error")["error"]["message"]


def test_sampler_index_survives_the_contract_default(sd_runtime_url: str) -> None:
    """The AWS sample sends only sampler_index; the API front door fills sampler_name from the contract."""
    forwarded = Txt2ImgContent.model_validate({**BASE, "steps": 2, "sampler_index": "DDIM"}).model_dump(mode="json")
    assert forwarded["sampler_name"] == "DDIM"
    r = post(sd_runtime_url, "/sdapi/v1/txt2img", forwarded)
    assert r.status_code == 200, r.text
    info = json.loads(r.json()["info"])
    assert info["sampler_name"] == "DDIM" and info["ignored_fields"] == []
    direct = post(sd_runtime_url, "/sdapi/v1/txt2img", {**BASE, "steps": 2, "sampler_name": "DDIM"}).json()
    assert decode(r.json()["images"][0]).tobytes() == decode(direct["images"][0]).tobytes()


def test_fields_that_would_change_the_image_are_listed(sd_runtime_url: str) -> None:
    body = {**BASE, "tiling": True, "hr_prompt": "x", "restore_faces": True, "eta": 0.5, "mask_blur": 4}
    info = json.loads(post(sd_runtime_url, "/sdapi/v1/txt2img", body).json()["info"])
    assert info["ignored_fields"] == ["eta", "restore_faces", "tiling"]  # mask_blur: no mask; hr_*: no enable_hr
    body = {**BASE, "enable_hr": True, "hr_prompt": "x", "hr_sampler_name": "DDIM", "hr_second_pass_steps": 1}
    info = json.loads(post(sd_runtime_url, "/sdapi/v1/txt2img", body).json()["info"])
    assert info["ignored_fields"] == ["hr_prompt", "hr_sampler_name"]
    off = {**BASE, "enable_hr": False, "hr_scale": 2, "denoising_strength": 0.7, "restore_faces": False}
    assert json.loads(post(sd_runtime_url, "/sdapi/v1/txt2img", off).json()["info"])["ignored_fields"] == []


def test_hires_fix_renders_at_the_large_size(sd_runtime_url: str, webui) -> None:
    def render(**fields: object) -> tuple[Image.Image, dict]:
        r = post(sd_runtime_url, "/sdapi/v1/txt2img", {**BASE, **fields})
        assert r.status_code == 200, r.text
        return decode(r.json()["images"][0]), json.loads(r.json()["info"])

    hr = {"enable_hr": True, "hr_scale": 2, "denoising_strength": 0.6, "hr_second_pass_steps": 3}
    lanczos, info = render(**hr, hr_upscaler="Lanczos")
    assert lanczos.size == (128, 128) and info["ignored_fields"] == []
    assert info["hires"] == {
        "width": 128,
        "height": 128,
        "upscaler": "Lanczos",
        "steps": 3,
        "denoising": 0.6,
        "scale": 2.0,
    }
    assert "Hires upscaler: Lanczos" in info["infotexts"][0]
    assert render(**hr, hr_upscaler="Lanczos")[0].tobytes() == lanczos.tobytes()  # deterministic
    latent, _ = render(**hr, hr_upscaler="Latent (nearest-exact)")
    assert latent.size == (128, 128) and latent.tobytes() != lanczos.tobytes()
    assert render(**{**hr, "hr_resize_x": 96, "hr_resize_y": 0}, hr_upscaler="Nearest")[0].size == (96, 96)
    assert render(width=128, height=128)[0].tobytes() != lanczos.tobytes()  # not just a large render
    # A1111's own client: its default hr_upscaler is "Latent"
    result = webui.txt2img(prompt="a lighthouse", width=64, height=64, seed=5, enable_hr=True, hr_scale=1.5)
    assert result.image.size == (96, 96) and result.info["hires"]["upscaler"] == "Latent"
    for bad, code, status in (
        ({"hr_upscaler": "SwinIR 4x"}, "unknown_upscaler", 400),
        ({"hr_scale": 100}, "validation_error", 422),
        ({"denoising_strength": 2}, "validation_error", 422),
    ):
        r = post(sd_runtime_url, "/sdapi/v1/txt2img", {**BASE, **hr, **bad})
        assert next(iter(bad)) in assert_4xx(r, status, code)["error"]["message"]
    modes = httpx.get(f"{sd_runtime_url}/sdapi/v1/latent-upscale-modes").json()
    assert {"name": "Latent (bicubic antialiased)"} in modes


def test_override_settings_clip_skip_and_checkpoint(sd_runtime_url: str) -> None:
    def render(**fields: object) -> tuple[bytes, dict]:
        r = post(sd_runtime_url, "/sdapi/v1/txt2img", {**BASE, **fields})
        assert r.status_code == 200, r.text
        return decode(r.json()["images"][0]).tobytes(), json.loads(r.json()["info"])

    plain, _ = render()
    skipped, info = render(override_settings={"CLIP_stop_at_last_layers": 2})
    assert skipped != plain and info["ignored_fields"] == []
    assert render(override_settings={"CLIP_stop_at_last_layers": 1})[0] == plain  # 1 = the last layer = no skip
    # a checkpoint for this request only: the single file has the same weights, so the same pixels
    same, info = render(override_settings={"sd_model_checkpoint": "tiny-sd.safetensors"})
    assert same == plain and info["sd_model_name"] == "tiny-sd.safetensors"
    assert httpx.get(f"{sd_runtime_url}/sdapi/v1/options").json()["sd_model_checkpoint"] == "tiny-sd"  # restored
    _, info = render(override_settings={"sd_model_checkpoint": "tiny-sd", "img2img_fix_steps": True, "eta_ddim": 0.5})
    assert info["ignored_fields"] == ["override_settings.eta_ddim", "override_settings.img2img_fix_steps"]
    r = post(sd_runtime_url, "/sdapi/v1/txt2img", {**BASE, "override_settings": {"CLIP_stop_at_last_layers": 40}})
    assert "override_settings.CLIP_stop_at_last_layers" in assert_4xx(r, 422)["error"]["message"]
    r = post(sd_runtime_url, "/sdapi/v1/txt2img", {**BASE, "override_settings": {"sd_model_checkpoint": "nope"}})
    assert "nope" in assert_4xx(r, 404, "unknown_model")["error"]["message"]


def test_vae_by_name_for_one_request(sd_runtime_url: str) -> None:
    listed = httpx.get(f"{sd_runtime_url}/sdapi/v1/sd-vae").json()
    assert listed == [{"model_name": "tiny-vae.safetensors", "filename": "VAE/tiny-vae.safetensors"}]

    def render(**settings: object) -> bytes:
        r = post(sd_runtime_url, "/sdapi/v1/txt2img", {**BASE, "override_settings": settings})
        assert r.status_code == 200, r.text
        assert json.loads(r.json()["info"])["ignored_fields"] == []
        return decode(r.json()["images"][0]).tobytes()

    plain = render()
    other = render(sd_vae="tiny-vae.safetensors")
    assert other != plain and render(sd_vae="tiny-vae") == other  # the A1111 file name or the stem
    assert render() == plain and render(sd_vae="Automatic") == plain  # the model's own VAE again
    r = post(sd_runtime_url, "/sdapi/v1/txt2img", {**BASE, "override_settings": {"sd_vae": "nope.safetensors"}})
    body = assert_4xx(r, 400, "unknown_vae")
    assert "nope.safetensors" in body["error"]["message"] and "/tmp" not in r.text
    assert body["error"]["details"]["available"] == ["Automatic", "None", "tiny-vae.safetensors"]
    for path in ("../tiny-sd.safetensors", "/etc/passwd"):  # the contract refuses paths before the runtime looks
        r = post(sd_runtime_url, "/sdapi/v1/txt2img", {**BASE, "override_settings": {"sd_vae": path}})
        body = assert_4xx(r, 422, "validation_error")
        assert "override_settings.sd_vae" in body["error"]["message"] and "/tmp" not in r.text


def test_send_images_false_and_png_info(sd_runtime_url: str) -> None:
    r = post(sd_runtime_url, "/sdapi/v1/txt2img", {**BASE, "send_images": False})
    assert r.status_code == 200 and r.json()["images"] == [] and json.loads(r.json()["info"])["all_seeds"] == [7]
    image = post(sd_runtime_url, "/sdapi/v1/txt2img", {**BASE, "negative_prompt": "fog"}).json()["images"][0]
    info = post(sd_runtime_url, "/sdapi/v1/png-info", {"image": "data:image/png;base64," + image}).json()
    assert info["info"].startswith("a lighthouse\nNegative prompt: fog\nSteps: 3")
    params = info["parameters"]
    assert params["Prompt"] == "a lighthouse" and params["Negative prompt"] == "fog"
    assert params["Seed"] == "7" and params["Size"] == "64x64" and params["Sampler"] == "Euler a"
    assert_4xx(post(sd_runtime_url, "/sdapi/v1/png-info", {"image": "%%"}), 422, "invalid_image")


def token_count(model_dir: Path, text: str) -> int:
    """How many CLIP tokens ``text`` is for the model's own tokenizer (BOS and EOS included)."""
    from transformers import CLIPTokenizer

    return len(CLIPTokenizer.from_pretrained(model_dir / "tokenizer")(text).input_ids)


def test_attention_weights_break_and_long_prompts(sd_runtime_url: str, tiny_model_dir: Path) -> None:
    def render(prompt: str, negative: str = "", **fields: object) -> bytes:
        body = {**BASE, "prompt": prompt, "negative_prompt": negative, **fields}
        r = post(sd_runtime_url, "/sdapi/v1/txt2img", body)
        assert r.status_code == 200, r.text
        assert json.loads(r.json()["info"])["ignored_fields"] == []  # the syntax took effect: nothing listed
        return decode(r.json()["images"][0]).tobytes()

    plain = render("a lighthouse, fog")
    weighted = render("a (lighthouse:1.3), fog")
    assert weighted != plain
    assert render("a (lighthouse:1.0), fog") == plain  # weight 1: the same tokens, the same embedding
    assert render("a (lighthouse), fog") == render("a (lighthouse:1.1), fog") != plain  # (x) is ×1.1
    assert render("a ((lighthouse)), fog") == render("a (lighthouse:1.21), fog")  # nesting multiplies
    assert render("a [lighthouse], fog") not in (plain, weighted)  # [x] is ÷1.1
    assert render(r"a \(lighthouse\), fog") not in (plain, weighted)  # escaped: the brackets are text
    assert render("a lighthouse BREAK fog") != render("a lighthouse fog")  # BREAK starts a new chunk
    assert render("a lighthouse, fog", negative="(blurry:1.5)") != render("a lighthouse, fog", negative="blurry")
    # beyond 77 tokens: the tail is encoded in a second chunk, so it changes the image (truncation would not)
    long = "a lighthouse on a cliff, " * 6
    assert token_count(tiny_model_dir / "tiny-sd", long) > 77
    assert render(long + "red sky") != render(long + "blue sea")
    # with a LoRA tag and clip skip: all three apply together
    lora_weighted = render("<lora:tiny-lora:1> a (lighthouse:1.3), fog")
    assert lora_weighted not in (plain, weighted) and render("<lora:tiny-lora:1> a lighthouse, fog") != lora_weighted
    skip = {"override_settings": {"CLIP_stop_at_last_layers": 2}}
    assert render("a (lighthouse:1.3), fog", **skip) not in (weighted, render("a lighthouse, fog", **skip))


def test_prompt_syntax_not_implemented_is_listed(sd_runtime_url: str) -> None:
    body = {**BASE, "prompt": "a [lighthouse:castle:0.5], (fog:1.2)", "negative_prompt": "[blurry|noisy] AND dark"}
    info = json.loads(post(sd_runtime_url, "/sdapi/v1/txt2img", body).json()["info"])
    assert info["ignored_fields"] == [
        "negative_prompt (AND composition)",
        "negative_prompt (alternation [a|b])",
        "prompt (prompt editing [from:to:when])",
    ]


# ---- LoRA --------------------------------------------------------------------------


def test_loras_are_listed_by_name_without_server_paths(sd_runtime_url: str) -> None:
    loras = httpx.get(f"{sd_runtime_url}/sdapi/v1/loras").json()
    assert loras == [{"name": "tiny-lora", "alias": "tiny-lora", "path": "Lora/tiny-lora.safetensors", "metadata": {}}]
    assert post(sd_runtime_url, "/sdapi/v1/refresh-loras", {}).is_success


def test_lora_tag_changes_the_image_for_that_request_only(sd_runtime_url: str) -> None:
    def render(prompt: str) -> tuple[bytes, dict]:
        r = post(sd_runtime_url, "/sdapi/v1/txt2img", {**BASE, "prompt": prompt})
        assert r.status_code == 200, r.text
        return decode(r.json()["images"][0]).tobytes(), json.loads(r.json()["info"])

    plain, _ = render("a lighthouse")
    with_lora, info = render("a lighthouse <lora:tiny-lora:0.8>")
    assert with_lora != plain
    assert info["prompt"] == "a lighthouse <lora:tiny-lora:0.8>"  # reported as written, like A1111
    assert info["loras"] == [{"name": "tiny-lora", "te": 0.8, "unet": 0.8}]
    assert "ignored_fields" in info and info["ignored_fields"] == []
    assert render("a lighthouse")[0] == plain  # the next request is unaffected: the LoRA was unloaded
    # the tag is not encoded as text: at weight 0 the image is the plain prompt's
    assert render("a lighthouse <lora:tiny-lora:0>")[0] == plain
    # text encoder only (te=1, unet=0) differs from both
    te_only, _ = render("a lighthouse <lora:tiny-lora:1:0>")
    assert te_only not in (plain, with_lora)
    # several tags in one prompt, and the same LoRA through img2img
    assert render("<lora:tiny-lora:0.5> a lighthouse <lora:tiny-lora:0.3>")[0] != plain
    body = {**BASE, "prompt": "a lighthouse <lora:tiny-lora>", "init_images": [png_b64()], "denoising_strength": 0.9}
    r = post(sd_runtime_url, "/sdapi/v1/img2img", body)
    assert r.status_code == 200, r.text
    assert json.loads(r.json()["info"])["loras"] == [{"name": "tiny-lora", "te": 1.0, "unet": 1.0}]


@pytest.mark.parametrize(
    ("prompt", "code", "needle"),
    [
        ("x <lora:nope:1>", "unknown_lora", "'nope'"),
        ("x <lora:../tiny-sd:1>", "unknown_lora", "'../tiny-sd'"),
        ("x <lora:/etc/passwd:1>", "unknown_lora", "'/etc/passwd'"),
        ("x <lora:tiny-lora:lots>", "validation_error", "'lots'"),
    ],
)
def test_bad_lora_tags_are_4xx_naming_them(sd_runtime_url: str, prompt: str, code: str, needle: str) -> None:
    r = post(sd_runtime_url, "/sdapi/v1/txt2img", {**BASE, "prompt": prompt})
    body = assert_4xx(r, 400 if code == "unknown_lora" else 422, code)
    assert needle in body["error"]["message"] and "prompt" in body["error"]["message"]
    assert "/tmp" not in r.text and str(sd_runtime_url) not in r.text  # no server paths
    if code == "unknown_lora":
        assert body["error"]["details"]["available"] == ["tiny-lora"]


# ---- bad input ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "body", "status", "field"),
    [
        ("/sdapi/v1/txt2img", {**BASE, "width": 65}, 422, "width"),
        ("/sdapi/v1/txt2img", {**BASE, "steps": 0}, 422, "steps"),
        ("/sdapi/v1/txt2img", {**BASE, "steps": 1000}, 422, "steps"),
        ("/sdapi/v1/txt2img", {**BASE, "sampler_name": "Nope"}, 422, "sampler_name"),
        ("/sdapi/v1/txt2img", {**BASE, "batch_size": 16, "n_iter": 2}, 422, "(body)"),
        ("/sdapi/v1/txt2img", [1, 2], 422, None),
        ("/sdapi/v1/img2img", {**BASE, "init_images": ["%%%not base64%%%"]}, 422, "init_images[0]"),
        ("/sdapi/v1/img2img", {**BASE, "init_images": [base64.b64encode(b"not a png").decode()]}, 422, None),
        ("/sdapi/v1/extra-single-image", {"image": "!!"}, 422, "image"),
        ("/sdapi/v1/extra-single-image", {"image": png_b64(), "resize_mode": 1}, 422, None),
    ],
)
def test_bad_input_is_4xx_json(sd_runtime_url: str, path: str, body: object, status: int, field: str | None) -> None:
    r = post(sd_runtime_url, path, body)
    got = assert_4xx(r, status)
    if field:
        assert field in json.dumps(got["error"])
    assert httpx.get(f"{sd_runtime_url}/healthz").status_code == 200


def test_invalid_json_is_400(sd_runtime_url: str) -> None:
    r = httpx.post(f"{sd_runtime_url}/sdapi/v1/txt2img", content=b"{not json", timeout=10)
    assert_4xx(r, 400, "invalid_json")


def test_json_without_content_type_is_refused_not_parsed(sd_runtime_url: str) -> None:
    """A browser's "simple request" (no JSON Content-Type) cannot start a job: 415, not a silent parse."""
    r = httpx.post(f"{sd_runtime_url}/sdapi/v1/txt2img", content=json.dumps(BASE).encode(), timeout=10)
    body = assert_4xx(r, 415, "unsupported_media_type")
    assert "application/json" in body["error"]["message"]


def test_unsupported_option_is_a_422_naming_it(sd_runtime_url: str) -> None:
    r = post(sd_runtime_url, "/sdapi/v1/options", {"sd_model_checkpoint": "tiny-sd", "CLIP_stop_at_last_layers": 2})
    body = assert_4xx(r, 422, "validation_error")
    problem = {"field": "CLIP_stop_at_last_layers", "message": "Extra inputs are not permitted"}
    assert body["error"]["details"] == [problem]
    assert httpx.get(f"{sd_runtime_url}/sdapi/v1/options").json()["sd_model_checkpoint"] == "tiny-sd"


def test_sampler_index_names_the_sampler(sd_runtime_url: str) -> None:
    r = post(sd_runtime_url, "/sdapi/v1/txt2img", {**BASE, "steps": 2, "sampler_index": "DDIM"})
    assert r.status_code == 200, r.text
    assert json.loads(r.json()["info"])["sampler_name"] == "DDIM"


def test_openapi_documents_the_request_bodies(sd_runtime_url: str) -> None:
    spec = httpx.get(f"{sd_runtime_url}/openapi.json").json()
    schemas = spec["components"]["schemas"]

    def body_schema(path: str) -> dict:
        ref = spec["paths"][path]["post"]["requestBody"]["content"]["application/json"]["schema"]["$ref"]
        return schemas[ref.rsplit("/", 1)[1]]

    txt2img = body_schema("/sdapi/v1/txt2img")
    assert {"prompt", "steps", "width", "sampler_name", "seed"} <= set(txt2img["properties"])
    assert txt2img["properties"]["sampler_name"]["enum"] == list(SAMPLERS)
    assert txt2img["properties"]["steps"]["maximum"] == 150
    assert "init_images" in body_schema("/sdapi/v1/img2img")["properties"]
    assert "image" in body_schema("/sdapi/v1/extra-single-image")["properties"]
    assert "sd_model_checkpoint" in body_schema("/sdapi/v1/options")["properties"]
    assert {"prompt", "client_id", "prompt_id"} <= set(body_schema("/prompt")["properties"])
    assert httpx.get(f"{sd_runtime_url}/docs").status_code == 200


def test_sampler_error_lists_supported(sd_runtime_url: str) -> None:
    r = post(sd_runtime_url, "/sdapi/v1/txt2img", {**BASE, "sampler_name": "PLMS"})
    message = assert_4xx(r, 422)["error"]["message"]
    assert "Euler a" in message and "DPM++ 2M Karras" in message


# ---- concurrency and interrupt ------------------------------------------------------


def test_concurrent_requests_are_all_answered_correctly(sd_runtime_url: str) -> None:
    seeds = [100, 101, 102, 103, 104]
    expected = {
        s: decode(post(sd_runtime_url, "/sdapi/v1/txt2img", {**BASE, "seed": s}).json()["images"][0]).tobytes()
        for s in seeds[:2]
    }

    def one(seed: int) -> tuple[int, bytes, int]:
        r = post(sd_runtime_url, "/sdapi/v1/txt2img", {**BASE, "seed": seed})
        return seed, decode(r.json()["images"][0]).tobytes(), json.loads(r.json()["info"])["seed"]

    with ThreadPoolExecutor(len(seeds)) as pool:
        results = list(pool.map(one, seeds))
    assert [r[2] for r in results] == seeds
    for seed, data, _ in results:
        if seed in expected:
            assert data == expected[seed]
    assert len({r[1] for r in results}) == len(seeds)


def test_progress_responsive_and_interrupt_returns_partial_result(sd_runtime_url: str) -> None:
    result: dict = {}

    def long_job() -> None:
        body = {**BASE, "steps": 150, "width": 256, "height": 256, "n_iter": 3}
        result["response"] = post(sd_runtime_url, "/sdapi/v1/txt2img", body, timeout=300)

    worker = threading.Thread(target=long_job)
    worker.start()
    deadline = time.monotonic() + 60
    while True:
        t0 = time.monotonic()
        p = httpx.get(f"{sd_runtime_url}/sdapi/v1/progress", timeout=5).json()
        assert time.monotonic() - t0 < 2.0  # the event loop is not blocked by inference
        assert httpx.get(f"{sd_runtime_url}/healthz", timeout=5).status_code == 200
        if p["state"]["sampling_step"] >= 2:
            break
        assert time.monotonic() < deadline, p
        time.sleep(0.05)
    assert p["state"]["job"] == "txt2img" and p["state"]["job_count"] == 3 and 0 < p["progress"] < 1
    t_interrupt = time.monotonic()
    assert httpx.post(f"{sd_runtime_url}/sdapi/v1/interrupt", timeout=5).status_code == 200
    worker.join(timeout=60)
    assert not worker.is_alive()
    assert time.monotonic() - t_interrupt < 30
    r = result["response"]
    assert r.status_code == 200, r.text
    info = json.loads(r.json()["info"])
    assert info["interrupted"] is True
    assert len(r.json()["images"]) == 1  # the interrupted iteration is decoded, later ones never start
    # the next request is unaffected
    ok = post(sd_runtime_url, "/sdapi/v1/txt2img", BASE).json()
    assert json.loads(ok["info"])["interrupted"] is False
