"""Build the CLIP ViT-L/14 tokenizer files (vocab.json, merges.txt) that SD 1.x checkpoints need.

A single-file checkpoint carries no tokenizer, and the runtime may not reach a model hub. The
vocabulary is derived exactly as OpenAI's CLIP ``SimpleTokenizer`` derives it from its BPE merge
list (MIT licensed), which the ``open_clip_torch`` wheel on PyPI ships as
``open_clip/bpe_simple_vocab_16e6.txt.gz``. The output is committed under
``sd_runtime/configs/sd15/tokenizer``; regenerate with::

    pip download --no-deps -d /tmp/oc open_clip_torch==3.3.0
    python -m sd_runtime.clip_vocab /tmp/oc/open_clip_torch-3.3.0-py3-none-any.whl sd_runtime/configs/sd15/tokenizer
"""

from __future__ import annotations

import gzip
import json
import sys
import zipfile
from pathlib import Path

BPE_MEMBER = "open_clip/bpe_simple_vocab_16e6.txt.gz"
MERGE_COUNT = 49152 - 256 - 2  # CLIP's vocabulary is 49408 = 2·256 byte tokens + merges + 2 specials


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP's reversible byte → printable character table."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
    printable += list(range(ord("®"), ord("ÿ") + 1))
    chars = printable[:]
    extra = 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            chars.append(256 + extra)
            extra += 1
    return dict(zip(printable, map(chr, chars), strict=True))


def build(bpe_text: str) -> tuple[dict[str, int], list[str]]:
    merges = bpe_text.split("\n")[1 : MERGE_COUNT + 1]
    vocab = list(bytes_to_unicode().values())
    vocab += [token + "</w>" for token in vocab]
    vocab += ["".join(merge.split()) for merge in merges]
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    return {token: index for index, token in enumerate(vocab)}, merges


def main(wheel: str, out_dir: str) -> None:
    with zipfile.ZipFile(wheel) as archive:
        text = gzip.decompress(archive.read(BPE_MEMBER)).decode("utf-8")
    vocab, merges = build(text)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False, separators=(",", ":")))
    (out / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
    print(f"{len(vocab)} tokens, {len(merges)} merges → {out}")


if __name__ == "__main__":
    main(*sys.argv[1:3])
