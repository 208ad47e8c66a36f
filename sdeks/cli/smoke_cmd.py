"""``sdeks smoke``: one small text-to-image task through a whole stack, timed.

Reads the stack's outputs (or the local stack's state file), subscribes a temporary queue to the
results topic, submits the task, follows its status to the end, waits for its completion event,
downloads the image from S3 and prints where the time went. Exit 0 only when all of it worked.
"""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import typer
from botocore.exceptions import BotoCoreError, ClientError
from rich.console import Console

from sdeks.cli.deployment import Deployment, DeploymentError, from_local, from_stack
from sdeks.client import ApiClient, ApiError
from sdeks.config.outputs import StackOutput
from sdeks.contract import CompletionEvent, TaskStatus
from sdeks.events import EventSubscription

console = Console(stderr=True)
out = Console()


def register(app: typer.Typer) -> None:
    app.command("smoke")(smoke)


def fail(message: str, code: int = 1) -> typer.Exit:
    console.print(f"[red]smoke failed:[/red] {message}", highlight=False)
    return typer.Exit(code)


def _deployment(stack: str | None, local: bool, region: str | None) -> Deployment:
    if bool(stack) == local:
        raise fail("give exactly one of --stack NAME (a deployed stack) or --local", 2)
    try:
        return from_local() if local else from_stack(stack, region)
    except DeploymentError as exc:
        raise fail(str(exc)) from None


def _wait_for_event(subscription: EventSubscription, task_id: str, timeout_s: float) -> CompletionEvent:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for raw in subscription.follow(count=1, timeout_s=max(1.0, min(20.0, deadline - time.monotonic()))):
            if raw.get("id") == task_id:
                return CompletionEvent.model_validate(raw)
    raise fail(f"no completion event for {task_id} on the results topic within {timeout_s:.0f}s")


def _download(deployment: Deployment, uri: str, out_dir: Path) -> Path:
    bucket, _, key = uri.removeprefix("s3://").partition("/")
    target = out_dir / key.rsplit("/", 1)[-1]
    out_dir.mkdir(parents=True, exist_ok=True)
    deployment.client("s3").download_file(bucket, key, str(target))
    return target


def smoke(
    stack: str = typer.Option(None, "--stack", help="CloudFormation stack name of a deployed stack"),
    local: bool = typer.Option(False, "--local", help="the local stack of this directory (sdeks local up)"),
    runtime: str = typer.Option(None, "--runtime", "-r", help="default: the stack's first runtime"),
    prompt: str = typer.Option("a lighthouse on a cliff at dawn", "--prompt"),
    steps: int = typer.Option(20, "--steps", min=1, max=150),
    size: int = typer.Option(512, "--size", min=64, max=2048, help="width and height"),
    timeout: float = typer.Option(900, "--timeout", help="seconds for the whole run (a cold start adds a GPU node)"),
    out_dir: Path = typer.Option(Path("outputs/smoke"), "--out", help="where the image is saved"),
    region: str = typer.Option(None, "--region", help="default: your AWS configuration's region"),
) -> None:
    """Submit one text-to-image task, follow it, receive its event, download its image, print timings."""
    deployment = _deployment(stack, local, region)
    try:
        api_url = deployment.output(StackOutput.API_URL)
        topic = deployment.output(StackOutput.RESULTS_TOPIC_ARN)
    except DeploymentError as exc:
        raise fail(str(exc)) from None
    if not deployment.api_key:
        raise fail(f"cannot read the API key of {deployment.name} (apigateway:GET on the key is needed)")
    started = time.monotonic()
    marks: dict[str, float] = {}
    with ApiClient(api_url, deployment.api_key) as api:
        try:
            runtime = runtime or api.runtimes()[0]["name"]
            subscription = EventSubscription.create(topic, deployment.endpoint_url, deployment.region, runtime)
        except (ApiError, httpx.HTTPError, ClientError, BotoCoreError, IndexError, KeyError) as exc:
            raise fail(f"cannot prepare: {exc}") from None
        try:
            request = {
                "task": {
                    "metadata": {"runtime": runtime, "tasktype": "text-to-image", "prefix": "smoke"},
                    "content": {"prompt": prompt, "steps": steps, "width": size, "height": size, "seed": 1},
                }
            }
            accepted = api.submit(request)
            marks["accepted"] = time.monotonic() - started
            out.print(f"submitted {accepted.id} to {runtime} ({marks['accepted']:.1f}s)", highlight=False)

            def changed(status: TaskStatus) -> None:
                marks[status.status] = time.monotonic() - started
                out.print(f"  {status.status:<9} at {marks[status.status]:6.1f}s", highlight=False)

            final = api.wait(accepted.id, timeout_s=timeout, on_change=changed)
            if final.status != "succeeded":
                raise fail(f"task {final.id} {final.status}: {final.error or 'no reason given'}")
            event = _wait_for_event(subscription, accepted.id, max(30.0, timeout - (time.monotonic() - started)))
            marks["event"] = time.monotonic() - started
            if event.status != "succeeded" or not event.image_url:
                raise fail(f"completion event says {event.status}: {event.error}")
            image = _download(deployment, event.image_url[0], out_dir)
            marks["downloaded"] = time.monotonic() - started
        except ApiError as exc:
            raise fail(f"{exc.message} ({exc.status_code} {exc.code})") from None
        except TimeoutError as exc:
            raise fail(str(exc)) from None
        except (httpx.HTTPError, ClientError, BotoCoreError) as exc:
            raise fail(str(exc)) from None
        finally:
            subscription.delete()
    out.print(f"image: {image} ({image.stat().st_size:,} bytes)", highlight=False)
    line = f"timings: event {marks['event']:.1f}s, image downloaded {marks['downloaded']:.1f}s after submit"
    if event.timings:
        t = event.timings
        line += f"; agent: queued {t.queued_s:.1f}s, run {t.run_s:.1f}s, total {t.total_s:.1f}s"
    out.print(line, highlight=False)
