"""``sdeks top``'s arithmetic: rates, latencies and percentiles from status rows, and one rendered frame."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

from rich.console import Console

from sdeks.cli.top_cmd import render
from sdeks.ops.snapshot import QueueStats, Snapshot, percentile, runtime_activity, task_activity

NOW = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)


def at(seconds_ago: float) -> str:
    return (NOW - timedelta(seconds=seconds_ago)).isoformat().replace("+00:00", "Z")


def row(task_id: str, status: str, created: float, started: float, finished: float | None, **extra) -> dict:
    times = {"created_at": at(created), "started_at": at(started)}
    if finished is not None:
        times["finished_at"] = at(finished)
    return {"id": task_id, "runtime": extra.pop("runtime", "rt"), "status": status, **times, **extra}


ROWS = [
    row("a", "succeeded", 30, 28, 20),
    row("b", "succeeded", 200, 190, 150),
    row("c", "failed", 50, 45, 40),
    row(
        "d",
        "running",
        12,
        10,
        None,
        attempts=2,
        progress={"step": 5, "steps": 20, "fraction": Decimal("0.25"), "image": 1, "images": 1},  # as DynamoDB reads it
    ),
    row("e", "succeeded", 9, 8, 1, runtime="other"),
]


def test_task_activity_splits_running_and_finished_with_their_latencies():
    running, finished = task_activity(ROWS, NOW)
    assert [(t.id, t.attempt, t.progress) for t in running] == [("d", 2, 0.25)]
    assert [t.id for t in finished] == ["e", "a", "c", "b"], "newest first"
    a = next(t for t in finished if t.id == "a")
    assert (a.queued_s, a.run_s, a.total_s) == (2.0, 8.0, 10.0)


def test_rates_count_the_last_minute_and_percentiles_the_successes():
    _, finished = task_activity(ROWS, NOW)
    activity = runtime_activity("rt", finished, NOW)
    assert (activity.succeeded_per_min, activity.failed_per_min) == (1, 1)
    assert activity.total_p50_s == 30.0  # successes a (10 s) and b (50 s)
    assert activity.total_p95_s == 48.0


def test_percentile():
    assert percentile([], 0.5) is None
    assert percentile([7.0], 0.95) == 7.0
    assert percentile([float(n) for n in range(1, 101)], 0.95) == 95.05


def test_frame_shows_every_part():
    running, finished = task_activity(ROWS, NOW)
    snap = Snapshot(
        taken_at=NOW,
        label="stack demo",
        queues=[QueueStats("rt", waiting=4, in_flight=1, delayed=2, dlq=3)],
        running=running,
        recent=finished,
        activity={"rt": runtime_activity("rt", finished, NOW)},
        errors=["task table: AccessDenied"],
    )
    console = Console(width=160, record=True)
    console.print(render(snap))
    text = console.export_text()
    assert "sdeks top — stack demo — 12:00:00 UTC" in text
    row = next(line for line in text.splitlines() if line.startswith("│ rt "))
    assert [c.strip() for c in row.split("│")[1:-1]] == ["rt", "4", "1", "2", "3", "1", "1", "30.0s", "48.0s"]
    running_line = next(line for line in text.splitlines() if line.startswith("│ d "))
    assert "25%" in running_line and "10.0s" in running_line
    assert "! task table: AccessDenied" in text
