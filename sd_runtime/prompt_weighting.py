"""Prompt text → conditioning tensors, with A1111's / ComfyUI's attention weights and no 77-token limit.

Both dialects write ``(word:1.2)`` (weight 1.2), ``(word)`` (×1.1, nested brackets
multiply) and ``\\(`` for a literal bracket; A1111 adds ``[word]`` (÷1.1) and ``BREAK``
(start a new 75-token chunk). :func:`parse` turns the text into ``(text, weight)``
fragments with A1111's own tokenizing regex and bracket arithmetic (no PyPI library
parses this syntax; compel's parser reads InvokeAI's ``word++`` / ``(word)1.2`` instead).

The embedding is compel's (``compel`` on PyPI, InvokeAI's prompt code): the fragments
are tokenized, cut into chunks of 75 tokens (at a comma when one is near, as A1111
backtracks to one), each chunk wrapped in BOS/EOS and encoded on its own, the chunks
concatenated; SDXL gets both text encoders side by side and the second one's pooled
embedding. Weights are compel's: above 1 the token's embedding is pushed away from the
empty prompt's (as ComfyUI does); below 1 it is blended towards the prompt without that
fragment. A1111 instead scales embeddings and restores their mean, so weighted prompts
do not give A1111's exact pixels; unweighted ones match plain diffusers encoding.

Clip skip is applied here (diffusers' numbering: layers skipped from the end), since the
pipelines only see the finished embeddings. Textual-inversion names in the text expand to
their vectors (sd_runtime.embeddings loads them into the tokenizers); ComfyUI's
``embedding:name`` is read as the bare name.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

_ATTENTION = re.compile(
    r"""
\\\(|\\\)|\\\[|\\]|\\\\|\\|\(|\[|:\s*([+-]?[.\d]+)\s*\)|\)|]|[^\\()\[\]:]+|:
""",
    re.X,
)
"""A1111's ``re_attention``: escapes, brackets, ``:weight)`` closers, and runs of plain text."""
_BREAK = re.compile(r"\s*\bBREAK\b\s*", re.S)
_EMPHASIS = 1.1
_COMFY_EMBEDDING = re.compile(r"\bembedding:([^\s,()]+?)(?:\.safetensors)?(?=[\s,()]|$)")
"""ComfyUI names a textual inversion ``embedding:name``; A1111 (and the tokenizer) by the bare name."""

_EDITING = re.compile(r"(?<!\\)\[[^\[\]]*:[^\[\]]*\]")
_ALTERNATION = re.compile(r"(?<!\\)\[[^\[\]]*\|[^\[\]]*\]")
_AND = re.compile(r"\bAND\b")
UNSUPPORTED = (
    (_EDITING, "prompt editing [from:to:when]"),
    (_ALTERNATION, "alternation [a|b]"),
    (_AND, "AND composition"),
)
"""A1111 syntax this runtime does not implement: encoded as its text, listed in ``ignored_fields``."""

Segment = list[tuple[str, float]]
"""One BREAK-separated part of a prompt: ``(text, weight)`` fragments."""


