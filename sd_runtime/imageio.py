"""The runtime's one image codec: base64 / data URI ⇄ bytes ⇄ PIL, format detection by Pillow.

Both dialects use it: A1111's inline ``init_images`` / ``mask`` / ``image``,
ComfyUI's uploads, ``LoadImage`` values and ``/view`` answers. Parsing the
reference (bare base64 or ``data:image/...;base64,``, URL or not) is the
contract's :func:`sdeks.contract.parse_image_ref`, the same one the API front
door validates with; this module adds what only the runtime needs: decoding
with bounded sizes, format sniffing and PNG encoding with text chunks.
"""

from __future__ import annotations

import base64
import io

from PIL import Image, PngImagePlugin

from sd_runtime.errors import InvalidImageError
from sdeks.contract import parse_image_ref

MAX_INPUT_PIXELS = 4096 * 4096
"""Larger inputs are refused (and PIL's decompression-bomb guard is set to the same bound)."""

FORMATS = {"PNG": "image/png", "JPEG": "image/jpeg", "WEBP": "image/webp"}
"""Formats accepted as input, with their media types."""

Image.MAX_IMAGE_PIXELS = MAX_INPUT_PIXELS

_DECODE_ERRORS = (Image.DecompressionBombError, OSError, ValueError, SyntaxError)


def image_format(data: bytes) -> str | None:
    """``PNG`` / ``JPEG`` / ``WEBP`` when Pillow recognises ``data`` as one of them, else None (header only)."""
    try:
        with Image.open(io.BytesIO(data)) as img:
            fmt = img.format
    except _DECODE_ERRORS:
        return None
    return fmt if fmt in FORMATS else None


def media_type(data: bytes) -> str:
    """The ``Content-Type`` of stored image bytes (PNG when unknown: everything the runtime writes is PNG)."""
    return FORMATS.get(image_format(data) or "PNG", "image/png")


def inline_bytes(value: str) -> bytes | None:
    """The bytes of an inline base64 image (bare or data URI) in an accepted format, else None."""
    try:
        ref = parse_image_ref(value)
    except ValueError:
        return None
    if ref.kind != "base64":
        return None
    raw = ref.decode()
    return raw if image_format(raw) else None


def open_image(data: bytes, field: str, mode: str | None = "RGB") -> Image.Image:
    """Decode image bytes, bounded to :data:`MAX_INPUT_PIXELS`; :class:`InvalidImageError` names ``field``."""
    try:
        img = Image.open(io.BytesIO(data))
        if img.width * img.height > MAX_INPUT_PIXELS:
            raise InvalidImageError(field, f"image {img.width}x{img.height} exceeds {MAX_INPUT_PIXELS} pixels")
        img.load()
    except _DECODE_ERRORS as exc:
        raise InvalidImageError(field, f"not a decodable image ({exc.__class__.__name__})") from None
    return img.convert(mode) if mode else img


def decode_image(value: str, field: str, mode: str | None = "RGB") -> Image.Image:
    """Decode an inline base64 image; URLs are the queue agent's job, not the runtime's."""
    try:
        ref = parse_image_ref(value)
    except ValueError as exc:
        raise InvalidImageError(field, str(exc)) from None
    if ref.kind != "base64":
        raise InvalidImageError(
            field,
            f"the runtime accepts inline base64 images only, got a {ref.kind} URL "
            "(URLs are resolved by the queue agent before the runtime is called)",
        )
    return open_image(ref.decode(), field, mode)


def png_bytes(img: Image.Image, text: dict[str, str] | None = None, compress_level: int = 6) -> bytes:
    """PNG with ``text`` as tEXt chunks (A1111's ``parameters``, ComfyUI's ``prompt``)."""
    info = None
    if text:
        info = PngImagePlugin.PngInfo()
        for key, value in text.items():
            info.add_text(key, value)
    buf = io.BytesIO()
    img.save(buf, format="PNG", pnginfo=info, compress_level=compress_level)
    return buf.getvalue()


def encode_png(img: Image.Image, parameters: str | None = None) -> str:
    """PNG as base64, with the A1111 ``parameters`` text chunk when given."""
    data = png_bytes(img, {"parameters": parameters} if parameters else None)
    return base64.b64encode(data).decode("ascii")
