"""The interruptible attention renders what diffusers' SDPA processor renders, split or not, and stops when told."""

from __future__ import annotations

import time

import pytest

torch = pytest.importorskip("torch")

from diffusers.models.attention_processor import Attention, AttnProcessor2_0  # noqa: E402

from sd_runtime.interrupt import Interrupted, InterruptibleAttnProcessor, InterruptSignal  # noqa: E402


@pytest.mark.parametrize("cross", [False, True])
def test_split_attention_equals_sdpa(cross):
    torch.manual_seed(0)
    attn = Attention(query_dim=32, cross_attention_dim=16 if cross else None, heads=4, dim_head=8).eval()
    hidden = torch.randn(2, 300, 32)
    context = torch.randn(2, 7, 16) if cross else None
    with torch.inference_mode():
        expected = AttnProcessor2_0()(attn, hidden, context)
        whole = InterruptibleAttnProcessor(InterruptSignal())(attn, hidden, context)
        split = InterruptibleAttnProcessor(InterruptSignal(), max_scores=2 * 4 * 300 * 7)(attn, hidden, context)
    assert torch.equal(whole, expected)
    assert torch.allclose(split, expected, atol=1e-6)


def test_hard_stop_after_the_grace_only():
    signal = InterruptSignal(grace_s=1.0)
    attn = Attention(query_dim=32, heads=4, dim_head=8).eval()
    processor = InterruptibleAttnProcessor(signal, max_scores=1)
    hidden = torch.randn(1, 50, 32)
    signal.set()
    with torch.inference_mode():
        processor(attn, hidden)  # soft phase: the work may finish (a partial result is decoded)
        time.sleep(1.05)
        with pytest.raises(Interrupted):
            processor(attn, hidden)
    signal.clear()
    assert not signal.overdue()
