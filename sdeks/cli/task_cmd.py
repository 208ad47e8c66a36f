"""``sdeks submit``, ``sdeks status``, ``sdeks cancel`` and ``sdeks events``: use a local or deployed stack."""

from __future__ import annotations

import base64
import json
import signal
import sys
from pathlib import Path
from typing import Any

import httpx
import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn

from sdeks.client import ApiClient, ApiError
from sdeks.contract import MAX_WAIT_S, TASK_TYPES, TaskStatus
from sdeks.local.state import read_state, state_path

console = Console(stderr=True)


def register(app: typer.Typer) -> None:
    app.command("submit")(submit)
    app.command("status")(status)
    app.command("cancel")(cancel)
    app.command("events")(events)


def fail(message: str, code: int = 1) -> typer.Exit:
    console.print(f"[red]error:[/red] {message}", highlight=False)
    return typer.Exit(code)


def _client(api_url: str | None, api_key: str | None) -> ApiClient:
    if api_url and api_key:
        return ApiClient(api_url, api_key)
    state = read_state(state_path())
    if state is None:
        raise fail("no local stack found (.sdeks/local.json); run `sdeks local up`, or pass --api-url and --api-key")
    return ApiClient(api_url or state.api_url, api_key or state.api_key)


def _encode_image(path: Path) -> str:
    try:
        return base64.b64encode(path.read_bytes()).decode()
    except OSError as exc:
        raise fail(f"cannot read image {path}: {exc.strerror}") from None


def build_request(
    file: Path | None,
    prompt: str | None,
    runtime: str | None,
    tasktype: str | None,
    init_image: str | None,
    task_id: str | None,
    steps: int | None,
    size: int | None,
) -> dict[str, Any]:
    """A task from a file (AWS sample format) or from flags; flags override the file's metadata."""
    if file is not None:
        try:
            body = json.loads(file.read_text())
        except OSError as exc:
            raise fail(f"cannot read {file}: {exc.strerror}") from None
        except ValueError as exc:
            raise fail(f"{file} is not valid JSON: {exc}") from None
        if not isinstance(body, dict) or not isinstance(body.get("task"), dict):
            raise fail(f'{file} must hold {{"task": {{"metadata": ..., "content": ...}}}}')
    elif prompt is not None:
        body = {
            "task": {"metadata": {"runtime": "sdruntime", "tasktype": "text-to-image"}, "content": {"prompt": prompt}}
        }
    else:
        raise fail("give a task FILE or --prompt TEXT", 2)
    metadata = body["task"].setdefault("metadata", {})
    content = body["task"].setdefault("content", {})
    for key, value in (("runtime", runtime), ("tasktype", tasktype), ("id", task_id)):
        if value:
            metadata[key] = value
    if steps:
        content["steps"] = steps
    if size:
        content["width"] = content["height"] = size
    if init_image:
        ref = init_image if init_image.startswith(("s3://", "https://")) else _encode_image(Path(init_image))
        if metadata.get("tasktype") == "extra-single-image":
            content["image"] = ref
        else:
            if metadata.get("tasktype", "text-to-image") == "text-to-image":
                metadata["tasktype"] = "image-to-image"  # an init image is what makes it img2img
            content["init_images"] = [ref]
    return body


def _ahead(status: TaskStatus) -> str:
    """A queued task's approximate place, as the API reports it ("" when it cannot say)."""
    n = status.tasks_ahead_approx
    return "" if status.status != "queued" or n is None else f"~{n} task{'s' * (n != 1)} ahead"


def _show(status: TaskStatus) -> None:
    extra = f" (attempt {status.attempts})" if status.attempts > 1 else ""
    ahead = _ahead(status)
    ahead = f" ({ahead})" if ahead else ""
    console.print(f"{status.id}: {status.status}{extra}{ahead}", highlight=False)


def _follow(client: ApiClient, task_id: str, timeout_s: float) -> TaskStatus:
    """Wait for the task's end, printing each status and drawing its progress (step, image) as a bar,
    and while it is queued the approximate number of tasks ahead of it."""
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        TaskProgressColumn(),
        TextColumn("{task.fields[detail]}"),
    )
    with Progress(*columns, console=console) as bar:
        row = bar.add_task(task_id, total=1.0, detail="")

        def drawn(status: TaskStatus) -> None:
            p = status.progress
            if p is not None:
                detail = f"step {p.step}/{p.steps}" + (f", image {p.image}/{p.images}" if p.images > 1 else "")
                detail += f" (node {p.node})" if p.node else ""
                bar.update(row, completed=p.fraction, detail=detail)
            elif status.status == "succeeded":
                bar.update(row, completed=1.0, detail="")
            elif status.status == "queued":
                ahead = _ahead(status)
                bar.update(row, detail=f"queued, {ahead}" if ahead else "queued")

        return client.wait(task_id, timeout_s=timeout_s, on_change=_show, on_progress=drawn)


