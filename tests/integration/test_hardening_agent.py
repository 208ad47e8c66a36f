"""Hardening at the agent, through the real agent process, the moto server and a runtime."""

from __future__ import annotations

import json
import time

import pytest

from tests.fixtures.agent import task_message

pytestmark = pytest.mark.slow


def _nested(depth: int) -> object:
    value: object = "x"
    for _ in range(depth):
        value = {"a": value}
    return value


def test_too_deep_message_fails_at_once_and_never_reaches_the_runtime(stack, fake_runtime, start_agent):
    """A message that bypassed the API's depth check (same limit) fails permanently, named, not retried."""
    start_agent(stack.resources, fake_runtime.url)
    msg = task_message({"prompt": "a cat", "steps": 2, "width": 64, "height": 64, "extension_args": _nested(60)})
    stack.send_raw(json.dumps(msg))
    (event,) = stack.wait_events(msg["id"])
    assert event["status"] == "failed" and "at most 32" in event["error"]
    assert fake_runtime.generation_calls() == []
    deadline = time.monotonic() + 10
    while stack.queue_counts() != (0, 0) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert stack.queue_counts() == (0, 0)
    assert stack.queue_counts(stack.queue.dlq_url) == (0, 0)
