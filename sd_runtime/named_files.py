"""Files a request may name: ``*.safetensors`` (or other given suffixes) in one folder of the models dir.

A request names a file by its stem (as A1111 lists it) or its path under the folder (as
ComfyUI lists it); the name is matched against the files discovered in the folder only,
so no name can reach a file outside it (links leading out are not listed either), and
errors list names, never server paths.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class NamedFile:
    """``name``: the stem; ``file``: the path under ``folder`` (posix); ``path``: where it is on disk."""

    name: str
    file: str
    path: Path
    folder: str


def discover(models_dir: Path | None, folder: str, suffixes: tuple[str, ...] = (".safetensors",)) -> list[NamedFile]:
    """Files with ``suffixes`` under ``models_dir/folder`` (subfolders too), hidden ones and outward links skipped."""
    if models_dir is None or not (models_dir / folder).is_dir():
        return []
    root = (models_dir / folder).resolve()
    found = []
    for path in sorted(p for p in root.rglob("*") if p.suffix in suffixes and p.is_file()):
        rel = path.relative_to(root)
        if any(part.startswith(".") for part in rel.parts) or not path.resolve().is_relative_to(root):
            continue
        found.append(NamedFile(name=path.stem, file=rel.as_posix(), path=path, folder=folder))
    return found


def find(name: str, known: Sequence[NamedFile]) -> NamedFile | None:
    """The discovered file whose stem or path under the folder is ``name``."""
    return next((f for f in known if name in (f.name, f.file)), None)
