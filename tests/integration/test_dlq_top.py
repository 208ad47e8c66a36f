"""``sdeks dlq`` and ``sdeks top`` against a real local stack (moto server, API, runtime, agent).

A dead-lettered task is produced as the agent leaves one behind after its last
transient failure: the status row marked failed with the DLQ reason, the task
message in the runtime's DLQ (sent to the DLQ URL from ``.sdeks/local.json``).
A redriven task must then really run: the stack's agent picks it up and the
row ends ``succeeded``.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import boto3
import pytest

from sdeks.local.state import LocalState
from sdeks.tasks_table import TaskTable
from tests.fixtures.agent import task_message
from tests.fixtures.local import local_stack, sdeks

pytestmark = pytest.mark.slow

CONFIG = """
project: opstest
runtimes:
  - name: sdruntime
    type: sdwebui
    max_receive_count: 3
"""
DLQ_REASON = "moved to the dead-letter queue after 3 attempts: runtime unavailable: HTTP 503"


@pytest.fixture(scope="module")
def stack(tmp_path_factory, tiny_model_dir):
    with local_stack(tmp_path_factory.mktemp("ops"), CONFIG, Path(tiny_model_dir)) as running:
        yield running


def aws(state: LocalState, service: str):
    return boto3.client(service, endpoint_url=state.aws_endpoint_url, region_name=state.region)


def table(state: LocalState) -> TaskTable:
    return TaskTable.from_name(state.task_table, endpoint_url=state.aws_endpoint_url)


def dead_letter(state: LocalState, task_id: str) -> None:
    """What the agent leaves behind after the last failed delivery: failed row, message in the DLQ."""
    message = task_message(task_id=task_id)
    rows = table(state)
    rows.record_submission(task_id, "sdruntime", "fp-" + task_id)
    rows.mark_running(task_id, "sdruntime", 3)
    rows.mark_failed(task_id, DLQ_REASON)
    aws(state, "sqs").send_message(
        QueueUrl=state.runtimes["sdruntime"].dlq_url,
        MessageBody=json.dumps(message),
        MessageAttributes={"runtime": {"DataType": "String", "StringValue": "sdruntime"}},
    )


def dlq_entries(root: Path) -> list[dict]:
    result = sdeks(root, "dlq", "list", "--runtime", "sdruntime", "--json", check=True)
    return [json.loads(line) for line in result.stdout.splitlines()]


def wait_status(state: LocalState, task_id: str, want: str, timeout: float = 120) -> dict:
    deadline = time.monotonic() + timeout
    row = None
    while time.monotonic() < deadline:
        row = table(state).get(task_id)
        if row is not None and row.status == want:
            return row.model_dump()
        time.sleep(0.3)
    raise AssertionError(f"{task_id} did not reach {want}: {row}")


def test_dlq_list_of_an_empty_dlq(stack):
    root, _ = stack
    result = sdeks(root, "dlq", "list", "--runtime", "sdruntime", check=True)
    assert "the DLQ of sdruntime is empty" in result.stderr
    assert dlq_entries(root) == []


def test_dlq_list_shows_each_task_with_its_last_error_and_consumes_nothing(stack):
    root, state = stack
    dead_letter(state, "dlq-listed")
    aws(state, "sqs").send_message(QueueUrl=state.runtimes["sdruntime"].dlq_url, MessageBody="not json at all")

    entries = dlq_entries(root)
    by_id = {e["task_id"]: e for e in entries}
    assert set(by_id) == {"dlq-listed", None}
    assert by_id["dlq-listed"]["error"] == DLQ_REASON
    assert by_id["dlq-listed"]["status"] == "failed"
    assert by_id["dlq-listed"]["attempts"] == 3
    assert by_id[None]["error"] == "not a task message: body is not JSON"

    table_view = sdeks(root, "dlq", "list", "--runtime", "sdruntime", check=True).stdout
    assert "dlq-listed" in table_view and "runtime unavailable: HTTP 503" in table_view
    assert len(dlq_entries(root)) == 2, "listing twice in a row sees the same messages: nothing was consumed"


def test_top_once_shows_queue_and_dlq_depth_per_runtime(stack):
    root, _ = stack
    frame = top_frame(root)
    assert "sdeks top — the local stack" in frame
    waiting, in_flight, delayed, dlq = runtime_row(frame, "sdruntime")[1:5]
    assert dlq == "2", "the two dead-lettered messages of the test above"
    assert (waiting, in_flight, delayed) == ("0", "0", "0")


def test_redrive_one_task_by_id_runs_it_and_leaves_the_rest(stack):
    root, state = stack
    result = sdeks(root, "dlq", "redrive", "--runtime", "sdruntime", "--id", "dlq-listed", check=True)
    assert result.stdout.split() == ["dlq-listed"]
    assert "1 status row(s) reset to queued" in result.stderr
    done = wait_status(state, "dlq-listed", "succeeded")
    assert done["error"] is None and len(done["images"]) == 1
    assert [e["task_id"] for e in dlq_entries(root)] == [None], "the unparseable message stays in the DLQ"


def test_redrive_of_an_id_not_in_the_dlq_says_so(stack):
    root, _ = stack
    result = sdeks(root, "dlq", "redrive", "--runtime", "sdruntime", "--id", "never-dead")
    assert result.returncode == 1
    assert "not in the DLQ of sdruntime: never-dead" in result.stderr
    assert len(dlq_entries(root)) == 1


def test_redrive_all_moves_every_message_back(stack):
    root, state = stack
    dead_letter(state, "dlq-all-1")
    dead_letter(state, "dlq-all-2")
    result = sdeks(root, "dlq", "redrive", "--runtime", "sdruntime", check=True)
    moved = result.stdout.split()
    assert {"dlq-all-1", "dlq-all-2"} <= set(moved) and len(moved) == 3
    assert "receive/send/delete" in result.stderr, "moto has no message-move tasks: the loop is used"
    assert "2 status row(s) reset to queued" in result.stderr
    assert dlq_entries(root) == []
    for task_id in ("dlq-all-1", "dlq-all-2"):
        wait_status(state, task_id, "succeeded")


def test_unknown_runtime_is_a_clear_error(stack):
    root, _ = stack
    result = sdeks(root, "dlq", "list", "--runtime", "nope")
    assert result.returncode == 1
    assert "unknown runtime 'nope' in the local stack; runtimes: sdruntime" in result.stderr
    assert "Traceback" not in result.stderr


def test_without_a_local_stack_the_commands_say_what_to_do(tmp_path):
    result = sdeks(tmp_path, "dlq", "list", "--runtime", "sdruntime")
    assert result.returncode == 1
    assert "no local stack is running here" in result.stderr


# --- sdeks top ------------------------------------------------------------------------------------


def top_frame(root: Path) -> str:
    return sdeks(root, "top", "--once", check=True).stdout


def runtime_row(frame: str, runtime: str) -> list[str]:
    """The cells of ``runtime``'s line in the runtimes table of a frame."""
    for line in frame.splitlines():
        cells = [c.strip() for c in line.split("│")[1:-1]]
        if cells and cells[0] == runtime:
            return cells
    raise AssertionError(f"no row for {runtime} in:\n{frame}")


