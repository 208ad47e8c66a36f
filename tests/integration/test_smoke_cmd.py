"""``sdeks smoke`` against a real local stack (moto server, API, agent, runtime with the tiny model)."""

from __future__ import annotations

from pathlib import Path

import pytest

from sdeks.local.provision import local_session
from tests.fixtures.local import local_stack, sdeks

pytestmark = pytest.mark.slow

CONFIG = """
project: smoketest
runtimes:
  - name: sdruntime
    type: sdwebui
"""


@pytest.fixture(scope="module")
def stack(tmp_path_factory, tiny_model_dir):
    with local_stack(tmp_path_factory.mktemp("smoke"), CONFIG, Path(tiny_model_dir)) as running:
        yield running


def test_smoke_runs_one_task_end_to_end(stack):
    stack_root, state = stack
    result = sdeks(stack_root, "smoke", "--local", "--size", "64", "--steps", "2", "--timeout", "180", "--out", "got")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "submitted " in result.stdout and "succeeded" in result.stdout
    image_line = next(line for line in result.stdout.splitlines() if line.startswith("image: "))
    image = stack_root / image_line.split()[1]
    assert image.parent == stack_root / "got"
    assert image.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    assert "timings: event" in result.stdout and "agent: queued" in result.stdout
    # The temporary queue and its subscription are gone again.
    sqs = local_session(state.region).client("sqs", endpoint_url=state.aws_endpoint_url)
    assert not sqs.list_queues(QueueNamePrefix="sdeks-events-").get("QueueUrls")
    sns = local_session(state.region).client("sns", endpoint_url=state.aws_endpoint_url)
    subscriptions = sns.list_subscriptions_by_topic(TopicArn=state.results_topic_arn)["Subscriptions"]
    endpoints = [s["Endpoint"] for s in subscriptions]
    assert not any("sdeks-events-" in e for e in endpoints)


def test_smoke_needs_exactly_one_target(tmp_path):
    both = sdeks(tmp_path, "smoke", "--local", "--stack", "x")
    neither = sdeks(tmp_path, "smoke")
    for result in (both, neither):
        assert result.returncode == 2
        assert "exactly one of --stack NAME" in result.stderr
        assert "Traceback" not in result.stderr


def test_smoke_without_a_local_stack_says_so(tmp_path):
    result = sdeks(tmp_path, "smoke", "--local")
    assert result.returncode == 1
    assert "no local stack found" in result.stderr and "Traceback" not in result.stderr
