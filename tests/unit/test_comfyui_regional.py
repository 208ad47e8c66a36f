"""Area weights of combined conditioning, as ComfyUI's ``get_area_and_mult`` computes them."""

from __future__ import annotations

import torch

from sd_runtime.comfyui.regional import _weights


def test_inner_edges_fade_and_image_borders_do_not():
    x = torch.zeros(1, 4, 16, 32)
    (ys, xs), mult = _weights(x, (16, 16, 0, 16), 2.0)  # the right half, full height
    assert (ys, xs) == (slice(0, 16), slice(16, 32))
    row = mult[0, 0, 8]
    assert torch.allclose(row[:4], 2.0 * torch.tensor([0.25, 0.5, 0.75, 1.0]))  # rr = min(8, 16 // 4)
    assert torch.all(row[4:] == 2.0)  # the image border on the right is not faded
    assert torch.all(mult[0, 0, :, 8] == 2.0)  # nor the top and bottom borders


def test_area_is_clipped_to_the_latent_and_empty_beyond_it():
    x = torch.zeros(1, 4, 8, 8)
    (ys, xs), mult = _weights(x, (8, 8, 4, 4), 1.0)
    assert (ys, xs) == (slice(4, 8), slice(4, 8)) and mult.shape == (1, 1, 4, 4)
    assert _weights(x, (8, 8, 0, 8), 1.0)[1] is None
    (ys, xs), mult = _weights(x, None, 0.5)  # no area: the whole latent, no fade
    assert (ys, xs) == (slice(0, 8), slice(0, 8)) and torch.all(mult == 0.5)
