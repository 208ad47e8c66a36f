"""Model upscalers (ESRGAN family and whatever else spandrel recognises) from the models dir.

Files: ``*.safetensors`` and ``*.pth`` in the models dir's ``ESRGAN/``, ``RealESRGAN/``
(A1111's folders) and ``upscale_models/`` (ComfyUI's). Architecture and scale are read
from the tensors by spandrel (the loader ComfyUI uses), so no network is hand-written
here. ``.pth`` files are read with ``torch.load(weights_only=True)``: tensors and plain
containers only, never arbitrary pickled objects.

Names are A1111's: the RealESRGAN downloads A1111 knows by URL keep A1111's names
(``RealESRGAN_x4plus`` → ``R-ESRGAN 4x+``), any other file is listed by its stem. A
request may also name a file by its path under its folder, as ComfyUI lists it.

Inference is tiled (overlapping tiles blended with a feathered mask, as ComfyUI's
``tiled_scale``), so memory is bounded by the tile size, not by the image size; it runs
on the caller's thread (the engine's worker) and can stop between tiles.
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sd_runtime import named_files
from sd_runtime.errors import InvalidInputError, TooLargeError
from sd_runtime.interrupt import Interrupted
from sd_runtime.named_files import NamedFile
from sdeks.contract import ErrorCode

log = logging.getLogger("sd_runtime.upscale_models")

FOLDERS = ("ESRGAN", "RealESRGAN", "upscale_models")
SUFFIXES = (".safetensors", ".pth")
MAX_FILES = 256
"""Files listed at most (across the folders): a listing stays cheap whatever is mounted."""
MAX_FILE_BYTES = 2 * 1024**3
"""Largest upscaler file loaded (the biggest common ones, HAT-L and DAT, are under 200 MB)."""

A1111_NAMES = {
    "RealESRGAN_x4plus": "R-ESRGAN 4x+",
    "RealESRGAN_x4plus_anime_6B": "R-ESRGAN 4x+ Anime6B",
    "RealESRGAN_x2plus": "R-ESRGAN 2x+",
    "realesr-general-x4v3": "R-ESRGAN General 4xV3",
    "realesr-general-wdn-x4v3": "R-ESRGAN General WDN 4xV3",
    "realesr-animevideov3": "R-ESRGAN AnimeVideo",
}
"""File stem → the name A1111's RealESRGAN upscaler gives it (modules/realesrgan_model.py)."""
TILE = 192
OVERLAP = 8
"""A1111's defaults for its ``ESRGAN_tile`` / ``ESRGAN_tile_overlap`` options (input pixels)."""
MAX_TILE = 512
MAX_OVERLAP = 48
"""A1111's bounds for those options; tile 0 runs the whole image in one call."""


class InvalidUpscalerError(InvalidInputError):
    """A file is listed but spandrel cannot load it (unknown architecture, not a state dict, too large)."""

    code = ErrorCode.INVALID_UPSCALER


@dataclass(frozen=True)
class UpscalerFile:
    """One model upscaler: ``name`` as A1111 lists it, ``file`` as ComfyUI does (path under its folder)."""

    name: str
    file: NamedFile

    @property
    def names(self) -> tuple[str, str, str]:
        """Every name a request may use for it: A1111's, the stem, the path under the folder."""
        return (self.name, self.file.name, self.file.file)


def discover(models_dir: Path | None) -> list[UpscalerFile]:
    """The upscaler files of the three folders (first one wins on a repeated name), at most ``MAX_FILES``."""
    found: dict[str, UpscalerFile] = {}
    for folder in FOLDERS:
        for f in named_files.discover(models_dir, folder, SUFFIXES):
            name = A1111_NAMES.get(f.name, f.name)
            found.setdefault(name, UpscalerFile(name=name, file=f))
            if len(found) >= MAX_FILES:
                log.warning("more than %d upscaler files; the rest are not listed", MAX_FILES)
                return list(found.values())
    return list(found.values())


def find(name: str, known: list[UpscalerFile]) -> UpscalerFile | None:
    return next((u for u in known if name in u.names), None)


def read_state_dict(path: Path) -> dict[str, Any]:
    """The file's tensors, with no code execution: safetensors, or a ``weights_only`` torch.load."""
    import torch
    from safetensors.torch import load_file
    from spandrel import canonicalize_state_dict

    if path.suffix == ".safetensors":
        state = load_file(str(path), device="cpu")
    else:
        state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, dict):
        raise ValueError("not a state dict")
    return canonicalize_state_dict(state)


