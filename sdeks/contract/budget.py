"""The work a task asks of a GPU, in megapixel-steps, so the front door can refuse what no runtime should start.

Denoising cost grows with pixels × steps × images; a task inside every per-field bound
(2048², 150 steps, 16 images) can still ask for ~10,000 megapixel-steps, which is hours
on one GPU and more memory than it has. One number per runtime (config ``max_work``)
bounds it; the default fits a typical GPU's throughput (~3 megapixel-steps/s for SD 1.5
at 512² and SDXL at 1024² on an A10G) within the default task timeout (300 s).
"""

from __future__ import annotations

from pydantic import BaseModel

from sdeks.contract.content import Img2ImgContent, Txt2ImgContent

DEFAULT_MAX_WORK = 800.0
"""Megapixel-steps per task when the config does not say: 512²×20 steps×16 images is 84, 1024²×50×8 is 419."""


def denoising_steps(content: Txt2ImgContent) -> int:
    """Steps the sampler runs: img2img runs ``int(steps × denoising_strength)`` (at least 1), as A1111 does."""
    if isinstance(content, Img2ImgContent):
        return max(1, int(content.steps * max(content.denoising_strength, 1.0 / content.steps)))
    return content.steps


def task_work(content: BaseModel) -> float | None:
    """Megapixel-steps of a generation task (width × height × steps × batch_size × n_iter / 10⁶); None for others.

    Upscaling (extras) runs no denoising steps and ComfyUI workflows are bounded by the node
    count and the task timeout instead.
    """
    if not isinstance(content, Txt2ImgContent):
        return None
    images = content.batch_size * content.n_iter
    return content.width * content.height * denoising_steps(content) * images / 1e6
