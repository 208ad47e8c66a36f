"""Base64 ⇄ PIL for the HTTP layers: strict decoding, bounded sizes, A1111-style PNG metadata."""

from __future__ import annotations

import base64
import io

from PIL import Image, PngImagePlugin

from sdeks.contract import parse_image_ref
from sdeks.contract.images import strip_data_uri

MAX_INPUT_PIXELS = 4096 * 4096
"""Larger inputs are refused (and PIL's decompression-bomb guard is set to the same bound)."""

Image.MAX_IMAGE_PIXELS = MAX_INPUT_PIXELS


class ImageInputError(ValueError):
    """An input image the runtime cannot use; ``field`` names where it came from."""

    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}")
        self.field, self.message = field, message


def decode_image(value: str, field: str, mode: str = "RGB") -> Image.Image:
    """Decode an inline base64 image; URLs are the queue agent's job, not the runtime's."""
    try:
        ref = parse_image_ref(value)
    except ValueError as exc:
        raise ImageInputError(field, str(exc)) from None
    if ref.kind != "base64":
        raise ImageInputError(
            field,
            f"the runtime accepts inline base64 images only, got a {ref.kind} URL "
            "(URLs are resolved by the queue agent before the runtime is called)",
        )
    raw = base64.b64decode(strip_data_uri(value))
    try:
        img = Image.open(io.BytesIO(raw))
        if img.width * img.height > MAX_INPUT_PIXELS:
            raise ImageInputError(field, f"image {img.width}x{img.height} exceeds {MAX_INPUT_PIXELS} pixels")
        img.load()
    except ImageInputError:
        raise
    except (Image.DecompressionBombError, OSError, ValueError, SyntaxError) as exc:
        raise ImageInputError(field, f"not a decodable image ({exc.__class__.__name__})") from None
    return img.convert(mode)


def encode_png(img: Image.Image, parameters: str | None = None) -> str:
    """PNG as base64, with the A1111 ``parameters`` text chunk when given."""
    buf = io.BytesIO()
    info = None
    if parameters:
        info = PngImagePlugin.PngInfo()
        info.add_text("parameters", parameters)
    img.save(buf, format="PNG", pnginfo=info)
    return base64.b64encode(buf.getvalue()).decode("ascii")