def parse(text: str, a1111: bool = True) -> list[Segment]:
    """``text`` → its BREAK-separated segments of weighted fragments (A1111's ``parse_prompt_attention``).

    ``a1111=False`` is ComfyUI's reading: ``[`` ``]`` and ``BREAK`` are plain text there.
    Unbalanced brackets apply to the end of the text, as in A1111.
    """
    res: list[list[Any]] = []  # [text, weight]; text None marks a BREAK
    round_open: list[int] = []
    square_open: list[int] = []

    def multiply(start: int, factor: float) -> None:
        for item in res[start:]:
            item[1] *= factor

    for m in _ATTENTION.finditer(text):
        piece, weight = m.group(0), m.group(1)
        if piece.startswith("\\") and len(piece) > 1:
            res.append([piece[1:], 1.0])
        elif piece == "(":
            round_open.append(len(res))
        elif piece == "[" and a1111:
            square_open.append(len(res))
        elif weight is not None and round_open:
            multiply(round_open.pop(), float(weight))
        elif piece == ")" and round_open:
            multiply(round_open.pop(), _EMPHASIS)
        elif piece == "]" and square_open:
            multiply(square_open.pop(), 1 / _EMPHASIS)
        else:
            parts = _BREAK.split(piece) if a1111 else [piece]
            for i, part in enumerate(parts):
                if i:
                    res.append([None, 1.0])
                res.append([part, 1.0])
    for start in round_open:
        multiply(start, _EMPHASIS)
    for start in square_open:
        multiply(start, 1 / _EMPHASIS)

    segments: list[Segment] = [[]]
    for part, weight in res:
        if part is None:
            segments.append([])
        elif part:
            seg = segments[-1]
            if seg and seg[-1][1] == weight:  # merge neighbours of equal weight, as A1111 does
                seg[-1] = (seg[-1][0] + part, weight)
            else:
                seg.append((part, weight))
    return [seg or [("", 1.0)] for seg in segments]


def unsupported(text: str) -> list[str]:
    """The names of the A1111 syntax in ``text`` that is not implemented (see :data:`UNSUPPORTED`)."""
    return [name for pattern, name in UNSUPPORTED if pattern.search(text)]


@dataclass
class Encoded:
    """One prompt's conditioning: ``embeds`` [1, 77·chunks, dim]; SDXL's ``pooled`` [1, dim] (else None)."""

    embeds: Any
    pooled: Any = None


class _ClipSkip:
    """A text encoder as compel calls it, answering from ``skip`` layers before the last.

    SD 1.x (``normalize``): ``last_hidden_state`` becomes the final layer norm of that
    earlier layer, as diffusers does. SDXL reads ``hidden_states[-2]``: the tuple is cut
    by ``skip`` so that becomes the layer diffusers' SDXL pipeline would use. The pooled
    output stays the model's own.
    """

    def __init__(self, encoder: Any, skip: int, normalize: bool):
        self.encoder, self.skip, self.normalize = encoder, skip, normalize

    @property
    def device(self) -> Any:
        return self.encoder.device

    @property
    def dtype(self) -> Any:
        return self.encoder.dtype

    def __call__(self, input_ids: Any, attention_mask: Any = None, **_: Any) -> Any:
        out = self.encoder(input_ids, attention_mask=attention_mask, output_hidden_states=True, return_dict=True)
        hidden = out.hidden_states[: len(out.hidden_states) - self.skip]
        out.hidden_states = hidden
        if self.normalize:
            norm = getattr(self.encoder, "text_model", self.encoder).final_layer_norm  # transformers 5: no text_model
            out.last_hidden_state = norm(hidden[-1])
        return out


def _inversion_manager(tokenizer: Any) -> Any:
    """compel's hook for multi-vector textual inversions: ``name`` → ``name name_1 … name_n`` (token ids)."""
    from compel.embeddings_provider import BaseTextualInversionManager

    class Expand(BaseTextualInversionManager):
        def expand_textual_inversion_token_ids_if_necessary(self, token_ids: list[int]) -> list[int]:
            added = tokenizer.added_tokens_encoder
            if not added:
                return token_ids
            out: list[int] = []
            for tid in token_ids:
                out.append(tid)
                name = tokenizer.convert_ids_to_tokens(tid)
                i = 1
                while f"{name}_{i}" in added:
                    out.append(added[f"{name}_{i}"])
                    i += 1
            return out

    return Expand()


