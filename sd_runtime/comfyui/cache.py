"""Node outputs kept between prompts, as ComfyUI's default ("classic") cache.

A node's *signature* is its class, its constant inputs, the signatures of the nodes
it links to (with the output slot) and its ``is_changed`` value (LoadImage: the image's
hash; VAELoader: the file's time and size). A node whose signature has an entry is not
run: its outputs are reused, and it is listed in ``execution_cached``. So a second run
of the same workflow reuses the loaded checkpoint, the encodings and, with the same seed,
the sampled latents; changing the seed reruns the sampler and what follows only.

Bounds: after each prompt the cache holds that prompt's node outputs only (earlier
entries are dropped, as ComfyUI's classic cache does), at most :data:`MAX_ENTRIES`
entries and :data:`MAX_BYTES` of tensors. Output nodes (SaveImage, PreviewImage) always
run: each prompt's images are its own files. The cache is emptied when the engine loads
another model (an A1111 request or a workflow switching checkpoints: the entries hold the
old model's pipelines) and by ``POST /free``.
"""

from __future__ import annotations

import hashlib
import threading
from dataclasses import fields, is_dataclass
from typing import Any

from sd_runtime.comfyui.nodes import NODES, Context

MAX_ENTRIES = 512
MAX_BYTES = 2 * 1024**3


def tensor_bytes(value: Any) -> int:
    """Bytes of the tensors in a node output (the engine's models are not the cache's and count 0)."""
    if hasattr(value, "nbytes") and hasattr(value, "dtype"):
        return int(value.nbytes)
    if isinstance(value, dict):
        return sum(tensor_bytes(v) for v in value.values())
    if isinstance(value, list | tuple):
        return sum(tensor_bytes(v) for v in value)
    if is_dataclass(value) and not isinstance(value, type):
        return sum(tensor_bytes(getattr(value, f.name)) for f in fields(value))
    return 0


def signatures(prompt: dict[str, Any], order: list[str], inputs: dict[str, dict[str, Any]], ctx: Context):
    """``{node_id: signature}`` for the plan's nodes (``order`` is topological: links come first)."""
    sigs: dict[str, str] = {}
    for nid in order:
        node_type = prompt[nid]["class_type"]
        ndef = NODES[node_type]
        parts = [node_type]
        for name, value in sorted(inputs[nid].items()):
            parts.append(f"{name}=@{sigs[value[0]]}:{value[1]}" if isinstance(value, tuple) else f"{name}={value!r}")
        if ndef.is_changed is not None:
            parts.append(f"changed={ndef.is_changed(ctx, inputs[nid])!r}")
        sigs[nid] = hashlib.sha256("\x00".join(parts).encode()).hexdigest()
    return sigs


class NodeCache:
    """Outputs by signature; read and replaced by the worker thread, cleared from any thread."""

    def __init__(self, max_entries: int = MAX_ENTRIES, max_bytes: int = MAX_BYTES):
        self.max_entries, self.max_bytes = max_entries, max_bytes
        self._entries: dict[str, tuple] = {}
        self._lock = threading.Lock()

    def get(self, signature: str) -> tuple | None:
        with self._lock:
            return self._entries.get(signature)

    def replace(self, results: dict[str, tuple]) -> None:
        """Keep exactly ``results`` (one prompt's outputs, in run order), within the bounds."""
        kept: dict[str, tuple] = {}
        size = 0
        for sig, out in results.items():
            n = tensor_bytes(out)
            if len(kept) >= self.max_entries or size + n > self.max_bytes:
                continue
            kept[sig] = out
            size += n
        with self._lock:
            self._entries = kept

    def clear(self) -> None:
        with self._lock:
            self._entries = {}

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)
