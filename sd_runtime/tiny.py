"""Build the tiny random-weight SD model used by tests, benchmarks and local mode.

``python -m sd_runtime.tiny OUT_DIR`` writes, in a few seconds on CPU and with no
download:

- ``OUT_DIR/tiny-sd/``              diffusers format (model_index.json + components)
- ``OUT_DIR/tiny-sd.safetensors``   the same weights in the original SD (ldm) single-file
  layout, so the runtime's ``from_single_file`` path is exercised like a real checkpoint
- ``OUT_DIR/Lora/tiny-lora.safetensors``  a random LoRA for it in the kohya layout A1111
  users download (``lora_unet_*`` / ``lora_te_*``, ``lora_down``/``lora_up``/``alpha``)
- ``OUT_DIR/VAE/tiny-vae.safetensors``  another random VAE for it in the standalone ldm layout
- ``OUT_DIR/embeddings/``  random textual-inversion embeddings: ``tiny-embed`` (A1111's
  ``emb_params``, 2 vectors), ``tiny-embed-diffusers`` (diffusers' one-key layout) for
  SD 1.x and ``tiny-embed-xl`` (``clip_l`` + ``clip_g``) for SDXL; both builds write all
  three, so each model has one family to load and one to skip
- ``OUT_DIR/RealESRGAN/RealESRGAN_x4plus.safetensors``  a tiny random 4x ESRGAN (RRDBNet) in the key
  layout of the real Real-ESRGAN download, so spandrel detects it as that file (A1111 lists it as
  ``R-ESRGAN 4x+``)

``python -m sd_runtime.tiny OUT_DIR --sdxl`` writes ``tiny-sdxl/`` and
``tiny-sdxl.safetensors`` instead: the SDXL architecture (two text encoders, the second
an OpenCLIP-layout ``CLIPTextModelWithProjection`` in the single file; a UNet with
SDXL's ``text_time`` micro-conditioning, linear projections and several transformer
layers per block), from ``sd_runtime/configs/tiny-sdxl``.

The architecture is SD 1.x (UNet2DConditionModel with cross-attention, 4-block
AutoencoderKL with the real 8x latent factor, CLIPTextModel + a byte-level
CLIPTokenizer); only widths and depths are tiny. Configs come from
``sd_runtime/configs/tiny-sd`` (shipped in the repo, also used to load the single
file). Weights are drawn from a fixed seed, so every build is identical. The build
is skipped when both outputs already exist.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

from sd_runtime import CONFIGS_DIR

TINY_NAME = "tiny-sd"
TINY_LORA = "tiny-lora"
TINY_VAE = "tiny-vae"
TINY_EMBEDDINGS = ("tiny-embed", "tiny-embed-diffusers", "tiny-embed-xl")
TINY_ESRGAN = "RealESRGAN/RealESRGAN_x4plus.safetensors"
ESRGAN_FEAT, ESRGAN_BLOCKS, ESRGAN_GROW = 8, 1, 32
"""Widths of the tiny RRDBNet (the real RealESRGAN_x4plus: 64 features, 23 blocks; spandrel fixes growth at 32)."""
LORA_RANK = 2
# the attention projections kohya's trainer targets, as diffusers module-name suffixes
_UNET_TARGETS = tuple(f"{attn}.{proj}" for attn in ("attn1", "attn2") for proj in ("to_q", "to_k", "to_v", "to_out.0"))
_TE_TARGETS = ("q_proj", "k_proj", "v_proj", "out_proj")
TINY_CONFIG = CONFIGS_DIR / TINY_NAME
TINY_SDXL = "tiny-sdxl"
TINY_SDXL_CONFIG = CONFIGS_DIR / TINY_SDXL
SEED = 1234


def _load_json(path: Path) -> dict:
    return json.loads(path.read_text())


def build_pipeline():  # -> StableDiffusionPipeline (imports kept lazy: torch is slow to import)
    """Instantiate the tiny pipeline with deterministic random weights."""
    import torch
    from diffusers import AutoencoderKL, PNDMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    torch.manual_seed(SEED)
    unet = UNet2DConditionModel.from_config(_load_json(TINY_CONFIG / "unet" / "config.json"))
    vae = AutoencoderKL.from_config(_load_json(TINY_CONFIG / "vae" / "config.json"))
    text_encoder = CLIPTextModel(CLIPTextConfig.from_pretrained(TINY_CONFIG / "text_encoder"))
    tokenizer = CLIPTokenizer.from_pretrained(TINY_CONFIG / "tokenizer")
    scheduler = PNDMScheduler.from_config(_load_json(TINY_CONFIG / "scheduler" / "scheduler_config.json"))
    pipe = StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def build_sdxl_pipeline():  # -> StableDiffusionXLPipeline
    """Instantiate the tiny SDXL pipeline with deterministic random weights."""
    import torch
    from diffusers import AutoencoderKL, EulerDiscreteScheduler, StableDiffusionXLPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

    torch.manual_seed(SEED)
    cfg = TINY_SDXL_CONFIG
    pipe = StableDiffusionXLPipeline(
        vae=AutoencoderKL.from_config(_load_json(cfg / "vae" / "config.json")),
        text_encoder=CLIPTextModel(CLIPTextConfig.from_pretrained(cfg / "text_encoder")),
        text_encoder_2=CLIPTextModelWithProjection(CLIPTextConfig.from_pretrained(cfg / "text_encoder_2")),
        tokenizer=CLIPTokenizer.from_pretrained(cfg / "tokenizer"),
        tokenizer_2=CLIPTokenizer.from_pretrained(cfg / "tokenizer_2"),
        unet=UNet2DConditionModel.from_config(_load_json(cfg / "unet" / "config.json")),
        scheduler=EulerDiscreteScheduler.from_config(_load_json(cfg / "scheduler" / "scheduler_config.json")),
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def single_file_state_dict(pipe) -> dict:
    """The pipeline's weights in the original single-file key layout (SD 1.x, or SDXL's two encoders)."""
    from sd_runtime.ldm import clip_to_ldm, open_clip_to_ldm, sdxl_clip_to_ldm, unet_to_ldm, vae_to_ldm

    state = {}
    state.update(unet_to_ldm(pipe.unet.state_dict(), dict(pipe.unet.config)))
    state.update(vae_to_ldm(pipe.vae.state_dict(), dict(pipe.vae.config)))
    if getattr(pipe, "text_encoder_2", None) is not None:
        state.update(sdxl_clip_to_ldm(pipe.text_encoder.state_dict()))
        state.update(open_clip_to_ldm(pipe.text_encoder_2.state_dict()))
    else:
        state.update(clip_to_ldm(pipe.text_encoder.state_dict()))
    return {k: v.detach().contiguous().clone() for k, v in state.items()}


def lora_state_dict(pipe, seed: int = SEED + 1) -> dict:
    """A random rank-2 LoRA for ``pipe`` in the kohya key layout (what A1111 users bring)."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    state = {}
    for prefix, module, targets in (
        ("lora_unet", pipe.unet, _UNET_TARGETS),
        ("lora_te", pipe.text_encoder, _TE_TARGETS),
    ):
        for name, mod in module.named_modules():
            if isinstance(mod, torch.nn.Linear) and name.endswith(targets):
                key = f"{prefix}_{name.replace('.', '_')}"
                state[f"{key}.lora_down.weight"] = torch.randn(LORA_RANK, mod.in_features, generator=generator)
                state[f"{key}.lora_up.weight"] = torch.randn(mod.out_features, LORA_RANK, generator=generator)
                state[f"{key}.alpha"] = torch.tensor(float(LORA_RANK))
    return state