def _compel(tokenizer: Any, encoder: Any, clip_skip: int | None, sdxl: bool, pooled: bool = False) -> Any:
    from compel import Compel, ReturnedEmbeddingsType
    from compel.embeddings_provider import SplitLongTextMode

    returned = (
        ReturnedEmbeddingsType.PENULTIMATE_HIDDEN_STATES_NON_NORMALIZED
        if sdxl
        else ReturnedEmbeddingsType.LAST_HIDDEN_STATES_NORMALIZED
    )
    return Compel(
        tokenizer=tokenizer,
        text_encoder=_ClipSkip(encoder, clip_skip, normalize=not sdxl) if clip_skip else encoder,
        textual_inversion_manager=_inversion_manager(tokenizer),
        dtype_for_device_getter=lambda _device: encoder.dtype,
        truncate_long_prompts=False,
        returned_embeddings_type=returned,
        requires_pooled=pooled,
        split_long_text_mode=SplitLongTextMode.PHRASES,
        device=encoder.device,
    )


def _conditioning(compel: Any, segments: list[Segment]) -> Any:
    """The segments' chunks encoded and concatenated (a BREAK starts a new chunk)."""
    from compel.prompt_parser import Conjunction, FlattenedPrompt, Fragment

    prompts = [FlattenedPrompt([Fragment(t, w) for t, w in seg]) for seg in segments]
    conditioning, _options = compel.build_conditioning_tensor_for_conjunction(Conjunction(prompts))
    return conditioning if conditioning.ndim == 3 else conditioning.unsqueeze(0)


def encode(pipe: Any, text: str, clip_skip: int | None = None, a1111: bool = True) -> Encoded:
    """Worker thread only, under ``torch.inference_mode``: ``text`` encoded with ``pipe``'s text encoder(s)."""
    import torch

    segments = parse(text if a1111 else _COMFY_EMBEDDING.sub(r"\1", text), a1111)
    sdxl = getattr(pipe, "text_encoder_2", None) is not None
    if not sdxl:
        return Encoded(embeds=_conditioning(_compel(pipe.tokenizer, pipe.text_encoder, clip_skip, False), segments))
    first = _conditioning(_compel(pipe.tokenizer, pipe.text_encoder, clip_skip, True), segments)
    second_compel = _compel(pipe.tokenizer_2, pipe.text_encoder_2, clip_skip, True, pooled=True)
    second = _conditioning(second_compel, segments)
    plain = "".join(t for t, _w in segments[0])  # the pooled embedding: the first segment's text, unweighted
    pooled = second_compel.conditioning_provider.get_pooled_embeddings([plain], device=pipe.text_encoder_2.device)
    return Encoded(embeds=torch.cat([first, second], dim=-1), pooled=pooled)


def _pad(embeds: Any, length: int, empty: Any) -> Any:
    """``embeds`` lengthened to ``length`` tokens with chunks of the empty prompt (as A1111 pads)."""
    import torch

    missing = (length - embeds.shape[1]) // empty.shape[1]
    return torch.cat([embeds, empty.repeat(1, missing, 1)], dim=1) if missing else embeds


def pipeline_kwargs(pipe: Any, prompt: str, negative: str, batch: int, clip_skip: int | None) -> dict[str, Any]:
    """Worker thread only: the ``prompt_embeds`` (and SDXL pooled) arguments of a pipeline call for ``batch`` images.

    The prompt and the negative prompt are padded to the same number of chunks.
    """
    pos, neg = encode(pipe, prompt, clip_skip), encode(pipe, negative, clip_skip)
    if pos.embeds.shape[1] != neg.embeds.shape[1]:
        empty = encode(pipe, "", clip_skip).embeds
        n = max(pos.embeds.shape[1], neg.embeds.shape[1])
        pos.embeds, neg.embeds = _pad(pos.embeds, n, empty), _pad(neg.embeds, n, empty)
    kwargs = {
        "prompt_embeds": pos.embeds.repeat(batch, 1, 1),
        "negative_prompt_embeds": neg.embeds.repeat(batch, 1, 1),
    }
    if pos.pooled is not None:
        kwargs["pooled_prompt_embeds"] = pos.pooled.repeat(batch, 1)
        kwargs["negative_pooled_prompt_embeds"] = neg.pooled.repeat(batch, 1)
    return kwargs
