"""The real agent process (``python -m queue_agent``) against the moto server and a fake runtime."""

from __future__ import annotations

import json
import time

import pytest

from tests.fixtures.agent import PNG_1x1, task_message

pytestmark = pytest.mark.slow


def test_text_to_image_happy_path(stack, fake_runtime, start_agent):
    agent = start_agent(stack.resources, fake_runtime.url)
    msg = task_message(
        {"prompt": "a cat", "steps": 2, "width": 64, "height": 64, "batch_size": 2}, context={"user": "u1"}
    )
    task_id = stack.publish(msg)
    (event,) = stack.wait_events(task_id)
    bucket = stack.resources.output_bucket
    assert event["status"] == "succeeded" and event["result"] is True
    assert event["_attributes"] == {"runtime": "sdruntime", "status": "succeeded"}
    assert event["image_url"] == [
        f"s3://{bucket}/output/{task_id}/{task_id}-1.png",
        f"s3://{bucket}/output/{task_id}/{task_id}-2.png",
    ]
    assert event["output_url"] == f"s3://{bucket}/output/{task_id}/{task_id}.json"
    assert event["context"] == {"user": "u1"} and event["attempt"] == 1
    assert event["timings"]["run_s"] >= 0
    assert stack.keys(f"output/{task_id}/") == [
        f"output/{task_id}/{task_id}-1.png",
        f"output/{task_id}/{task_id}-2.png",
        f"output/{task_id}/{task_id}.json",
    ]
    png = stack.s3.get_object(Bucket=bucket, Key=f"output/{task_id}/{task_id}-1.png")["Body"].read()
    assert png == PNG_1x1
    info = json.loads(stack.s3.get_object(Bucket=bucket, Key=f"output/{task_id}/{task_id}.json")["Body"].read())
    assert info["info"]["seed"] == 1234 and info["parameters"]["prompt"] == "a cat"
    row = stack.row(task_id)
    assert row["status"] == "succeeded" and len(row["images"]) == 2
    deadline = time.monotonic() + 5
    while stack.queue_counts() != (0, 0) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert stack.queue_counts() == (0, 0)
    metrics = agent.metrics()
    assert 'sdeks_agent_tasks_total{runtime="sdruntime",status="succeeded"} 1.0' in metrics
    assert "sdeks_agent_runtime_busy_ratio" in metrics
    for entry in agent.logs():
        assert "iVBOR" not in json.dumps(entry)