def _save(state: dict, path: Path, tag: str) -> None:
    """``state`` as safetensors at ``path``, written under a temporary name and renamed into place."""
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}{path.suffix}")
    save_file(state, str(tmp), metadata={"format": "pt", "sdeks": tag})
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)


def _write_both_layouts(pipe, out: Path, name: str, force: bool) -> tuple[Path, Path]:
    """``out/name/`` (diffusers) and ``out/name.safetensors`` (single file), each renamed into place."""
    ddir, sfile = out / name, out / f"{name}.safetensors"
    if force or not (ddir / "model_index.json").is_file():
        tmp = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=out))
        os.chmod(tmp, 0o755)  # noqa: S103 (mkdtemp makes it private; containers read it as another user)
        pipe.save_pretrained(tmp, safe_serialization=True)
        shutil.rmtree(ddir, ignore_errors=True)
        os.replace(tmp, ddir)
    if force or not sfile.is_file():
        _save(single_file_state_dict(pipe), sfile, name)
    return ddir, sfile


def _width(config_dir: Path, encoder: str) -> int:
    return int(_load_json(config_dir / encoder / "config.json")["hidden_size"])


def embedding_state_dicts(seed: int = SEED + 3) -> dict[str, dict]:
    """The tiny embeddings by name, in the layouts users bring (see the module docstring)."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    sd, xl_l, xl_g = (
        _width(TINY_CONFIG, "text_encoder"),
        _width(TINY_SDXL_CONFIG, "text_encoder"),
        _width(TINY_SDXL_CONFIG, "text_encoder_2"),
    )
    return {
        "tiny-embed": {"emb_params": torch.randn(2, sd, generator=generator)},
        "tiny-embed-diffusers": {"<tiny-embed-diffusers>": torch.randn(1, sd, generator=generator)},
        "tiny-embed-xl": {
            "clip_l": torch.randn(2, xl_l, generator=generator),
            "clip_g": torch.randn(2, xl_g, generator=generator),
        },
    }


def _embedding_files(out: Path) -> list[Path]:
    return [out / "embeddings" / f"{name}.safetensors" for name in TINY_EMBEDDINGS]


def build_embeddings(out: Path, force: bool = False) -> None:
    """Write ``out/embeddings/*.safetensors`` (each renamed into place)."""
    if not force and all(p.is_file() for p in _embedding_files(out)):
        return
    for name, state in embedding_state_dicts().items():
        _save(state, out / "embeddings" / f"{name}.safetensors", name)


def build_sdxl(out_dir: str | Path, force: bool = False) -> tuple[Path, Path]:
    """Write the tiny SDXL model (both layouts) and the embeddings under ``out_dir``.

    Returns (diffusers_dir, single_file).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    ddir, sfile = out / TINY_SDXL, out / f"{TINY_SDXL}.safetensors"
    build_embeddings(out, force)
    if not force and (ddir / "model_index.json").is_file() and sfile.is_file():
        return ddir, sfile
    return _write_both_layouts(build_sdxl_pipeline(), out, TINY_SDXL, force)


def vae_state_dict(pipe, seed: int = SEED + 2) -> dict:
    """Another random VAE for ``pipe`` in the standalone ldm layout A1111 users download (no prefix)."""
    import torch
    from diffusers import AutoencoderKL

    from sd_runtime.ldm import VAE_PREFIX, vae_to_ldm

    torch.manual_seed(seed)
    other = AutoencoderKL.from_config(pipe.vae.config)
    state = vae_to_ldm(other.state_dict(), dict(other.config))
    return {k.removeprefix(VAE_PREFIX): v.contiguous() for k, v in state.items()}


def esrgan_state_dict(seed: int = SEED + 3) -> dict:
    """A random 4x RRDBNet in Real-ESRGAN's (basicsr) key layout: conv_first, body.N.rdbK.convJ, conv_up1/2 …

    Default conv initialisation (the shapes decide everything spandrel detects); the last
    conv's bias is 0.5 so the output is a mid-grey texture rather than clamped black.
    """
    import torch

    torch.manual_seed(seed)
    f, g = ESRGAN_FEAT, ESRGAN_GROW
    convs: dict[str, tuple[int, int]] = {"conv_first": (3, f)}
    for b in range(ESRGAN_BLOCKS):
        for r in (1, 2, 3):
            for j in range(1, 6):
                convs[f"body.{b}.rdb{r}.conv{j}"] = (f + (j - 1) * g, g if j < 5 else f)
    convs |= {"conv_body": (f, f), "conv_up1": (f, f), "conv_up2": (f, f), "conv_hr": (f, f), "conv_last": (f, 3)}
    state = {}
    for name, (cin, cout) in convs.items():
        conv = torch.nn.Conv2d(cin, cout, 3, padding=1)
        state[f"{name}.weight"] = conv.weight.detach().contiguous()
        state[f"{name}.bias"] = conv.bias.detach().contiguous()
    state["conv_last.bias"] = torch.full((3,), 0.5)
    return state


def build(out_dir: str | Path, force: bool = False) -> tuple[Path, Path]:
    """Write the tiny model (both formats) under ``out_dir``; return (diffusers_dir, single_file).

    Idempotent and safe against concurrent builders: each output is written to a
    temporary name and renamed into place.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    ddir, sfile = out / TINY_NAME, out / f"{TINY_NAME}.safetensors"
    lfile = out / "Lora" / f"{TINY_LORA}.safetensors"
    vfile = out / "VAE" / f"{TINY_VAE}.safetensors"
    build_embeddings(out, force)
    efile = out / TINY_ESRGAN
    if force or not efile.is_file():  # needs no pipeline
        _save(esrgan_state_dict(), efile, "tiny-esrgan")
    if not force and all(p.is_file() for p in (ddir / "model_index.json", sfile, lfile, vfile)):
        return ddir, sfile

    pipe = build_pipeline()
    _write_both_layouts(pipe, out, TINY_NAME, force)
    if force or not lfile.is_file():
        _save(lora_state_dict(pipe), lfile, TINY_LORA)
    if force or not vfile.is_file():
        _save(vae_state_dict(pipe), vfile, TINY_VAE)
    return ddir, sfile


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sd_runtime.tiny", description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", help="directory to write tiny-sd/ and tiny-sd.safetensors into")
    parser.add_argument("--force", action="store_true", help="rebuild even if present")
    parser.add_argument("--sdxl", action="store_true", help="write the tiny SDXL model (tiny-sdxl) instead")
    args = parser.parse_args(argv)
    ddir, sfile = (build_sdxl if args.sdxl else build)(args.out_dir, force=args.force)
    print(json.dumps({"diffusers": str(ddir), "single_file": str(sfile)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
