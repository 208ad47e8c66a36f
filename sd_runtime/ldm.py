"""Convert a diffusers SD 1.x / SDXL state dict to the original (ldm / A1111) single-file key layout.

diffusers only ships the other direction (``from_single_file`` converts ldm → diffusers).
The tiny test models need a genuine ldm-layout ``.safetensors`` so that the
single-file loading path of the runtime is exercised exactly as with a real
checkpoint; this module is the inverse of diffusers' ``convert_ldm_*_checkpoint``
and ``convert_open_clip_checkpoint`` for the SD 1.x and SDXL families (any number
of blocks / layers per block). Unit tests check the round trip through diffusers'
own converters.
"""

from __future__ import annotations

import re
from typing import Any

import torch

UNET_PREFIX = "model.diffusion_model."
VAE_PREFIX = "first_stage_model."
CLIP_PREFIX = "cond_stage_model.transformer.text_model."
SDXL_CLIP_PREFIX = "conditioner.embedders.0.transformer.text_model."
SDXL_OPEN_CLIP_PREFIX = "conditioner.embedders.1.model."

_UNET_FIXED = {
    "time_embedding.linear_1": "time_embed.0",
    "time_embedding.linear_2": "time_embed.2",
    "conv_in": "input_blocks.0.0",
    "conv_norm_out": "out.0",
    "conv_out": "out.2",
    "add_embedding.linear_1": "label_emb.0.0",  # SDXL's micro-conditioning embedding
    "add_embedding.linear_2": "label_emb.0.2",
}
_RESNET = [
    ("norm1", "in_layers.0"),
    ("conv1", "in_layers.2"),
    ("norm2", "out_layers.0"),
    ("conv2", "out_layers.3"),
    ("time_emb_proj", "emb_layers.1"),
    ("conv_shortcut", "skip_connection"),
]
_VAE_ATTN = [("group_norm", "norm"), ("to_q", "q"), ("to_k", "k"), ("to_v", "v"), ("to_out.0", "proj_out")]


def _resnet(rest: str) -> str:
    head, _, tail = rest.partition(".")
    for new, old in _RESNET:
        if head == new:
            return f"{old}.{tail}"
    return rest


def unet_to_ldm(state: dict[str, torch.Tensor], config: dict[str, Any]) -> dict[str, torch.Tensor]:
    """UNet2DConditionModel state dict → ``model.diffusion_model.*`` keys."""
    per = config["layers_per_block"] + 1
    up_has_attn = [t.startswith("CrossAttn") for t in config["up_block_types"]]
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        new = None
        for src, dst in _UNET_FIXED.items():
            if key.startswith(src + "."):
                new = dst + key[len(src) :]
        if m := re.match(r"down_blocks\.(\d+)\.(resnets|attentions)\.(\d+)\.(.*)", key):
            b, kind, j, rest = int(m[1]), m[2], int(m[3]), m[4]
            idx = 1 + b * per + j
            new = f"input_blocks.{idx}.0.{_resnet(rest)}" if kind == "resnets" else f"input_blocks.{idx}.1.{rest}"
        elif m := re.match(r"down_blocks\.(\d+)\.downsamplers\.0\.conv\.(.*)", key):
            new = f"input_blocks.{(int(m[1]) + 1) * per}.0.op.{m[2]}"
        elif m := re.match(r"mid_block\.resnets\.(\d+)\.(.*)", key):
            new = f"middle_block.{2 * int(m[1])}.{_resnet(m[2])}"
        elif m := re.match(r"mid_block\.attentions\.0\.(.*)", key):
            new = f"middle_block.1.{m[1]}"
        elif m := re.match(r"up_blocks\.(\d+)\.(resnets|attentions)\.(\d+)\.(.*)", key):
            b, kind, j, rest = int(m[1]), m[2], int(m[3]), m[4]
            idx = b * per + j
            new = f"output_blocks.{idx}.0.{_resnet(rest)}" if kind == "resnets" else f"output_blocks.{idx}.1.{rest}"
        elif m := re.match(r"up_blocks\.(\d+)\.upsamplers\.0\.conv\.(.*)", key):
            b = int(m[1])
            new = f"output_blocks.{b * per + per - 1}.{2 if up_has_attn[b] else 1}.conv.{m[2]}"
        if new is None:
            raise KeyError(f"no ldm name for UNet key {key}")
        out[UNET_PREFIX + new] = value
    return out


