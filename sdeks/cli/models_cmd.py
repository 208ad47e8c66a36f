"""``sdeks models push`` and ``sdeks models list``: checkpoints exactly where a runtime reads them.

The location comes from the stack's ``ModelLocations`` output: the S3 prefix that Mountpoint
mounts as the runtime's models directory, so a pushed ``v1-5.safetensors`` is what
``checkpoint: v1-5.safetensors`` loads. Uploads are multipart with a progress bar; an object that
is already there with the same SHA-256 (kept in its metadata) is skipped.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import typer
from boto3.s3.transfer import TransferConfig
from botocore.exceptions import BotoCoreError, ClientError
from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn, TransferSpeedColumn
from rich.table import Table

from sdeks.cli.deployment import Deployment, DeploymentError, ModelLocation, from_stack

console = Console(stderr=True)
out = Console()
models = typer.Typer(help="Model checkpoints in the bucket each runtime mounts.", no_args_is_help=True)

SHA256_METADATA = "sha256"
TRANSFER = TransferConfig(multipart_threshold=64 * 1024**2, multipart_chunksize=64 * 1024**2, max_concurrency=8)


def register(app: typer.Typer) -> None:
    app.add_typer(models, name="models")


def fail(message: str, code: int = 1) -> typer.Exit:
    console.print(f"[red]error:[/red] {message}", highlight=False)
    return typer.Exit(code)


@dataclass(frozen=True)
class Upload:
    path: Path
    key: str
    size: int


def plan(source: Path, location: ModelLocation) -> list[Upload]:
    """A file goes to ``<prefix>/<name>``; a directory (diffusers layout) to ``<prefix>/<dir>/<relative path>``."""
    if source.is_file():
        return [Upload(source, f"{location.prefix}/{source.name}", source.stat().st_size)]
    files = sorted(p for p in source.rglob("*") if p.is_file() and not p.name.startswith("."))
    base = f"{location.prefix}/{source.name}"
    return [Upload(p, f"{base}/{p.relative_to(source).as_posix()}", p.stat().st_size) for p in files]


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(8 * 1024**2), b""):
            digest.update(block)
    return digest.hexdigest()


def _already_there(s3, bucket: str, upload: Upload, digest: str) -> bool:
    try:
        head = s3.head_object(Bucket=bucket, Key=upload.key)
    except ClientError as exc:
        if exc.response["Error"]["Code"] in ("404", "NoSuchKey", "NotFound"):
            return False
        raise
    return head["ContentLength"] == upload.size and head.get("Metadata", {}).get(SHA256_METADATA) == digest


def _deployment(stack: str, region: str | None) -> Deployment:
    try:
        return from_stack(stack, region)
    except DeploymentError as exc:
        raise fail(str(exc)) from None


@models.command("push")
def push(
    source: Path = typer.Argument(..., help="a checkpoint file, or a diffusers model directory"),
    runtime: str = typer.Option(..., "--runtime", "-r", help="the runtime that will load it"),
    stack: str = typer.Option("sdeks", "--stack", help="CloudFormation stack name (the config's project)"),
    region: str = typer.Option(None, "--region", help="default: your AWS configuration's region"),
) -> None:
    """Upload to exactly where RUNTIME reads its models; unchanged files are skipped."""
    if not source.exists():
        raise fail(f"{source} does not exist", 2)
    deployment = _deployment(stack, region)
    try:
        location = deployment.model_location(runtime)
    except DeploymentError as exc:
        raise fail(str(exc)) from None
    uploads = plan(source, location)
    if not uploads:
        raise fail(f"{source} holds no files", 2)
    s3 = deployment.client("s3")
    pushed = skipped = 0
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
    )
    try:
        with Progress(*columns, console=console, transient=True) as progress:
            for upload in uploads:
                digest = sha256(upload.path)
                if _already_there(s3, location.bucket, upload, digest):
                    skipped += 1
                    console.print(f"same object already there: s3://{location.bucket}/{upload.key}", highlight=False)
                    continue
                task = progress.add_task(upload.path.name, total=upload.size)
                s3.upload_file(
                    str(upload.path),
                    location.bucket,
                    upload.key,
                    ExtraArgs={"Metadata": {SHA256_METADATA: digest}},
                    Config=TRANSFER,
                    Callback=lambda n, task=task: progress.advance(task, n),
                )
                pushed += 1
                console.print(f"pushed s3://{location.bucket}/{upload.key}", highlight=False)
    except (ClientError, BotoCoreError) as exc:
        raise fail(f"upload to {location.uri} failed: {exc}") from None
    out.print(f"{pushed} pushed, {skipped} unchanged, in {location.uri} (runtime {runtime})", highlight=False)
    name = source.name
    if location.checkpoint and location.checkpoint != name:
        console.print(
            f"note: runtime {runtime} loads checkpoint {location.checkpoint!r} at start, not {name!r}"
            " (runtimes[].model.checkpoint in the config)",
            highlight=False,
        )


def _entries(s3, location: ModelLocation) -> dict[str, int]:
    """Top-level names under the prefix (files, or directories with their total size)."""
    entries: dict[str, int] = {}
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=location.bucket, Prefix=f"{location.prefix}/"):
        for obj in page.get("Contents", []):
            name = obj["Key"][len(location.prefix) + 1 :].split("/", 1)[0]
            if name:
                entries[name] = entries.get(name, 0) + obj["Size"]
    return entries


@models.command("list")
def list_models(
    runtime: str = typer.Option(None, "--runtime", "-r", help="only this runtime"),
    stack: str = typer.Option("sdeks", "--stack", help="CloudFormation stack name (the config's project)"),
    region: str = typer.Option(None, "--region", help="default: your AWS configuration's region"),
) -> None:
    """What each runtime will find in its models directory, and whether its checkpoint is there."""
    deployment = _deployment(stack, region)
    try:
        locations = deployment.model_locations() if runtime is None else {runtime: deployment.model_location(runtime)}
    except DeploymentError as exc:
        raise fail(str(exc)) from None
    s3 = deployment.client("s3")
    missing = []
    for name, location in sorted(locations.items()):
        try:
            entries = _entries(s3, location)
        except (ClientError, BotoCoreError) as exc:
            raise fail(f"cannot list {location.uri}: {exc}") from None
        table = Table(title=f"{name}: {location.uri}", title_justify="left")
        table.add_column("name")
        table.add_column("size", justify="right")
        table.add_column("")
        for entry, size in sorted(entries.items()):
            table.add_row(entry, f"{size:,}", "loaded at start" if entry == location.checkpoint else "")
        out.print(table)
        if location.checkpoint and location.checkpoint not in entries:
            missing.append(name)
            out.print(
                f"[red]missing[/red]: {location.checkpoint} — runtime {name} cannot start; push it with"
                f" `sdeks models push FILE --runtime {name} --stack {stack}`",
                highlight=False,
            )
    if missing:
        raise typer.Exit(1)
