"""ComfyUI's image files, in memory: uploads (``input``), results (``output``, ``temp``).

``/view`` and ``LoadImage`` look a ``(type, subfolder, filename)`` key up here and
never touch the filesystem, so no name can escape the store.

Results belong to the prompt that saved them: ``LoadImage`` in one prompt cannot read
another prompt's ``[output]``/``[temp]`` file (output names are sequential, so guessable;
with one prompt per task, that would be one task reading another's images).
"""

from __future__ import annotations

import threading
from collections import OrderedDict

from sd_runtime.imageio import inline_bytes

FILE_TYPES = ("output", "input", "temp")


class FileStore:
    """In-memory images keyed by ``(type, subfolder, filename)``; oldest evicted beyond the bounds."""

    def __init__(self, max_bytes: int = 512 * 1024 * 1024, max_files: int = 4000):
        self.max_bytes, self.max_files = max_bytes, max_files
        self._files: OrderedDict[tuple[str, str, str], bytes] = OrderedDict()
        self._size = 0
        self._counters: dict[tuple[str, str, str], int] = {}
        self._owners: dict[tuple[str, str, str], str] = {}
        self._lock = threading.Lock()

    def put(self, kind: str, subfolder: str, filename: str, data: bytes, owner: str | None = None) -> None:
        """Store a file; ``owner`` is the prompt that produced a result (only it may load the file back)."""
        key = (kind, subfolder, filename)
        with self._lock:
            old = self._files.pop(key, None)
            if old is not None:
                self._size -= len(old)
            self._files[key] = data
            self._size += len(data)
            if owner is None:
                self._owners.pop(key, None)
            else:
                self._owners[key] = owner
            while len(self._files) > 1 and (self._size > self.max_bytes or len(self._files) > self.max_files):
                evicted_key, evicted = self._files.popitem(last=False)
                self._owners.pop(evicted_key, None)
                self._size -= len(evicted)

    def get(self, kind: str, subfolder: str, filename: str) -> bytes | None:
        with self._lock:
            return self._files.get((kind, subfolder, filename))

    def exists(self, kind: str, subfolder: str, filename: str) -> bool:
        with self._lock:
            return (kind, subfolder, filename) in self._files

    def next_name(self, kind: str, subfolder: str, prefix: str) -> str:
        """``<prefix>_00001_.png``, counting up per (type, subfolder, prefix) like ComfyUI's SaveImage."""
        with self._lock:
            key = (kind, subfolder, prefix)
            self._counters[key] = self._counters.get(key, 0) + 1
            return f"{prefix}_{self._counters[key]:05}_.png"

    def free_name(self, kind: str, subfolder: str, name: str) -> str:
        """``name``, or ``stem (1).ext``, ``stem (2).ext`` ... if taken (ComfyUI's upload without overwrite)."""
        if not self.exists(kind, subfolder, name):
            return name
        stem, dot, ext = name.rpartition(".")
        stem, ext = (stem, "." + ext) if dot else (name, "")
        i = 1
        while self.exists(kind, subfolder, f"{stem} ({i}){ext}"):
            i += 1
        return f"{stem} ({i}){ext}"

    def input_names(self) -> list[str]:
        with self._lock:
            return sorted(f"{sub}/{name}" if sub else name for kind, sub, name in self._files if kind == "input")

    def load_input(self, value: str, prompt_id: str | None = None) -> bytes | None:
        """LoadImage's ``image``: an uploaded name (``sub/name``), inline base64, or ``name [output]``/``[temp]``
        — a result only when ``prompt_id`` saved it (a prompt never sees another prompt's results)."""
        if not isinstance(value, str) or not value:
            return None
        name, kind = value, "input"
        for k in FILE_TYPES:
            if value.endswith(f" [{k}]"):
                name, kind = value[: -len(k) - 3], k
        sub, _, base = name.rpartition("/")
        with self._lock:
            data = self._files.get((kind, sub, base))
            owner = self._owners.get((kind, sub, base))
        if data is not None and (kind == "input" or (prompt_id is not None and owner == prompt_id)):
            return data
        return inline_bytes(value)
