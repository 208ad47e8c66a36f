"""Local mode's models dir: the tiny model and its companions are built where missing, never downloaded."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from sdeks.local.stack import ensure_tiny_model

pytestmark = pytest.mark.slow


def test_a_models_dir_made_by_an_older_sdeks_gains_the_newer_companions(tiny_model_dir: Path, tmp_path: Path) -> None:
    old = tmp_path / "models"
    shutil.copytree(tiny_model_dir / "tiny-sd", old / "tiny-sd")
    shutil.copy(tiny_model_dir / "tiny-sd.safetensors", old)
    before = (old / "tiny-sd.safetensors").stat().st_mtime_ns

    assert ensure_tiny_model(old) == old / "tiny-sd"

    assert [p.name for p in (old / "Lora").iterdir()] == ["tiny-lora.safetensors"]
    assert [p.name for p in (old / "VAE").iterdir()] == ["tiny-vae.safetensors"]
    embeddings = sorted(p.name for p in (old / "embeddings").iterdir())
    assert embeddings == ["tiny-embed-diffusers.safetensors", "tiny-embed-xl.safetensors", "tiny-embed.safetensors"]
    assert [p.name for p in (old / "RealESRGAN").iterdir()] == ["RealESRGAN_x4plus.safetensors"]
    assert (old / "tiny-sd.safetensors").stat().st_mtime_ns == before, "what existed is kept, not rebuilt"
