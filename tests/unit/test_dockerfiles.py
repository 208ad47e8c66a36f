"""The images' Dockerfiles pin their base images to exact version tags and run as a non-root user.

A floating tag (``python:3.11-slim``, ``latest``) rebuilds into a different image on any day;
a root user turns a compromise of the agent or runtime into root in the container.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DOCKERFILES = [REPO / "queue_agent" / "Dockerfile", REPO / "sd_runtime" / "Dockerfile"]
EXACT_VERSION = re.compile(r"\d+\.\d+\.\d+")


def instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) in order, continuation lines joined, comments dropped."""
    joined = re.sub(r"\\\n", " ", path.read_text())
    out = []
    for line in joined.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def base_images(path: Path) -> list[str]:
    images = []
    for word, rest in instructions(path):
        if word == "FROM":
            args = [a for a in rest.split() if not a.startswith("--")]
            images.append(args[0])
    return images


def exact_tag(image: str) -> bool:
    """``name:tag`` whose tag names an exact x.y.z version (a digest after it is welcome)."""
    name, sep, tag = image.partition("@")[0].rpartition(":")
    return bool(name and sep and "/" not in tag and tag != "latest" and EXACT_VERSION.search(tag))


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.parent.name)
def test_base_images_are_pinned_to_exact_version_tags(dockerfile):
    images = base_images(dockerfile)
    assert images, f"{dockerfile} has no FROM"
    for image in images:
        assert exact_tag(image), f"{image}: not pinned to an exact version (x.y.z) tag"
    assert "digest" in dockerfile.read_text(), "the file says why the pin is a tag, not a digest"


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.parent.name)
def test_images_run_as_a_numeric_non_root_user(dockerfile):
    users = [rest for word, rest in instructions(dockerfile) if word == "USER"]
    assert users, f"{dockerfile} never leaves root"
    user = users[-1].split(":")[0]
    assert user.isdigit() and int(user) >= 1000, f"final USER {user!r} must be a numeric non-root uid"
    tail = instructions(dockerfile)
    last_user = max(i for i, (word, _) in enumerate(tail) if word == "USER")
    assert all(word != "RUN" for word, _ in tail[last_user:]), "nothing runs as root after USER"


@pytest.mark.parametrize("image", ["python:3.11-slim", "python:latest", "python", "registry:5000/python"])
def test_floating_tags_are_refused(image):
    assert not exact_tag(image)


def test_exact_tags_are_accepted():
    assert exact_tag("python:3.11.13-slim-bookworm")
    assert exact_tag("registry:5000/nvidia/cuda:12.8.1-cudnn-runtime-ubuntu24.04@sha256:" + "0" * 64)