@dataclass
class Loaded:
    """A loaded upscaler: spandrel's descriptor and what the listing reports."""

    ref: UpscalerFile
    key: tuple[str, int, int]
    model: Any  # spandrel.ImageModelDescriptor
    scale: int
    architecture: str


def _file_key(ref: UpscalerFile) -> tuple[str, int, int]:
    """Identifies one version of the file; a file gone since it was listed is a 422 naming it."""
    try:
        st = ref.file.path.stat()
    except OSError:
        raise InvalidUpscalerError(f"upscaler {ref.name!r}: its file is gone", {"upscaler": ref.name}) from None
    return (str(ref.file.path), st.st_size, st.st_mtime_ns)


class UpscaleModels:
    """Discovery, loading (the last model used stays loaded) and the tile settings of A1111's options.

    ``load`` belongs on the engine's worker thread (so does the inference that follows);
    ``describe`` (the listing) may run anywhere: it reads a file once per version and keeps
    only its scale and architecture.
    """

    def __init__(self, models_dir: Path | None, device: str, dtype: Any):
        self.models_dir = models_dir
        self.device, self.dtype = device, dtype
        self.tile, self.overlap = TILE, OVERLAP
        self._loaded: Loaded | None = None
        self._described: dict[tuple[str, int, int], tuple[int | None, str | None]] = {}
        self._lock = threading.Lock()

    def discover(self) -> list[UpscalerFile]:
        return discover(self.models_dir)

    def _build(self, ref: UpscalerFile) -> Any:
        """spandrel's descriptor for the file, on the CPU; :class:`InvalidUpscalerError` naming it otherwise."""
        from spandrel import ImageModelDescriptor, ModelLoader

        size = _file_key(ref)[1]
        if size > MAX_FILE_BYTES:
            raise InvalidUpscalerError(
                f"upscaler {ref.name!r}: file is {size} bytes, more than the {MAX_FILE_BYTES} this runtime loads",
                {"upscaler": ref.name},
            )
        try:
            model = ModelLoader("cpu").load_from_state_dict(read_state_dict(ref.file.path))
        except Exception as exc:  # any failure to read or detect is the same answer to the user
            log.warning("cannot load upscaler %s: %s: %s", ref.file.file, type(exc).__name__, str(exc)[:300])
            raise InvalidUpscalerError(
                f"upscaler {ref.name!r} ({ref.file.folder}/{ref.file.file}) cannot be loaded: "
                f"{type(exc).__name__} (not an architecture spandrel recognises, or not a weights-only file)",
                {"upscaler": ref.name},
            ) from None
        if not isinstance(model, ImageModelDescriptor) or model.purpose not in ("SR", "Restoration"):
            raise InvalidUpscalerError(
                f"upscaler {ref.name!r} is a {model.architecture.name} {model.purpose} model, not an image upscaler",
                {"upscaler": ref.name},
            )
        if model.input_channels != 3 or model.output_channels != 3:
            raise InvalidUpscalerError(f"upscaler {ref.name!r} is not an RGB model", {"upscaler": ref.name})
        return model

    def describe(self, ref: UpscalerFile) -> tuple[int | None, str | None]:
        """(scale, architecture) of a file, None for a file that cannot be loaded; cached per file version."""
        try:
            key = _file_key(ref)
        except InvalidUpscalerError:  # removed since it was listed
            return (None, None)
        with self._lock:
            if key in self._described:
                return self._described[key]
        try:
            model = self._build(ref)
            out: tuple[int | None, str | None] = (model.scale, model.architecture.name)
        except InvalidUpscalerError:
            out = (None, None)
        self._remember(key, out)
        return out

    def _remember(self, key: tuple[str, int, int], described: tuple[int | None, str | None]) -> None:
        with self._lock:
            if len(self._described) >= 4 * MAX_FILES:  # files replaced over and over: start afresh
                self._described.clear()
            self._described[key] = described

    def load(self, ref: UpscalerFile) -> Loaded:
        """Worker thread only: the model on the engine's device (fp16 on CUDA where it supports it)."""
        import torch

        key = _file_key(ref)
        if self._loaded is not None and self._loaded.key == key:
            return self._loaded
        self._loaded = None  # the previous model goes before the next one is read
        model = self._build(ref)
        half = self.dtype == torch.float16 and model.supports_half
        model = model.to(self.device).eval()
        if half:
            model = model.half()
        self._loaded = Loaded(ref=ref, key=key, model=model, scale=model.scale, architecture=model.architecture.name)
        self._remember(key, (model.scale, model.architecture.name))
        return self._loaded