def submit(
    file: Path = typer.Argument(None, help="task JSON file (v1alpha2 / AWS sample format)", exists=False),
    prompt: str = typer.Option(None, "--prompt", "-p", help="text-to-image prompt (instead of FILE)"),
    runtime: str = typer.Option(None, "--runtime", "-r", help="runtime name (overrides the file)"),
    tasktype: str = typer.Option(None, "--tasktype", "-t", help=f"one of: {', '.join(TASK_TYPES)}"),
    init_image: str = typer.Option(None, "--init-image", help="image file, s3:// or https:// URL"),
    task_id: str = typer.Option(None, "--id", help="task id (idempotency key)"),
    steps: int = typer.Option(None, "--steps"),
    size: int = typer.Option(None, "--size", help="width and height"),
    wait: bool = typer.Option(False, "--wait", "-w", help="wait for the result and download the images"),
    out: Path = typer.Option(Path("outputs"), "--out", "-o", help="where --wait saves the images"),
    timeout: float = typer.Option(600.0, help="seconds --wait waits"),
    api_url: str = typer.Option(None, envvar="SDEKS_API_URL", help="deployed API (default: local stack)"),
    api_key: str = typer.Option(None, envvar="SDEKS_API_KEY", help="API key (default: local stack's)"),
) -> None:
    """Submit a task; with --wait, follow it to the end and download the images."""
    body = build_request(file, prompt, runtime, tasktype, init_image, task_id, steps, size)
    with _client(api_url, api_key) as client:
        try:
            accepted = client.submit(body)
            console.print(f"{accepted.id}: queued on {accepted.runtime} → {accepted.output_location}", highlight=False)
            if not wait:
                print(accepted.model_dump_json())
                return
            # each status change is shown as the server-side waits (GET ?wait=N) return; progress as a bar
            final = _follow(client, accepted.id, timeout)
            if final.status == "failed":
                raise fail(f"task {final.id} failed: {final.error}")
            if final.status == "cancelled":
                raise fail(f"task {final.id} was cancelled")
            for path in client.download(final, out):
                print(path)
        except ApiError as exc:
            raise fail(f"{exc.message} ({exc.status_code} {exc.code})") from None
        except TimeoutError as exc:
            raise fail(str(exc)) from None
        except httpx.HTTPError as exc:
            raise fail(f"cannot reach the API: {exc}") from None


def status(
    task_id: str = typer.Argument(..., help="task id"),
    presign: bool = typer.Option(False, "--presign", help="include presigned image URLs"),
    wait: int = typer.Option(
        0, "--wait", "-w", min=0, max=MAX_WAIT_S, help="answer once the task ends, or after this many seconds"
    ),
    follow: bool = typer.Option(False, "--follow", "-f", help="draw the progress until the task ends"),
    timeout: float = typer.Option(600.0, help="seconds --follow waits"),
    api_url: str = typer.Option(None, envvar="SDEKS_API_URL"),
    api_key: str = typer.Option(None, envvar="SDEKS_API_KEY"),
) -> None:
    """Print a task's status as JSON (with --follow, once it ended, after a progress bar)."""
    with _client(api_url, api_key) as client:
        try:
            current = _follow(client, task_id, timeout) if follow else client.status(task_id, presign, wait)
            print(current.model_dump_json(indent=2, exclude_none=True))
        except TimeoutError as exc:
            raise fail(str(exc)) from None
        except ApiError as exc:
            raise fail(f"{exc.message} ({exc.status_code} {exc.code})") from None
        except httpx.HTTPError as exc:
            raise fail(f"cannot reach the API: {exc}") from None


def cancel(
    task_id: str = typer.Argument(..., help="task id"),
    api_url: str = typer.Option(None, envvar="SDEKS_API_URL"),
    api_key: str = typer.Option(None, envvar="SDEKS_API_KEY"),
) -> None:
    """Cancel a queued or running task; print its status (cancelled) as JSON."""
    with _client(api_url, api_key) as client:
        try:
            print(client.cancel(task_id).model_dump_json(indent=2, exclude_none=True))
        except ApiError as exc:
            raise fail(f"{exc.message} ({exc.status_code} {exc.code})") from None
        except httpx.HTTPError as exc:
            raise fail(f"cannot reach the API: {exc}") from None


def events(
    runtime: str = typer.Option(None, "--runtime", help="only events of this runtime"),
    count: int = typer.Option(0, "--count", "-n", help="stop after this many events (0: follow forever)"),
    timeout: float = typer.Option(0, help="stop after this many seconds (0: no limit)"),
    topic_arn: str = typer.Option(None, help="results topic of a deployed stack (uses your AWS credentials)"),
    started: bool = typer.Option(False, "--started", help="also the events of tasks starting (status running)"),
) -> None:
    """Follow completion events (with --started, start events too) through a temporary SQS queue subscribed to
    the results topic."""
    from sdeks.events import EventSubscription

    state = read_state(state_path())
    if topic_arn is None and state is None:
        raise fail("no local stack found; run `sdeks local up` or pass --topic-arn")
    endpoint = None if topic_arn else state.aws_endpoint_url
    region = None if topic_arn else state.region
    subscription = EventSubscription.create(
        topic_arn or state.results_topic_arn, endpoint, region, runtime, started=started
    )
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        for event in subscription.follow(count=count or None, timeout_s=timeout or None):
            print(json.dumps(event), flush=True)
    except KeyboardInterrupt:
        pass
    finally:
        subscription.delete()
