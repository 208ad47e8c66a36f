"""sdeks: asynchronous Stable Diffusion inference on AWS, runnable on one machine."""

__version__ = "0.1.0"