@dataclass
class TileStats:
    """How an image was processed: the number of model calls and the tile size used (0: whole image)."""

    tiles: int = 0
    tile: int = 0


def tiled_scale(
    model: Any,
    image: Any,
    tile: int,
    overlap: int,
    should_stop: Callable[[], bool] | None = None,
    stats: TileStats | None = None,
) -> Any:
    """``model`` over ``image`` ([1, 3, H, W] in 0..1 on the model's device) tile by tile.

    Tiles of ``tile``×``tile`` input pixels overlap by ``overlap``; each output tile is
    weighted by a mask that ramps up over the overlap, and the sum is divided by the
    summed weights (ComfyUI's ``tiled_scale``), so seams are blended away. ``tile`` 0, an
    image that fits one tile, or a model spandrel says tiles internally, runs in one call.
    ``should_stop`` is checked between tiles; when it answers True, :class:`Interrupted` is raised.
    """
    import torch
    from spandrel import ModelTiling

    stats = stats if stats is not None else TileStats()
    _, _, h, w = image.shape
    internal = getattr(model, "tiling", None) == ModelTiling.INTERNAL  # the model tiles by itself
    if tile <= 0 or internal or (h <= tile and w <= tile):
        stats.tiles, stats.tile = stats.tiles + 1, 0
        return model(image)
    overlap = max(0, min(overlap, tile // 2))
    step = tile - overlap
    ys = _starts(h, tile, step)
    xs = _starts(w, tile, step)
    scale = model.scale
    out = torch.zeros((1, 3, h * scale, w * scale), dtype=torch.float32, device=image.device)
    weight = torch.zeros((1, 1, h * scale, w * scale), dtype=torch.float32, device=image.device)
    feather = overlap * scale
    for y in ys:
        for x in xs:
            if should_stop is not None and should_stop():
                raise Interrupted()
            piece = model(image[:, :, y : y + tile, x : x + tile]).float()
            mask = _ramp(piece.shape[2], feather, image.device)[:, None] * _ramp(piece.shape[3], feather, image.device)
            oy, ox = y * scale, x * scale
            out[:, :, oy : oy + piece.shape[2], ox : ox + piece.shape[3]] += piece * mask
            weight[:, :, oy : oy + piece.shape[2], ox : ox + piece.shape[3]] += mask
            stats.tiles += 1
    stats.tile = tile
    return (out / weight).to(image.dtype)


def _ramp(n: int, feather: int, device: Any) -> Any:
    """Weights along one side of a tile: rising as (t + 1) / feather over ``feather`` pixels at both ends, never 0."""
    import torch

    r = torch.ones(n, dtype=torch.float32, device=device)
    if feather > 0:
        k = torch.arange(1, feather + 1, dtype=torch.float32, device=device)[:n] / feather
        r[: len(k)] *= k
        r[n - len(k) :] *= k.flip(0)
    return r


def _starts(size: int, tile: int, step: int) -> list[int]:
    """Tile origins covering ``0..size``: every ``step``, the last one flush with the end."""
    if size <= tile:
        return [0]
    count = math.ceil((size - tile) / step) + 1
    return sorted({min(i * step, size - tile) for i in range(count)})


def upscale_image(
    loaded: Loaded,
    img: Any,
    tile: int,
    overlap: int,
    should_stop: Callable[[], bool] | None = None,
    stats: TileStats | None = None,
    max_pixels: int | None = None,
) -> Any:
    """One pass of the model over a PIL image: a PIL image ``scale`` times larger (RGB)."""
    import numpy as np
    import torch
    from PIL import Image

    w, h = img.size
    if max_pixels is not None and w * h * loaded.scale**2 > max_pixels:
        raise TooLargeError(
            f"{loaded.ref.name!r} would make a {w * loaded.scale}x{h * loaded.scale} image, "
            f"more than {max_pixels} pixels"
        )
    model = loaded.model
    arr = np.asarray(img.convert("RGB"), dtype=np.float32) / 255.0
    x = torch.from_numpy(arr).permute(2, 0, 1)[None].to(device=model.device, dtype=model.dtype)
    with torch.inference_mode():
        y = tiled_scale(model, x, tile, overlap, should_stop, stats)
    out = (y[0].float().clamp(0, 1).permute(1, 2, 0).cpu().numpy() * 255.0).round().astype(np.uint8)
    return Image.fromarray(out)