def section(frame: str, title: str) -> str:
    """The lines of a frame from the table titled ``title`` up to the next title."""
    lines = frame.splitlines()
    start = next(n for n, line in enumerate(lines) if line.startswith(title))
    end = next((n for n in range(start + 1, len(lines)) if lines[n][:1].isalpha()), len(lines))
    return "\n".join(lines[start:end])


def test_top_shows_a_running_task_with_progress_then_its_latencies(stack):
    root, state = stack
    sdeks(root, "submit", "--prompt", "a slow one", "--steps", "40", "--size", "256", "--id", "top-long", check=True)
    deadline = time.monotonic() + 120
    seen = ""
    while time.monotonic() < deadline:
        running = section(top_frame(root), "running now")
        if "top-long" in running and "%" in running:
            seen = running
            break
        time.sleep(0.2)
    assert seen, "top never showed the task running with its progress"
    line = next(line for line in seen.splitlines() if "top-long" in line)
    cells = [c.strip() for c in line.split("│")[1:-1]]
    assert cells[1:3] == ["sdruntime", "1"]
    assert 0 <= int(cells[4].rstrip("%")) <= 100

    wait_status(state, "top-long", "succeeded")
    frame = top_frame(root)
    assert "top-long" not in section(frame, "running now")
    finished = next(line for line in section(frame, "recently finished").splitlines() if "top-long" in line)
    cells = [c.strip() for c in finished.split("│")[1:-1]]
    assert cells[1:3] == ["sdruntime", "succeeded"]
    queue_wait, run, total = (float(c.rstrip("s")) for c in cells[3:6])
    assert run > 0 and abs(total - (run + queue_wait)) <= 0.1 + 1e-9  # each cell is rounded to 0.1 s
    row = runtime_row(frame, "sdruntime")
    assert int(row[5]) >= 1, "ok/min counts the task that just finished"
    assert row[7] != "-" and row[8] != "-", "p50/p95 of end-to-end time"
