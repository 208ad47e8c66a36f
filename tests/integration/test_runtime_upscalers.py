"""Model upscalers (ESRGAN family, loaded by spandrel) through a real sd_runtime process.

The models dir holds the tiny random RRDBNet ``RealESRGAN/RealESRGAN_x4plus.safetensors``
that ``python -m sd_runtime.tiny`` builds (the real download's key layout), another one
saved as a ``.pth`` in the older ``params_ema`` wrapping under ``ESRGAN/``, a file that is
not a model, and a ``.pth`` pickle that would create a file if it were ever unpickled.
"""

from __future__ import annotations

import base64
import io
import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from sd_runtime.tiny import TINY_ESRGAN, TINY_NAME
from tests.fixtures.runtime import start_sd_runtime
from tests.integration.test_comfyui_api import run, saved_images
from tests.integration.test_runtime_api import BASE, assert_4xx, decode, png_b64, post

pytestmark = pytest.mark.slow

INSTALLED = ["None", "Lanczos", "Nearest", "4x-tiny", "broken", "evil", "R-ESRGAN 4x+"]
"""Built-in upscalers first, then the files: ESRGAN/ (by stem), RealESRGAN/ (by A1111's name)."""


class Evil:
    """Unpickling this would open (create) ``marker``: what an unsafe ``.pth`` can do."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return (open, (str(self.marker), "w"))


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> Path:
    import torch

    from sd_runtime.tiny import esrgan_state_dict

    out = tmp_path_factory.mktemp("upscalers")
    (out / "RealESRGAN").mkdir()
    shutil.copy(tiny_model_dir / TINY_ESRGAN, out / TINY_ESRGAN)
    (out / "ESRGAN").mkdir()
    torch.save({"params_ema": esrgan_state_dict(seed=99)}, out / "ESRGAN" / "4x-tiny.pth")
    (out / "ESRGAN" / "broken.safetensors").write_bytes(b"not a safetensors file")
    torch.save({"weight": Evil(out / "PWNED")}, out / "ESRGAN" / "evil.pth")
    return out


@pytest.fixture(scope="module")
def url(models: Path, tiny_model_dir: Path) -> Iterator[str]:
    with start_sd_runtime(tiny_model_dir / TINY_NAME, models_dir=models) as base:
        yield base


def extras(url: str, **fields: object) -> tuple[Image.Image, dict]:
    r = post(url, "/sdapi/v1/extra-single-image", {"image": png_b64((40, 30)), **fields})
    assert r.status_code == 200, r.text
    return decode(r.json()["image"]), r.json()


def pixels(img: Image.Image) -> np.ndarray:
    return np.asarray(img.convert("RGB"), dtype=np.float64)


def test_upscalers_are_listed_with_a1111_names_and_the_model_scale(url: str, models: Path) -> None:
    listed = {u["name"]: u for u in httpx.get(f"{url}/sdapi/v1/upscalers", timeout=60).json()}
    assert list(listed) == INSTALLED
    assert listed["R-ESRGAN 4x+"] == {
        "name": "R-ESRGAN 4x+",
        "model_name": "RealESRGAN_x4plus",
        "model_path": "RealESRGAN/RealESRGAN_x4plus.safetensors",
        "model_url": None,
        "scale": 4,
    }
    assert listed["4x-tiny"]["scale"] == 4
    assert listed["broken"]["scale"] is None and listed["evil"]["scale"] is None
    assert not (models / "PWNED").exists()


def test_extra_single_image_with_r_esrgan(url: str) -> None:
    out, body = extras(url, upscaler_1="R-ESRGAN 4x+", upscaling_resize=4)
    assert out.size == (160, 120)
    assert body["info"] == {"upscaler_1": "R-ESRGAN 4x+", "upscaler_2": None, "model_tiles": 1, "tile": 0}
    assert "Postprocess upscaler: R-ESRGAN 4x+" in body["html_info"] and body["ignored_fields"] == []
    lanczos, _ = extras(url, upscaler_1="Lanczos", upscaling_resize=4)
    assert np.abs(pixels(out) - pixels(lanczos)).mean() > 5  # the network ran, not a resize
    again, _ = extras(url, upscaler_1="R-ESRGAN 4x+", upscaling_resize=4)
    assert again.tobytes() == out.tobytes()
    # A1111: the model runs, then Lanczos brings the result to the size asked for
    assert extras(url, upscaler_1="R-ESRGAN 4x+", upscaling_resize=2)[0].size == (80, 60)
    cover = {"resize_mode": 1, "upscaling_resize_w": 200, "upscaling_resize_h": 64}
    assert extras(url, upscaler_1="RealESRGAN_x4plus", **cover)[0].size == (200, 64)


def test_a_pth_file_in_the_esrgan_folder_is_named_by_its_stem(url: str) -> None:
    tiny, _ = extras(url, upscaler_1="4x-tiny", upscaling_resize=4)
    other, _ = extras(url, upscaler_1="R-ESRGAN 4x+", upscaling_resize=4)
    assert tiny.size == (160, 120) and tiny.tobytes() != other.tobytes()


def test_large_image_runs_in_tiles_and_matches_the_untiled_result(url: str) -> None:
    image = Image.fromarray((np.random.default_rng(0).random((96, 96, 3)) * 255).astype(np.uint8))
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    body = {"image": base64.b64encode(buf.getvalue()).decode(), "upscaler_1": "R-ESRGAN 4x+", "upscaling_resize": 4}

    def upscale(tile: int) -> tuple[np.ndarray, dict]:
        assert post(url, "/sdapi/v1/options", {"ESRGAN_tile": tile, "ESRGAN_tile_overlap": 8}).status_code == 200
        r = post(url, "/sdapi/v1/extra-single-image", body)
        assert r.status_code == 200, r.text
        return pixels(decode(r.json()["image"])), r.json()["info"]

    try:
        whole, info_whole = upscale(0)
        tiled, info_tiled = upscale(32)
        options = httpx.get(f"{url}/sdapi/v1/options").json()
        assert (options["ESRGAN_tile"], options["ESRGAN_tile_overlap"]) == (32, 8)
    finally:
        post(url, "/sdapi/v1/options", {"ESRGAN_tile": 192, "ESRGAN_tile_overlap": 8})
    assert (info_whole["model_tiles"], info_whole["tile"]) == (1, 0)
    assert (info_tiled["model_tiles"], info_tiled["tile"]) == (16, 32)  # 4 × 4 tiles of 32 px, overlapping by 8
    assert whole.shape == tiled.shape == (384, 384, 3)
    diff = np.abs(whole - tiled)
    assert diff.mean() < 0.5 and diff.max() <= 8, (diff.mean(), diff.max())


def test_second_upscaler_is_blended_in_by_its_visibility(url: str) -> None:
    images = [{"data": png_b64((32, 32)), "name": "a"}, {"data": png_b64((16, 24), (10, 200, 10)), "name": "b"}]

    def batch(**fields: object) -> list[Image.Image]:
        r = post(url, "/sdapi/v1/extra-batch-images", {"imageList": images, "upscaling_resize": 2, **fields})
        assert r.status_code == 200, r.text
        assert r.json()["ignored_fields"] == []
        return [decode(i).convert("RGB") for i in r.json()["images"]]

    lanczos = batch(upscaler_1="Lanczos")
    model = batch(upscaler_1="R-ESRGAN 4x+")
    blended = batch(upscaler_1="Lanczos", upscaler_2="R-ESRGAN 4x+", extras_upscaler_2_visibility=0.5)
    assert [b.size for b in blended] == [(64, 64), (32, 48)]
    for lz, md, bl in zip(lanczos, model, blended, strict=True):
        assert bl.tobytes() == Image.blend(lz, md, 0.5).tobytes()


def test_hires_fix_with_a_model_upscaler(url: str) -> None:
    def render(upscaler: str) -> tuple[Image.Image, dict]:
        hr = {"enable_hr": True, "hr_scale": 2, "hr_upscaler": upscaler, "denoising_strength": 0.5}
        r = post(url, "/sdapi/v1/txt2img", {**BASE, **hr})
        assert r.status_code == 200, r.text
        return decode(r.json()["images"][0]), json.loads(r.json()["info"])

    model, info = render("R-ESRGAN 4x+")
    assert model.size == (128, 128)
    assert info["hires"]["upscaler"] == "R-ESRGAN 4x+" and info["ignored_fields"] == []
    assert "Hires upscaler: R-ESRGAN 4x+" in info["infotexts"][0]
    assert render("R-ESRGAN 4x+")[0].tobytes() == model.tobytes()
    assert render("Lanczos")[0].tobytes() != model.tobytes()


def test_unknown_and_unloadable_upscalers_are_named(url: str, models: Path) -> None:
    r = post(url, "/sdapi/v1/extra-single-image", {"image": png_b64(), "upscaler_1": "R-ESRGAN 4x+ Anime6B"})
    body = assert_4xx(r, 400, "unknown_upscaler")
    assert "not installed" in body["error"]["message"]
    assert body["error"]["details"]["available"] == INSTALLED
    r = post(url, "/sdapi/v1/txt2img", {**BASE, "enable_hr": True, "hr_upscaler": "SwinIR 4x"})
    assert "hr_upscaler" in assert_4xx(r, 400, "unknown_upscaler")["error"]["message"]
    for name in ("broken", "evil"):
        r = post(url, "/sdapi/v1/extra-single-image", {"image": png_b64(), "upscaler_1": name})
        body = assert_4xx(r, 422, "invalid_upscaler")
        assert f"ESRGAN/{name}." in body["error"]["message"] and body["error"]["details"] == {"upscaler": name}
        assert str(models) not in r.text
    assert not (models / "PWNED").exists()  # the pickle was refused, never run
    second = {"image": png_b64(), "upscaler_2": "nope", "extras_upscaler_2_visibility": 0.3}
    r = post(url, "/sdapi/v1/extra-single-image", second)
    assert "upscaler_2: upscaler 'nope' is unknown" in assert_4xx(r, 400, "unknown_upscaler")["error"]["message"]
    r = post(url, "/sdapi/v1/extra-single-image", {"image": png_b64(), "extras_upscaler_2_visibility": 2})
    assert "extras_upscaler_2_visibility" in assert_4xx(r, 422, "validation_error")["error"]["message"]
    assert_4xx(post(url, "/sdapi/v1/options", {"ESRGAN_tile": 4096}), 422)


def upscale_workflow(image: str, model_name: str) -> dict:
    return {
        "1": {"class_type": "LoadImage", "inputs": {"image": image}},
        "2": {"class_type": "UpscaleModelLoader", "inputs": {"model_name": model_name}},
        "3": {"class_type": "ImageUpscaleWithModel", "inputs": {"upscale_model": ["2", 0], "image": ["1", 0]}},
        "9": {"class_type": "SaveImage", "inputs": {"images": ["3", 0], "filename_prefix": "up"}},
    }


def test_comfyui_upscale_model_nodes(url: str) -> None:
    with httpx.Client(base_url=url, timeout=60) as client:
        info = client.get("/object_info/UpscaleModelLoader").json()["UpscaleModelLoader"]
        assert info["input"]["required"]["model_name"][0] == [
            "4x-tiny.pth",
            "broken.safetensors",
            "evil.pth",
            "RealESRGAN_x4plus.safetensors",
        ]
        assert info["output"] == ["UPSCALE_MODEL"]
        image = "data:image/png;base64," + png_b64((40, 30))
        _, entry = run(client, upscale_workflow(image, "RealESRGAN_x4plus.safetensors"))
        assert entry["status"]["status_str"] == "success", entry["status"]
        (png,) = saved_images(client, entry)
        out = Image.open(io.BytesIO(png))
        assert out.size == (160, 120)
        a1111, _ = extras(url, upscaler_1="R-ESRGAN 4x+", upscaling_resize=4)
        assert np.abs(pixels(out) - pixels(a1111)).max() <= 1  # the same network, one tile either way
        _, failed = run(client, upscale_workflow(image, "broken.safetensors"))
        assert failed["status"]["status_str"] == "error"
        messages = json.dumps(failed["status"]["messages"])
        assert "broken" in messages and "cannot be loaded" in messages
        r = client.post("/prompt", json={"prompt": upscale_workflow(image, "nope.pth")})
        assert r.status_code == 400 and "value_not_in_list" in r.text
