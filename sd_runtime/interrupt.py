"""An interrupt that stops a render within bounded time, even inside one denoising step or the VAE decode.

The step callback alone is not enough: it runs *between* steps, so one step of a large
batch (minutes on a CPU, seconds on a GPU) and the final VAE decode of every image run to
the end whatever the caller asked. An interrupt has two phases:

1. *soft* (at once): the step callback ends the denoising loop and the pipeline decodes what
   it has — A1111's behaviour, a partial result;
2. *hard* (``grace_s`` later, if the work is still running): forward pre-hooks on the UNet's
   and the VAE's blocks raise :class:`Interrupted`, so the render stops within one block's
   compute; the images finished before are kept.

Hooks sit on the blocks (ResNet and transformer blocks: a few dozen per UNet call), not on
every layer, so their cost is negligible next to the compute they guard.
"""

from __future__ import annotations

import threading
import time
from typing import Any

HOOKED_BLOCKS = frozenset({"ResnetBlock2D", "Transformer2DModel", "BasicTransformerBlock", "Attention"})
"""Module classes whose forward is a checkpoint: each is a bounded slice of a step or of the decode."""

DEFAULT_GRACE_S = 2.0
"""How long a soft interrupt may keep working (to decode a partial result) before the hard stop."""


class Interrupted(Exception):  # noqa: N818 (a signal, not an error)
    """Raised inside the model when an interrupt's grace is over."""


class InterruptSignal:
    """A ``threading.Event`` that also knows when it was set, for the hard phase."""

    def __init__(self, grace_s: float = DEFAULT_GRACE_S) -> None:
        self.grace_s = grace_s
        self._event = threading.Event()
        self._set_at = 0.0

    def set(self) -> None:
        if not self._event.is_set():
            self._set_at = time.monotonic()
        self._event.set()

    def clear(self) -> None:
        self._event.clear()

    def is_set(self) -> bool:
        return self._event.is_set()

    def overdue(self) -> bool:
        """Set, and longer ago than the grace: stop now, partial result or not."""
        return self._event.is_set() and time.monotonic() - self._set_at >= self.grace_s

    def check(self) -> None:
        if self.overdue():
            raise Interrupted


def install_hooks(models: list[Any], signal: InterruptSignal) -> int:
    """Put a hard-stop checkpoint before every block of ``models`` (torch modules); returns how many."""
    count = 0

    def checkpoint(_module: Any, _args: Any) -> None:
        signal.check()

    for model in models:
        for module in model.modules():
            if type(module).__name__ in HOOKED_BLOCKS:
                module.register_forward_pre_hook(checkpoint)
                count += 1
    return count


MAX_SCORES_PER_CALL = 2**28
"""Attention scores (batch × heads × queries × keys) per SDPA call: a 512² SD 1.5 image with CFG is one call;
a 2048² batch (65,536 queries and keys: minutes on a CPU as one call) is split with a checkpoint between parts.
The split depends on the shapes only, so a given request always renders the same pixels."""


class InterruptibleAttnProcessor:
    """diffusers' ``AttnProcessor2_0`` (SDPA) with big attentions split by query rows, a checkpoint between parts.

    Attention rows are independent, so the result is the same; up to :data:`MAX_SCORES_PER_CALL`
    it is the very same single SDPA call. Without the split, one self-attention over a large
    latent is a single operation no hook can interrupt.
    """

    def __init__(self, signal: InterruptSignal, max_scores: int = MAX_SCORES_PER_CALL) -> None:
        self.signal = signal
        self.max_scores = max_scores

    def __call__(
        self,
        attn: Any,
        hidden_states: Any,
        encoder_hidden_states: Any = None,
        attention_mask: Any = None,
        temb: Any = None,
        *args: Any,
        **kwargs: Any,
    ) -> Any:
        import torch.nn.functional as F  # noqa: N812

        residual = hidden_states
        if attn.spatial_norm is not None:
            hidden_states = attn.spatial_norm(hidden_states, temb)
        input_ndim = hidden_states.ndim
        if input_ndim == 4:
            batch_size, channel, height, width = hidden_states.shape
            hidden_states = hidden_states.view(batch_size, channel, height * width).transpose(1, 2)
        batch_size, sequence_length, _ = (
            hidden_states.shape if encoder_hidden_states is None else encoder_hidden_states.shape
        )
        if attention_mask is not None:
            attention_mask = attn.prepare_attention_mask(attention_mask, sequence_length, batch_size)
            attention_mask = attention_mask.view(batch_size, attn.heads, -1, attention_mask.shape[-1])
        if attn.group_norm is not None:
            hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)
        query = attn.to_q(hidden_states)
        if encoder_hidden_states is None:
            encoder_hidden_states = hidden_states
        elif attn.norm_cross:
            encoder_hidden_states = attn.norm_encoder_hidden_states(encoder_hidden_states)
        key = attn.to_k(encoder_hidden_states)
        value = attn.to_v(encoder_hidden_states)
        head_dim = key.shape[-1] // attn.heads
        query = query.view(batch_size, -1, attn.heads, head_dim).transpose(1, 2)
        key = key.view(batch_size, -1, attn.heads, head_dim).transpose(1, 2)
        value = value.view(batch_size, -1, attn.heads, head_dim).transpose(1, 2)
        if attn.norm_q is not None:
            query = attn.norm_q(query)
        if attn.norm_k is not None:
            key = attn.norm_k(key)

        def sdpa(start: int, stop: int) -> Any:
            mask = attention_mask
            if mask is not None and mask.shape[-2] > 1:
                mask = mask[..., start:stop, :]
            return F.scaled_dot_product_attention(
                query[:, :, start:stop], key, value, attn_mask=mask, dropout_p=0.0, is_causal=False
            )

        rows = query.shape[2]
        step = max(1, self.max_scores // (query.shape[0] * query.shape[1] * key.shape[2]))
        if rows <= step:
            hidden_states = sdpa(0, rows)
        else:
            import torch

            parts = []
            for start in range(0, rows, step):
                self.signal.check()
                parts.append(sdpa(start, min(rows, start + step)))
            hidden_states = torch.cat(parts, dim=2)
        hidden_states = hidden_states.transpose(1, 2).reshape(batch_size, -1, attn.heads * head_dim)
        hidden_states = hidden_states.to(query.dtype)
        hidden_states = attn.to_out[0](hidden_states)
        hidden_states = attn.to_out[1](hidden_states)
        if input_ndim == 4:
            hidden_states = hidden_states.transpose(-1, -2).reshape(batch_size, channel, height, width)
        if attn.residual_connection:
            hidden_states = hidden_states + residual
        return hidden_states / attn.rescale_output_factor