def vae_to_ldm(state: dict[str, torch.Tensor], config: dict[str, Any]) -> dict[str, torch.Tensor]:
    """AutoencoderKL state dict → ``first_stage_model.*`` keys (attention as 1x1 convs, like ldm)."""
    n = len(config["up_block_types"])
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        new = key.replace("conv_norm_out", "norm_out")
        if m := re.match(r"encoder\.down_blocks\.(\d+)\.resnets\.(\d+)\.(.*)", key):
            new = f"encoder.down.{m[1]}.block.{m[2]}.{m[3]}"
        elif m := re.match(r"encoder\.down_blocks\.(\d+)\.downsamplers\.0\.(.*)", key):
            new = f"encoder.down.{m[1]}.downsample.{m[2]}"
        elif m := re.match(r"decoder\.up_blocks\.(\d+)\.resnets\.(\d+)\.(.*)", key):
            new = f"decoder.up.{n - 1 - int(m[1])}.block.{m[2]}.{m[3]}"
        elif m := re.match(r"decoder\.up_blocks\.(\d+)\.upsamplers\.0\.(.*)", key):
            new = f"decoder.up.{n - 1 - int(m[1])}.upsample.{m[2]}"
        elif m := re.match(r"(encoder|decoder)\.mid_block\.resnets\.(\d+)\.(.*)", key):
            new = f"{m[1]}.mid.block_{int(m[2]) + 1}.{m[3]}"
        elif m := re.match(r"(encoder|decoder)\.mid_block\.attentions\.0\.(.*)", key):
            rest = m[2]
            for src, dst in _VAE_ATTN:
                if rest.startswith(src + "."):
                    rest = dst + rest[len(src) :]
            new = f"{m[1]}.mid.attn_1.{rest}"
            if value.ndim == 2:
                value = value[:, :, None, None]
        new = new.replace("conv_shortcut", "nin_shortcut")
        out[VAE_PREFIX + new] = value
    return out


def clip_to_ldm(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """CLIPTextModel state dict → ``cond_stage_model.transformer.text_model.*`` keys."""
    return {CLIP_PREFIX + k.removeprefix("text_model."): v for k, v in state.items()}


def sdxl_clip_to_ldm(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """SDXL's first text encoder (CLIPTextModel) → ``conditioner.embedders.0.transformer.text_model.*``."""
    return {SDXL_CLIP_PREFIX + k.removeprefix("text_model."): v for k, v in state.items()}


_OPEN_CLIP_LAYER = [
    ("layer_norm1", "ln_1"),
    ("layer_norm2", "ln_2"),
    ("mlp.fc1", "mlp.c_fc"),
    ("mlp.fc2", "mlp.c_proj"),
    ("self_attn.out_proj", "attn.out_proj"),
]


def open_clip_to_ldm(state: dict[str, torch.Tensor], prefix: str = SDXL_OPEN_CLIP_PREFIX) -> dict[str, torch.Tensor]:
    """CLIPTextModelWithProjection → OpenCLIP keys (``transformer.resblocks.N``, fused ``in_proj``)."""
    out: dict[str, torch.Tensor] = {}
    fixed = {
        "text_model.embeddings.position_embedding.weight": "positional_embedding",
        "text_model.embeddings.token_embedding.weight": "token_embedding.weight",
        "text_model.final_layer_norm.weight": "ln_final.weight",
        "text_model.final_layer_norm.bias": "ln_final.bias",
    }
    for key, value in state.items():
        if key in fixed:
            out[prefix + fixed[key]] = value
        elif key == "text_projection.weight":
            out[prefix + "text_projection"] = value.T.contiguous()
        elif m := re.match(r"text_model\.encoder\.layers\.(\d+)\.self_attn\.([qkv])_proj\.(weight|bias)", key):
            if m[2] != "q":
                continue  # fused below, once per layer and parameter
            base = f"text_model.encoder.layers.{m[1]}.self_attn"
            parts = [state[f"{base}.{p}_proj.{m[3]}"] for p in "qkv"]
            out[f"{prefix}transformer.resblocks.{m[1]}.attn.in_proj_{m[3]}"] = torch.cat(parts)
        elif m := re.match(r"text_model\.encoder\.layers\.(\d+)\.(.*)", key):
            rest = m[2]
            for src, dst in _OPEN_CLIP_LAYER:
                if rest.startswith(src + "."):
                    rest = dst + rest[len(src) :]
            out[f"{prefix}transformer.resblocks.{m[1]}.{rest}"] = value
        elif key != "text_model.embeddings.position_ids":
            raise KeyError(f"no OpenCLIP name for text encoder key {key}")
    return out
