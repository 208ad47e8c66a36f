"""sd_runtime: an AUTOMATIC1111-compatible Stable Diffusion inference server on diffusers.

Layout (the engine is independent of any HTTP dialect; the A1111 and ComfyUI routers
sit next to each other on the same app):

- ``models``   find, name and load checkpoints (diffusers dirs or single ``.safetensors``)
- ``samplers`` the scheduler factory of both dialects (A1111 and ComfyUI names → diffusers)
- ``engine``   the single-worker inference engine (txt2img / img2img, progress, interrupt)
- ``imageio``  the one image codec (base64 / data URI, format detection, PNG text chunks)
- ``upscale``  the built-in upscalers of the extras endpoints
- ``errors``   the one error type (a subclass per status) and the one exception handler
- ``a1111``    the ``/sdapi/v1`` router
- ``comfyui``  ComfyUI's API (routes, prompt queue, workflow graph, nodes)
- ``app``      ``create_app`` (health, error handler, startup model load)
- ``tiny``     the tiny random-weight model used by tests and local mode
- ``ldm``      diffusers → original SD (ldm) key layout, to write single-file checkpoints
"""

from pathlib import Path

CONFIGS_DIR = Path(__file__).parent / "configs"
"""Diffusers configs shipped in the repo so single-file checkpoints load without the hub."""
