"""Container images of the pods: prebuilt ones named in the config, else built from the repository.

With ``agent_image`` / ``runtimes[].image`` unset, ``cdk deploy`` builds ``queue_agent/Dockerfile`` and
``sd_runtime/Dockerfile`` as CDK Docker image assets for linux/amd64 (the GPU nodes' platform) and
pushes them to the CDK bootstrap repository, which the nodes' role may read. Synthesis only
fingerprints the build context and writes the asset manifest; Docker runs at deploy time, and not
at all when the config names every image.

The build context is the repository root, narrowed to what the Dockerfile copies: the COPY
sources are read from the Dockerfile itself, so the context cannot drift from it, and a change
elsewhere in the repository (tests, docs, the other image) does not rebuild the image.
"""

from __future__ import annotations

import shlex
from pathlib import Path

import aws_cdk as cdk
from aws_cdk import aws_ecr_assets as ecr_assets
from constructs import Construct

from sdeks.config import Config, Runtime

REPO_ROOT = Path(__file__).resolve().parents[1]
AGENT_DOCKERFILE = "queue_agent/Dockerfile"
RUNTIME_DOCKERFILE = "sd_runtime/Dockerfile"
PLATFORM = ecr_assets.Platform.LINUX_AMD64


def copied_paths(dockerfile: Path) -> list[str]:
    """Sources of the Dockerfile's ``COPY``/``ADD`` instructions from the build context (not ``--from``)."""
    text = dockerfile.read_text().replace("\\\n", " ")
    sources: list[str] = []
    for line in text.splitlines():
        words = shlex.split(line, comments=True)
        if not words or words[0].upper() not in ("COPY", "ADD"):
            continue
        args = words[1:]
        if any(a.startswith("--from") for a in args):
            continue
        paths = [a for a in args if not a.startswith("--")]
        sources += [p.rstrip("/") for p in paths[:-1]]
    return sources


def context_exclude(dockerfile: str) -> list[str]:
    """Docker-style ignore patterns that leave exactly the Dockerfile and what it copies."""
    keep = [dockerfile, *copied_paths(REPO_ROOT / dockerfile)]
    return ["*", *(f"!{path}" for path in keep), "**/__pycache__", "**/*.pyc"]


class Images(Construct):
    """Image URIs for the helm values: the configured ones, or the URI of an image asset built at deploy."""

    def __init__(self, scope: Construct, cid: str, *, config: Config) -> None:
        super().__init__(scope, cid)
        self.assets: dict[str, ecr_assets.DockerImageAsset] = {}
        self.agent = config.agent_image or self._asset("Agent", AGENT_DOCKERFILE).image_uri
        self._runtime_default: str | None = None
        if any(not r.image for r in config.runtimes):
            self._runtime_default = self._asset("Runtime", RUNTIME_DOCKERFILE).image_uri

    def runtime(self, runtime: Runtime) -> str:
        return runtime.image or self._runtime_default  # type: ignore[return-value]

    def _asset(self, cid: str, dockerfile: str) -> ecr_assets.DockerImageAsset:
        asset = ecr_assets.DockerImageAsset(
            self,
            cid,
            directory=str(REPO_ROOT),
            file=dockerfile,
            platform=PLATFORM,
            exclude=context_exclude(dockerfile),
            ignore_mode=cdk.IgnoreMode.DOCKER,
        )
        self.assets[cid] = asset
        return asset
