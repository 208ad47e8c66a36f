"""Build the Lambdas' code directories without Docker.

The API asset is ``lambda/api/*`` + the part of ``sdeks`` the handler imports (the contract,
the API, the task table: never the config loader, local mode or the CLI) + the wheels of
requirements/api.txt; the webhook deliverer's is the ``webhooks`` package + the part of ``sdeks``
it imports + the wheels of requirements/webhooks.txt. Wheels are for Lambda's platform
(manylinux2014_x86_64, CPython 3.12) and are downloaded once
into ``.cache/lambda-wheels`` (git-ignored); later builds install from there with
``--no-index``, so synth works offline once the cache is warm.

The result lands in ``.cache/lambda-api/<content hash>``: identical inputs give the
same directory (and the same CDK asset hash), and concurrent synths never see a
half-written directory (build in a temp dir, then rename).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
LAMBDA_PYTHON = "3.12"
LAMBDA_PLATFORM = "manylinux2014_x86_64"
PROVIDED_BY_LAMBDA = ("boto3", "botocore")
"""Pins left out of every bundle: the Lambda runtime provides them."""
HANDLER_SOURCES = (
    "sdeks/__init__.py",
    "sdeks/contract",
    "sdeks/api/__init__.py",
    "sdeks/api/handler.py",
    "sdeks/api/http.py",
    "sdeks/api/queue_depth.py",
    "sdeks/api/settings.py",
    "sdeks/netguard.py",
    "sdeks/presign.py",
    "sdeks/tasks_table.py",
)
"""What of the repo the API handler imports (a test imports the handler and checks this covers it)."""
WEBHOOKS_SOURCES = (
    "webhooks",
    "sdeks/__init__.py",
    "sdeks/contract",
    "sdeks/netguard.py",
    "sdeks/tasks_table.py",
    "sdeks/webhook_retries.py",
    "sdeks/webhook_secret.py",
)
"""What of the repo the webhook deliverer imports (tested like the API's)."""
WEBHOOKS_HANDLER = "webhooks.lambda_handler.handler"

_SKIP = {"__pycache__", ".build", ".pytest_cache", "tests"}


class BundleError(RuntimeError):
    pass


def lambda_requirements(root: Path = REPO_ROOT) -> list[str]:
    """Pins for the API Lambda, from requirements/api.txt (one source of versions)."""
    return requirements_pins(root / "requirements" / "api.txt")


def requirements_pins(path: Path) -> list[str]:
    """The pins of one requirements file, less what the Lambda runtime provides, sorted."""
    pins = []
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line and not line.lower().startswith(PROVIDED_BY_LAMBDA):
            pins.append(line)
    return sorted(pins)


def _files(src: Path) -> list[Path]:
    out = []
    for dirpath, dirnames, filenames in os.walk(src):
        dirnames[:] = sorted(d for d in dirnames if d not in _SKIP and not d.endswith(".egg-info"))
        for name in sorted(filenames):
            if not name.endswith((".pyc", ".pyo")):
                out.append(Path(dirpath) / name)
    return out


def _pip(args: list[str]) -> None:
    env = dict(os.environ, PIP_DISABLE_PIP_VERSION_CHECK="1")
    proc = subprocess.run([sys.executable, "-m", "pip", *args], capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise BundleError(f"pip {' '.join(args[:2])} failed:\n{proc.stderr[-2000:]}")


def _platform_args() -> list[str]:
    return [
        "--platform",
        LAMBDA_PLATFORM,
        "--implementation",
        "cp",
        "--python-version",
        LAMBDA_PYTHON,
        "--only-binary=:all:",
    ]


@contextmanager
def _atomic_dir(target: Path, prefix: str) -> Iterator[Path]:
    """Fill a temp dir beside ``target``, then rename it into place.

    A crashed build never leaves a half-filled ``target``, and of two concurrent builds
    (parallel synths) the second simply finds the first one's result.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=prefix, dir=target.parent))
    try:
        yield tmp
        try:
            tmp.rename(target)
        except OSError:
            if not target.is_dir():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def dependencies_dir(cache: Path, pins: list[str]) -> Path:
    """site-packages for the pins, installed from the wheel cache (downloaded on a miss)."""
    key = hashlib.sha256("\n".join([LAMBDA_PLATFORM, LAMBDA_PYTHON, *pins]).encode()).hexdigest()[:16]
    target = cache / "lambda-deps" / key
    if target.is_dir():
        return target
    wheels = cache / "lambda-wheels"
    wheels.mkdir(parents=True, exist_ok=True)
    with _atomic_dir(target, prefix=f"{key}.") as tmp:
        install = ["install", "--quiet", "--no-compile", "--target", str(tmp), *_platform_args()]
        try:
            _pip([*install, "--no-index", "--find-links", str(wheels), *pins])
        except BundleError:
            _pip(["download", "--quiet", "--dest", str(wheels), *_platform_args(), *pins])
            _pip([*install, "--no-index", "--find-links", str(wheels), *pins])
        for junk in tmp.glob("*.dist-info/RECORD"):
            junk.unlink()  # holds paths of the temp dir: would make the asset hash differ per build
        shutil.rmtree(tmp / "bin", ignore_errors=True)
    return target


def build_api_bundle(root: Path = REPO_ROOT, cache: Path | None = None) -> Path:
    """The directory to hand to ``lambda.Code.from_asset`` for the API (handler ``handler.handler``)."""
    handler_dir = root / "lambda" / "api"
    sources = [(f, f.relative_to(handler_dir)) for f in _files(handler_dir)]
    sources += _sources(root, HANDLER_SOURCES)
    return _bundle(cache or root / ".cache", "lambda-api", lambda_requirements(root), sources)


def build_webhooks_bundle(root: Path = REPO_ROOT, cache: Path | None = None) -> Path:
    """The directory for the webhook deliverer (handler :data:`WEBHOOKS_HANDLER`)."""
    pins = requirements_pins(root / "requirements" / "webhooks.txt")
    return _bundle(cache or root / ".cache", "lambda-webhooks", pins, _sources(root, WEBHOOKS_SOURCES))


def _sources(root: Path, paths: tuple[str, ...]) -> list[tuple[Path, Path]]:
    """(file, path inside the bundle) for each file of ``paths`` (files or folders of the repo)."""
    sources = []
    for source in paths:
        path = root / source
        sources += [(f, f.relative_to(root)) for f in (_files(path) if path.is_dir() else [path])]
    return sources


def _bundle(cache: Path, name: str, pins: list[str], sources: list[tuple[Path, Path]]) -> Path:
    """Dependencies + ``sources`` (file, path inside the bundle) in ``cache/name/<content hash>``."""
    deps = dependencies_dir(cache, pins)
    digest = hashlib.sha256(deps.name.encode())
    for f, rel in sources:
        digest.update(str(rel).encode() + b"\0" + f.read_bytes() + b"\0")
    out = cache / name / digest.hexdigest()[:20]
    if out.is_dir():
        return out
    with _atomic_dir(out, prefix="build.") as tmp:
        shutil.copytree(deps, tmp, dirs_exist_ok=True)
        for f, rel in sources:
            (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(f, tmp / rel)
    _prune(out.parent, keep=KEEP_BUNDLES)
    return out


KEEP_BUNDLES = 8


def _prune(parent: Path, keep: int) -> None:
    """Drop all but the ``keep`` newest bundles (each source change makes a new one)."""
    bundles = sorted(
        (d for d in parent.iterdir() if d.is_dir() and not d.name.startswith("build.")),
        key=lambda d: d.stat().st_mtime,
        reverse=True,
    )
    for old in bundles[keep:]:
        shutil.rmtree(old, ignore_errors=True)
