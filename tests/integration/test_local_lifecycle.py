"""Task lifecycle end to end in local mode: started events, cancel (queued and running), through the real API,
agent and runtime.

One stack per module (``sdeks local up --detach``) with one sdwebui runtime on
the tiny model; a results subscriber (:class:`sdeks.events.EventSubscription`)
sees every event the agent publishes, with its message attributes.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path
from typing import Any

import boto3
import httpx
import pytest

from sdeks.contract import TaskStartedEvent
from sdeks.events import EventSubscription
from sdeks.local.state import LocalState
from tests.fixtures.local import local_stack, sdeks

pytestmark = pytest.mark.slow

CONFIG = """
project: lifetest
runtimes:
  - name: sdruntime
    type: sdwebui
"""

LONG = {"prompt": "a long walk", "steps": 150, "width": 128, "height": 128, "n_iter": 4}
"""A task the tiny model needs several seconds for: long enough to cancel while it runs."""
SHORT = {"prompt": "a kite", "steps": 2, "width": 64, "height": 64}


@pytest.fixture(scope="module")
def running(tmp_path_factory, tiny_model_dir) -> Iterator[tuple[Path, LocalState]]:
    with local_stack(tmp_path_factory.mktemp("life"), CONFIG, Path(tiny_model_dir)) as running:
        yield running


@pytest.fixture(scope="module")
def stack(running) -> LocalState:
    return running[1]


@pytest.fixture(scope="module")
def results(stack: LocalState) -> Iterator[EventSubscription]:
    subscription = EventSubscription.create(stack.results_topic_arn, stack.aws_endpoint_url, stack.region, started=True)
    yield subscription
    subscription.delete()


def api(state: LocalState, method: str, path: str, **kwargs: Any) -> httpx.Response:
    return httpx.request(method, f"{state.api_url}{path}", headers={"x-api-key": state.api_key}, timeout=30, **kwargs)


def submit(state: LocalState, task_id: str, content: dict) -> None:
    body = {
        "task": {"metadata": {"id": task_id, "runtime": "sdruntime", "tasktype": "text-to-image"}, "content": content}
    }
    resp = api(state, "POST", "/v1alpha2", json=body)
    assert resp.status_code == 202, resp.text


def status(state: LocalState, task_id: str) -> dict:
    resp = api(state, "GET", f"/v1alpha2/tasks/{task_id}")
    assert resp.status_code == 200, resp.text
    return resp.json()


def wait_for(condition, timeout_s: float, what: str, every_s: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if value := condition():
            return value
        time.sleep(every_s)
    raise AssertionError(f"timed out waiting for {what}")


def runtime_progress(state: LocalState) -> dict:
    return httpx.get(f"{state.runtimes['sdruntime'].runtime_url}/sdapi/v1/progress", timeout=5).json()


class Events:
    """Every event on the results topic with its ``status`` attribute, collected as the test goes."""

    def __init__(self, subscription: EventSubscription) -> None:
        self.subscription = subscription
        self.seen: list[dict] = []

    def of(self, task_id: str, count: int = 1, timeout_s: float = 120) -> list[dict]:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            mine = [e for e in self.seen if e["body"]["id"] == task_id]
            if len(mine) >= count:
                return mine
            self.seen.extend(self._poll())
        raise AssertionError(f"expected {count} events of {task_id}, saw {self.seen}")

    def _poll(self) -> list[dict]:
        sub = self.subscription
        got = sub.sqs.receive_message(
            QueueUrl=sub.queue_url, WaitTimeSeconds=1, MaxNumberOfMessages=10, MessageAttributeNames=["All"]
        ).get("Messages", [])
        for message in got:
            sub.sqs.delete_message(QueueUrl=sub.queue_url, ReceiptHandle=message["ReceiptHandle"])
        return [
            {
                "body": json.loads(m["Body"]),
                "attributes": {k: v["StringValue"] for k, v in m.get("MessageAttributes", {}).items()},
            }
            for m in got
        ]


@pytest.fixture(scope="module")
def events(results: EventSubscription) -> Events:
    return Events(results)


def images_in_s3(state: LocalState, task_id: str) -> list[str]:
    s3 = boto3.client("s3", endpoint_url=state.aws_endpoint_url, region_name=state.region)
    listing = s3.list_objects_v2(Bucket=state.output_bucket, Prefix=f"output/{task_id}/")
    return [o["Key"] for o in listing.get("Contents", []) if o["Key"].endswith(".png")]


def assert_cancelled_event(event: dict) -> None:
    assert event["attributes"]["status"] == "cancelled"
    body = event["body"]
    assert (body["status"], body["result"], body["image_url"]) == ("cancelled", False, [])


def test_a_run_announces_its_start_then_its_completion(stack, events):
    submit(stack, "announced", {**SHORT, "steps": 8})
    started, completed = events.of("announced", count=2)
    assert started["attributes"] == {"runtime": "sdruntime", "status": "running"}
    body = TaskStartedEvent.model_validate(started["body"])
    assert (body.id, body.runtime, body.status, body.attempt) == ("announced", "sdruntime", "running", 1)
    assert completed["attributes"] == {"runtime": "sdruntime", "status": "succeeded"}
    assert completed["body"]["image_urls"] is None, "presigned URLs only with output.presign_images"
    row = status(stack, "announced")
    row_started = datetime.fromisoformat(row["started_at"].replace("Z", "+00:00"))
    assert abs((body.started_at - row_started).total_seconds()) < 0.001, "the row keeps milliseconds"


def test_outcome_subscribers_never_see_starts(stack):
    outcomes = EventSubscription.create(stack.results_topic_arn, stack.aws_endpoint_url, stack.region)
    try:
        submit(stack, "outcome-only", SHORT)
        got = list(outcomes.follow(count=1, timeout_s=120))
        assert [(e["id"], e["status"]) for e in got] == [("outcome-only", "succeeded")]
    finally:
        outcomes.delete()


def test_cancel_while_running_interrupts_the_runtime(stack, events):
    submit(stack, "cancel-running", LONG)
    wait_for(lambda: runtime_progress(stack)["state"]["sampling_step"] > 0, 60, "the runtime to start the task")
    assert status(stack, "cancel-running")["status"] == "running"
    asked = time.monotonic()
    resp = api(stack, "POST", "/v1alpha2/tasks/cancel-running/cancel")
    assert resp.status_code == 200 and resp.json()["status"] == "cancelled", resp.text
    wait_for(lambda: runtime_progress(stack)["state"]["interrupted"], 10, "the runtime's interrupt", every_s=0.02)
    interrupted_after_s = time.monotonic() - asked
    assert interrupted_after_s < 1.5, f"interrupted {interrupted_after_s:.2f} s after the cancel"
    started, event = events.of("cancel-running", count=2)
    assert started["attributes"]["status"] == "running"
    assert_cancelled_event(event)
    assert event["body"]["attempt"] == 1
    row = status(stack, "cancel-running")
    assert (row["status"], row["images"]) == ("cancelled", [])
    assert images_in_s3(stack, "cancel-running") == []


def test_cancel_while_queued_never_runs(stack, events):
    submit(stack, "ahead-1", LONG)
    submit(stack, "ahead-2", LONG)  # waits at the runtime behind the first
    submit(stack, "cancel-queued", SHORT)
    resp = api(stack, "POST", "/v1alpha2/tasks/cancel-queued/cancel")
    assert resp.status_code == 200 and resp.json()["status"] == "cancelled", resp.text
    for ahead in ("ahead-1", "ahead-2"):  # clear the runtime for the next test
        api(stack, "POST", f"/v1alpha2/tasks/{ahead}/cancel")
    (event,) = events.of("cancel-queued")  # never started: no start event
    assert_cancelled_event(event)
    assert event["body"]["timings"] is None, "a task that never ran has no run timings"
    row = status(stack, "cancel-queued")
    assert (row["status"], row["started_at"], row["attempts"]) == ("cancelled", None, 0)
    assert images_in_s3(stack, "cancel-queued") == []
    for ahead in ("ahead-1", "ahead-2"):
        assert_cancelled_event(events.of(ahead, count=2)[-1])
    again = api(stack, "POST", "/v1alpha2/tasks/cancel-queued/cancel")
    assert again.status_code == 200 and again.json()["status"] == "cancelled"


def test_progress_rises_while_a_task_runs(stack, events):
    submit(stack, "progressing", LONG)
    seen: list[dict] = []

    def enough() -> bool:
        current = status(stack, "progressing")
        if current["status"] == "running" and current["progress"]:
            seen.append(current["progress"])
        return len({p["fraction"] for p in seen}) >= 3

    wait_for(enough, 60, "three progress reports", every_s=0.2)
    fractions = [p["fraction"] for p in seen]
    assert fractions == sorted(fractions) and fractions[-1] > fractions[0], fractions
    assert all(0 <= f <= 1 for f in fractions)
    last = seen[-1]
    assert (last["steps"], last["images"]) == (LONG["steps"], LONG["n_iter"]) and 1 <= last["image"] <= 4
    assert 1 <= last["step"] <= last["steps"]
    api(stack, "POST", "/v1alpha2/tasks/progressing/cancel")
    events.of("progressing", count=2)
    ended = status(stack, "progressing")
    assert ended["status"] == "cancelled" and ended["progress"] is None, "progress is shown only while running"


def test_submit_wait_draws_a_progress_bar(running, tmp_path):
    root, _ = running
    result = sdeks(
        root, "submit", "--prompt", "a bar", "--size", "64", "--steps", "60", "--id", "barred",
        "--wait", "--out", str(tmp_path), check=True,
    )  # fmt: skip
    assert "barred: queued" in result.stderr and "barred: succeeded" in result.stderr
    assert "100%" in result.stderr, result.stderr
    assert [Path(line).name for line in result.stdout.split()] == ["barred-1.png"]


def test_a_queued_task_says_how_many_are_ahead_and_the_cli_shows_it(running):
    root, stack = running
    # minutes on the tiny model: it runs until the test cancels it, however fast the machine
    submit(stack, "blocker", {**LONG, "width": 512, "height": 512})
    wait_for(lambda: status(stack, "blocker")["status"] == "running", 60, "the blocker to run")
    for task_id in ("behind-1", "behind-2", "behind-3"):
        submit(stack, task_id, SHORT)
    queued = status(stack, "behind-3")
    assert queued["status"] == "queued"
    # the running blocker and the two submitted before it (the queue's SQS counts, less the task itself)
    assert queued["tasks_ahead_approx"] == 3, queued
    with ThreadPoolExecutor(1) as pool:
        follow = pool.submit(sdeks, root, "status", "behind-3", "--follow", "--timeout", "120")
        time.sleep(3)  # the CLI re-reads a queued task every second meanwhile
        for task_id in ("blocker", "behind-1", "behind-2"):
            assert api(stack, "POST", f"/v1alpha2/tasks/{task_id}/cancel").status_code == 200
        result = follow.result()
    assert result.returncode == 0, result.stderr
    assert "behind-3: queued (~3 tasks ahead)" in result.stderr, result.stderr
    assert json.loads(result.stdout)["status"] == "succeeded"
    assert status(stack, "behind-3")["tasks_ahead_approx"] is None, "only a queued task carries it"
