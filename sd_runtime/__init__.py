"""sd_runtime: an AUTOMATIC1111-compatible Stable Diffusion inference server on diffusers.

Layout (the engine is independent of any HTTP dialect, so a ComfyUI router can sit
next to the A1111 one on the same app):

- ``models``   find, name and load checkpoints (diffusers dirs or single ``.safetensors``)
- ``samplers`` A1111 sampler names → diffusers schedulers
- ``engine``   the single-worker inference engine (txt2img / img2img, progress, interrupt)
- ``upscale``  the built-in upscalers of the extras endpoints
- ``a1111``    the ``/sdapi/v1`` router
- ``app``      ``create_app`` (health, error handlers, startup model load)
- ``tiny``     the tiny random-weight model used by tests and local mode
- ``ldm``      diffusers → original SD (ldm) key layout, to write single-file checkpoints
"""

from pathlib import Path

CONFIGS_DIR = Path(__file__).parent / "configs"
"""Diffusers configs shipped in the repo so single-file checkpoints load without the hub."""
