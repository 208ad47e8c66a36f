"""Images (issue 14.1): built from the repository as linux/amd64 image assets and wired into the helm values,
or prebuilt ones named in the config (then nothing is built)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from infra.images import AGENT_DOCKERFILE, REPO_ROOT, RUNTIME_DOCKERFILE, copied_paths
from sdeks.config import resource_layout
from tests.infra.test_cluster import _releases, _values

pytestmark = pytest.mark.slow


def _manifest(synth) -> dict:
    return json.loads((synth.outdir / f"{synth.stack.artifact_id}.assets.json").read_text())


def _docker_images(synth) -> dict[str, dict]:
    """Dockerfile → its entry in the asset manifest."""
    return {image["source"]["dockerFile"]: image for image in _manifest(synth).get("dockerImages", {}).values()}


def test_both_images_are_linux_amd64_assets_built_from_the_repository(synth_default):
    images = _docker_images(synth_default)
    assert set(images) == {AGENT_DOCKERFILE, RUNTIME_DOCKERFILE}
    for dockerfile, image in images.items():
        assert image["source"]["platform"] == "linux/amd64"
        context = synth_default.outdir / image["source"]["directory"]
        assert (context / dockerfile).read_text() == (REPO_ROOT / dockerfile).read_text()


@pytest.mark.parametrize("dockerfile", [AGENT_DOCKERFILE, RUNTIME_DOCKERFILE])
def test_build_context_is_what_the_dockerfile_copies(synth_default, dockerfile):
    context = synth_default.outdir / _docker_images(synth_default)[dockerfile]["source"]["directory"]
    staged = {str(p.relative_to(context)) for p in context.rglob("*") if p.is_file()}
    wanted = {dockerfile}
    for source in copied_paths(REPO_ROOT / dockerfile):
        path = REPO_ROOT / source
        files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
        wanted |= {str(f.relative_to(REPO_ROOT)) for f in files if "__pycache__" not in f.parts}
    assert staged == wanted
    assert not any(part in {"tests", ".venv", ".git", "docs"} for f in staged for part in Path(f).parts)


def test_helm_values_carry_the_built_images(synth_any):
    images = _docker_images(synth_any)
    tags = {dockerfile: next(iter(image["destinations"].values()))["imageTag"] for dockerfile, image in images.items()}
    releases = _releases(synth_any)
    for release in resource_layout(synth_any.config).releases:
        values = _values(releases[release.release_name])
        assert values["agent"]["image"].endswith(f":{tags[AGENT_DOCKERFILE]}")
        assert values["runtime"]["image"].endswith(f":{tags[RUNTIME_DOCKERFILE]}")
        assert ".dkr.ecr." in values["runtime"]["image"]


def test_prebuilt_images_build_nothing(synth_options):
    assert not _docker_images(synth_options), "naming every image in the config must not need Docker"
    config = synth_options.config
    releases = _releases(synth_options)
    for release in resource_layout(config).releases:
        values = _values(releases[release.release_name])
        assert values["agent"]["image"] == config.agent_image
        assert values["runtime"]["image"] == release.runtime.image
