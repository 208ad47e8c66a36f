"""``sdeks dlq list|redrive``: see why tasks were dead-lettered, and put them back after a fix."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import typer
from botocore.exceptions import BotoCoreError, ClientError
from rich.console import Console
from rich.table import Table

from sdeks.ops.dlq import DeadLetters, RedriveMethod
from sdeks.ops.target import TargetError, resolve_target

dlq_app = typer.Typer(
    help="Dead-letter queues: list dead-lettered tasks with their last error; redrive them.", no_args_is_help=True
)
console = Console(stderr=True)

RUNTIME = typer.Option(..., "--runtime", "-r", help="runtime whose DLQ to use")
STACK = typer.Option(None, "--stack", help="deployed stack (project) name; default: the local stack here")
CONFIG = typer.Option(None, "--config", "-c", help="with --stack: config listing its runtimes (default config)")
REGION = typer.Option(None, "--region", help="with --stack: AWS region (default: config, then AWS defaults)")


def register(app: typer.Typer) -> None:
    app.add_typer(dlq_app, name="dlq")


def _fail(message: str) -> typer.Exit:
    console.print(f"[red]error:[/red] {message}", highlight=False)
    return typer.Exit(1)


def _dead_letters(runtime: str, stack: str | None, config: Path | None, region: str | None) -> DeadLetters:
    try:
        target = resolve_target(stack, config, region)
        return DeadLetters(target, target.runtime(runtime))
    except TargetError as exc:
        raise _fail(str(exc)) from None


def _age(moment: datetime | None) -> str:
    if moment is None:
        return "?"
    seconds = int((datetime.now(UTC) - moment).total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit} ago"
    return f"{max(seconds, 0)}s ago"


@dlq_app.command("list")
def list_(
    runtime: str = RUNTIME,
    as_json: bool = typer.Option(False, "--json", help="one JSON object per line instead of a table"),
    limit: int = typer.Option(1000, min=1, help="list at most this many messages"),
    stack: str = STACK,
    config: Path = CONFIG,
    region: str = REGION,
) -> None:
    """Dead-lettered tasks of a runtime, oldest first, with their last error (the DLQ is left unchanged)."""
    dlq = _dead_letters(runtime, stack, config, region)
    try:
        entries = dlq.peek(limit)
    except (ClientError, BotoCoreError) as exc:
        raise _fail(f"cannot read the DLQ of {runtime}: {exc}") from None
    if as_json:
        for entry in entries:
            print(json.dumps(entry.as_dict()))
        return
    if not entries:
        console.print(f"the DLQ of {runtime} is empty")
        return
    table = Table(title=f"DLQ of {runtime} ({len(entries)})")
    for column in ("task id", "status", "attempts", "sent", "last error"):
        table.add_column(column, overflow="fold")
    for e in entries:
        table.add_row(
            e.task_id or f"(message {e.message_id})",
            e.status or "-",
            "-" if e.attempts is None else str(e.attempts),
            _age(e.sent_at),
            e.error,
        )
    Console(width=max(Console().width, 120)).print(table)


@dlq_app.command("redrive")
def redrive(
    runtime: str = RUNTIME,
    task_ids: list[str] = typer.Option(None, "--id", help="only this task (repeatable); default: every message"),
    method: str = typer.Option("auto", help="auto | move-task | loop (auto: move task on AWS, loop otherwise)"),
    stack: str = STACK,
    config: Path = CONFIG,
    region: str = REGION,
) -> None:
    """Move dead-lettered tasks back to the runtime's queue and reset their status rows to queued."""
    if method not in ("auto", "move-task", "loop"):
        raise _fail(f"--method must be auto, move-task or loop, not {method!r}")
    if task_ids and method == "move-task":
        raise _fail("a message-move task moves the whole DLQ; --id needs --method loop (or auto)")
    dlq = _dead_letters(runtime, stack, config, region)
    method_: RedriveMethod = method  # type: ignore[assignment]
    try:
        result = dlq.redrive(set(task_ids) if task_ids else None, method_)
    except (ClientError, BotoCoreError) as exc:
        raise _fail(f"redrive of {runtime} failed: {exc}") from None
    missing = sorted(set(task_ids or ()) - set(result.moved))
    for task_id in result.moved:
        print(task_id)
    how = f"message-move task {result.move_task_handle}" if result.move_task_handle else "receive/send/delete"
    console.print(
        f"redrove {len(result.moved)} message(s) to {runtime} ({how}); {len(result.reset)} status row(s) reset to"
        " queued",
        highlight=False,
    )
    if missing:
        raise _fail(f"not in the DLQ of {runtime}: {', '.join(missing)}")
