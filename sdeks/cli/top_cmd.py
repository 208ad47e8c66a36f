"""``sdeks top``: a live terminal view of a local or deployed stack, refreshed every second."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path

import typer
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from sdeks.ops.snapshot import Collector, Snapshot
from sdeks.ops.target import TargetError, resolve_target

console = Console(stderr=True)
RECENT_ROWS = 10


def register(app: typer.Typer) -> None:
    app.command("top")(top)


def _secs(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.1f}s" if value < 120 else f"{value / 60:.1f}m"


def render(snap: Snapshot) -> Group:
    """The frame: per-runtime queues and rates, tasks running now, the latest finished tasks."""
    header = Text(f"sdeks top — {snap.label} — {snap.taken_at.astimezone(UTC):%H:%M:%S} UTC", style="bold")
    runtimes = Table(title="runtimes", title_justify="left", expand=False)
    for column in ("runtime", "waiting", "in flight", "delayed", "DLQ", "ok/min", "failed/min", "p50", "p95"):
        runtimes.add_column(column, justify="left" if column == "runtime" else "right")
    for q in snap.queues:
        a = snap.activity.get(q.runtime)
        runtimes.add_row(
            q.runtime,
            str(q.waiting),
            str(q.in_flight),
            str(q.delayed),
            Text(str(q.dlq), style="bold red" if q.dlq else ""),
            str(a.succeeded_per_min if a else 0),
            str(a.failed_per_min if a else 0),
            _secs(a.total_p50_s if a else None),
            _secs(a.total_p95_s if a else None),
        )
    running = Table(title=f"running now ({len(snap.running)})", title_justify="left")
    for column in ("task", "runtime", "attempt", "running for", "progress"):
        running.add_column(column)
    for t in snap.running:
        elapsed = (snap.taken_at - t.started_at).total_seconds() if t.started_at else None
        running.add_row(
            t.id, t.runtime, str(t.attempt), _secs(elapsed), "-" if t.progress is None else f"{t.progress:.0%}"
        )
    recent = Table(title="recently finished (end-to-end = queue wait + run)", title_justify="left")
    for column in ("task", "runtime", "status", "queue wait", "run", "end-to-end", "finished"):
        recent.add_column(column)
    for t in snap.recent[:RECENT_ROWS]:
        recent.add_row(
            t.id,
            t.runtime,
            Text(t.status, style="green" if t.status == "succeeded" else "red"),
            _secs(t.queued_s),
            _secs(t.run_s),
            _secs(t.total_s),
            f"{t.finished_at.astimezone(UTC):%H:%M:%S}",
        )
    parts = [header, runtimes, running, recent]
    parts += [Text(f"! {error}", style="yellow") for error in snap.errors]
    return Group(*parts)


def top(
    once: bool = typer.Option(False, "--once", help="print one frame and exit; exit 1 if a source was unreadable"),
    interval: float = typer.Option(1.0, min=0.2, help="seconds between refreshes"),
    table_every: float = typer.Option(
        None, min=0.0, help="seconds between task-table scans (default: every refresh locally, 5 s on a stack)"
    ),
    stack: str = typer.Option(None, "--stack", help="deployed stack (project) name; default: the local stack here"),
    config: Path = typer.Option(None, "--config", "-c", help="with --stack: config listing its runtimes"),
    region: str = typer.Option(None, "--region", help="with --stack: AWS region"),
) -> None:
    """Live view: per-runtime queue depth, in-flight, DLQ, tasks/min, latencies, tasks running now."""
    try:
        target = resolve_target(stack, config, region)
    except TargetError as exc:
        console.print(f"[red]error:[/red] {exc}", highlight=False)
        raise typer.Exit(1) from None
    every = table_every if table_every is not None else (0.0 if target.local else 5.0)
    collector = Collector(target, table_every_s=every)
    try:
        if once:
            snap = collector.snapshot()
            Console(width=max(Console().width, 120)).print(render(snap))
            if snap.errors:  # the frame is printed, but a script learns that a source was unreadable
                raise typer.Exit(1)
            return
        with Live(render(collector.snapshot()), console=Console(), screen=True, auto_refresh=False) as live:
            while True:
                time.sleep(interval)
                live.update(render(collector.snapshot(datetime.now(UTC))), refresh=True)
    except KeyboardInterrupt:
        pass
    finally:
        collector.close()
