"""``VAELoader``: a VAE file from the models dir's ``VAE/`` folder, as A1111's ``sd_vae`` (:mod:`sd_runtime.vae`).

The file is read into a VAE built with the loaded checkpoint's VAE config (architecture,
``scaling_factor``), in the original (ldm) or diffusers layout; a file that does not fit
that config fails the node naming it. ComfyUI instead guesses the architecture from the
file, so a VAE of another model family (an SDXL VAE with an SD 1.x checkpoint) works
there and fails here.
"""

from __future__ import annotations

from typing import Any

from sd_runtime import named_files, vae
from sd_runtime.comfyui.nodes import Context, NodeDef, NodeExecutionError, Vae, engine_pipes
from sd_runtime.errors import RuntimeApiError


def vae_choices(state: Any) -> list[str]:
    """VAE files under ``VAE/``, named as ComfyUI lists them (path under the folder)."""
    return [f.file for f in state.engine.vaes()]


def vae_loader(ctx: Context, vae_name: str) -> tuple:
    pipe = engine_pipes(ctx.engine)["txt2img"]
    try:
        file = vae.find(vae_name, ctx.engine.vaes(), "vae_name")
        if file is None:  # "Automatic" / "None" are A1111's names for the checkpoint's own
            raise NodeExecutionError(f"vae_name: {vae_name!r} is not a file in the models dir's VAE/ folder")
        loaded = vae.load(file, pipe.vae)
    except RuntimeApiError as exc:
        raise NodeExecutionError(exc.message) from None
    return (Vae(vae=loaded, scale_factor=int(pipe.vae_scale_factor)),)


def vae_file_changed(ctx: Context, inputs: dict[str, Any]) -> tuple[int, int] | None:
    """VAELoader's IS_CHANGED: the file's modification time and size (a replaced file is read again)."""
    found = named_files.find(str(inputs.get("vae_name")), ctx.engine.vaes())
    if found is None:
        return None
    stat = found.path.stat()
    return stat.st_mtime_ns, stat.st_size


NODE_DEFS = [
    NodeDef(
        "VAELoader",
        "Load VAE",
        "loaders",
        {"vae_name": (vae_choices, {"tooltip": "A VAE file in the models dir's VAE/ folder."})},
        ("VAE",),
        vae_loader,
        is_changed=vae_file_changed,
        description="Loads a VAE file (built with the loaded checkpoint's VAE config).",
    ),
]
