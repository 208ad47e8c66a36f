"""Textual-inversion embeddings through a real sd_runtime: loaded by name from ``embeddings/``, A1111's listing."""

from __future__ import annotations

import base64
import io
import json
import shutil
from pathlib import Path

import httpx
import pytest
from PIL import Image

from tests.fixtures.runtime import start_sd_runtime

pytestmark = pytest.mark.slow

BASE = {"steps": 3, "width": 64, "height": 64, "seed": 5}
UNSET = {"step": None, "sd_checkpoint": None, "sd_checkpoint_name": None}


def render(url: str, prompt: str) -> bytes:
    r = httpx.post(f"{url}/sdapi/v1/txt2img", json={**BASE, "prompt": prompt}, timeout=120)
    assert r.status_code == 200, r.text
    assert json.loads(r.json()["info"])["ignored_fields"] == []
    return Image.open(io.BytesIO(base64.b64decode(r.json()["images"][0]))).tobytes()


def test_embeddings_apply_by_name_and_only_where_named(tiny_model_dir: Path, tmp_path: Path) -> None:
    models = tmp_path / "models"
    shutil.copytree(tiny_model_dir / "embeddings", models / "embeddings")
    with start_sd_runtime(tiny_model_dir / "tiny-sd", models_dir=models) as url:
        listed = httpx.get(f"{url}/sdapi/v1/embeddings").json()
        assert listed == {
            "loaded": {
                "tiny-embed": {**UNSET, "shape": 32, "vectors": 2},  # A1111's emb_params layout
                "tiny-embed-diffusers": {**UNSET, "shape": 32, "vectors": 1},  # diffusers' one-key layout
            },
            "skipped": {"tiny-embed-xl": {**UNSET, "shape": 96, "vectors": 2}},  # SDXL's: not for this model
        }
        plain = render(url, "a lighthouse, fog")
        named = render(url, "a tiny-embed lighthouse, fog")
        # the file gone and the folder read again: the same prompt is now plain text, other prompts unchanged
        (models / "embeddings" / "tiny-embed.safetensors").unlink()
        assert httpx.post(f"{url}/sdapi/v1/refresh-embeddings", timeout=60).is_success
        assert list(httpx.get(f"{url}/sdapi/v1/embeddings").json()["loaded"]) == ["tiny-embed-diffusers"]
        as_text = render(url, "a tiny-embed lighthouse, fog")
        assert as_text not in (named, plain)
        assert render(url, "a lighthouse, fog") == plain
        # weights apply to an embedding's vectors like to any word's
        assert render(url, "a (tiny-embed-diffusers:1.4) lighthouse, fog") != render(
            url, "a tiny-embed-diffusers lighthouse, fog"
        )
        assert str(tmp_path) not in httpx.get(f"{url}/sdapi/v1/embeddings").text  # names, never paths
