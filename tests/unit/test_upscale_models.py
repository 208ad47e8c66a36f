"""Model upscaler discovery (names, folders, formats, bounds) and the tiling arithmetic."""

from __future__ import annotations

from pathlib import Path

import pytest

from sd_runtime import upscale_models as um
from sd_runtime.interrupt import Interrupted


def touch(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x")


def test_discovery_names_files_as_a1111_and_comfyui_do(tmp_path: Path) -> None:
    touch(tmp_path / "RealESRGAN" / "RealESRGAN_x4plus.pth")
    touch(tmp_path / "RealESRGAN" / "RealESRGAN_x4plus_anime_6B.safetensors")
    touch(tmp_path / "ESRGAN" / "4x-UltraSharp.pth")
    touch(tmp_path / "upscale_models" / "sub" / "4x_NMKD-Siax.safetensors")
    touch(tmp_path / "ESRGAN" / "old.ckpt")  # pickles other than weights-only .pth are never listed
    touch(tmp_path / "ESRGAN" / "notes.txt")
    touch(tmp_path / "ESRGAN" / ".hidden" / "x.pth")
    found = um.discover(tmp_path)
    names = {u.name: u for u in found}
    assert list(names) == ["4x-UltraSharp", "R-ESRGAN 4x+", "R-ESRGAN 4x+ Anime6B", "4x_NMKD-Siax"]
    assert names["4x_NMKD-Siax"].file.file == "sub/4x_NMKD-Siax.safetensors"
    # a request may use A1111's name, the stem or the path under the folder (ComfyUI)
    for alias in ("R-ESRGAN 4x+", "RealESRGAN_x4plus", "RealESRGAN_x4plus.pth"):
        assert um.find(alias, found) is names["R-ESRGAN 4x+"]
    assert um.find("../RealESRGAN/RealESRGAN_x4plus.pth", found) is None
    assert um.discover(None) == [] and um.discover(tmp_path / "missing") == []


def test_discovery_is_bounded_and_the_first_folder_wins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    touch(tmp_path / "ESRGAN" / "RealESRGAN_x4plus.safetensors")
    touch(tmp_path / "RealESRGAN" / "RealESRGAN_x4plus.pth")
    (only,) = um.discover(tmp_path)
    assert (only.name, only.file.folder) == ("R-ESRGAN 4x+", "ESRGAN")
    for i in range(5):
        touch(tmp_path / "upscale_models" / f"m{i}.pth")
    monkeypatch.setattr(um, "MAX_FILES", 3)
    assert len(um.discover(tmp_path)) == 3


class Nearest2x:
    """A pointwise 2x 'model': each output pixel depends on one input pixel, so tiles must match exactly."""

    scale = 2

    def __init__(self) -> None:
        self.calls: list[tuple[int, int]] = []

    def __call__(self, x: object) -> object:
        import torch

        self.calls.append((x.shape[2], x.shape[3]))
        return torch.nn.functional.interpolate(x, scale_factor=2, mode="nearest")


def test_tiles_cover_the_image_and_blend_to_the_untiled_result() -> None:
    import torch

    image = torch.rand((1, 3, 70, 45), generator=torch.Generator().manual_seed(0))
    model = Nearest2x()
    whole = um.tiled_scale(model, image, tile=0, overlap=0)
    stats = um.TileStats()
    tiled = um.tiled_scale(model, image, tile=32, overlap=8, stats=stats)
    assert tiled.shape == whole.shape == (1, 3, 140, 90)
    assert torch.allclose(tiled, whole, atol=1e-6)
    # rows start at 0, 24, 38 (the last flush with the end); columns at 0, 13
    assert (stats.tiles, stats.tile) == (6, 32)
    assert all(c == (32, 32) for c in model.calls[1:])
    small = um.TileStats()
    um.tiled_scale(model, image[:, :, :20, :20], tile=32, overlap=8, stats=small)
    assert (small.tiles, small.tile) == (1, 0)  # fits one tile: one call, reported as untiled


def test_tiling_stops_between_tiles_when_asked() -> None:
    import torch

    model = Nearest2x()
    with pytest.raises(Interrupted):
        um.tiled_scale(model, torch.zeros((1, 3, 64, 64)), 32, 8, should_stop=lambda: len(model.calls) >= 2)
    assert len(model.calls) == 2


def _spandrel_net(kind: str):  # -> torch.nn.Module
    """A tiny random network of a spandrel architecture other than ESRGAN."""
    from spandrel.architectures.Compact import Compact
    from spandrel.architectures.SCUNet import SCUNet
    from spandrel.architectures.SwinIR import SwinIR

    if kind == "SwinIR":
        # the layout of A1111's "SwinIR 4x" download (real-world SR: nearest+conv upsampler)
        return SwinIR(
            upscale=4, img_size=32, window_size=8, embed_dim=12, depths=[2], num_heads=[2], upsampler="nearest+conv"
        )
    if kind == "SCUNet":
        return SCUNet(in_nc=3, config=[1] * 7, dim=64)
    return Compact(num_in_ch=3, num_out_ch=3, num_feat=8, num_conv=2, upscale=4)


@pytest.mark.parametrize(
    ("kind", "arch", "scale"), [("SwinIR", "SwinIR", 4), ("SCUNet", "SCUNet", 1), ("Compact", "RealESRGAN Compact", 4)]
)
def test_other_spandrel_architectures_load_and_run_tiled(tmp_path: Path, kind: str, arch: str, scale: int) -> None:
    import torch
    from PIL import Image
    from safetensors.torch import save_file

    torch.manual_seed(0)
    state = {k: v.contiguous() for k, v in _spandrel_net(kind).state_dict().items()}
    (tmp_path / "ESRGAN").mkdir()
    save_file(state, str(tmp_path / "ESRGAN" / f"tiny-{kind}.safetensors"))
    models = um.UpscaleModels(tmp_path, "cpu", torch.float32)
    (ref,) = models.discover()
    assert models.describe(ref) == (scale, arch)
    stats = um.TileStats()
    out = um.upscale_image(models.load(ref), Image.new("RGB", (70, 45), "teal"), 48, 8, stats=stats)
    assert out.size == (70 * scale, 45 * scale) and stats.tiles == 2
