"""Happy paths of the real agent against the real sd_runtime (tiny model) and the moto server."""

from __future__ import annotations

import io

import pytest

from tests.fixtures.agent import task_message

pytestmark = pytest.mark.slow


def test_txt2img_then_img2img_from_s3(stack, sd_runtime_url, start_agent):
    from PIL import Image

    start_agent(stack.resources, sd_runtime_url, task_timeout_s=120)
    bucket = stack.resources.output_bucket
    t2i = task_message({"prompt": "a red cube", "steps": 2, "width": 64, "height": 64, "seed": 7})
    stack.publish(t2i)
    (event,) = stack.wait_events(t2i["id"], timeout=120)
    assert event["status"] == "succeeded", event
    key = f"output/{t2i['id']}/{t2i['id']}-1.png"
    assert event["image_url"] == [f"s3://{bucket}/{key}"]
    png = stack.s3.get_object(Bucket=bucket, Key=key)["Body"].read()
    assert Image.open(io.BytesIO(png)).size == (64, 64)

    i2i = task_message(
        {
            "prompt": "a blue cube",
            "steps": 2,
            "width": 64,
            "height": 64,
            "seed": 7,
            "denoising_strength": 0.5,
            "alwayson_scripts": {"image_link": f"s3://{bucket}/{key}"},
        },
        tasktype="image-to-image",
    )
    stack.publish(i2i)
    (event,) = stack.wait_events(i2i["id"], timeout=120)
    assert event["status"] == "succeeded", event
    out = stack.s3.get_object(Bucket=bucket, Key=f"output/{i2i['id']}/{i2i['id']}-1.png")["Body"].read()
    assert Image.open(io.BytesIO(out)).size == (64, 64)
    assert stack.row(i2i["id"])["status"] == "succeeded"


def test_two_tasks_in_flight_at_the_real_runtime(stack, sd_runtime_url, start_agent):
    """The real runtime queues the second request behind the first; both come back with their own seeds."""
    import json

    start_agent(stack.resources, sd_runtime_url, task_timeout_s=120)
    bucket = stack.resources.output_bucket
    msgs = [task_message({"prompt": "a cube", "steps": 2, "width": 64, "height": 64, "seed": s}) for s in (11, 12, 13)]
    for msg in msgs:
        stack.publish(msg)
    for msg, seed in zip(msgs, (11, 12, 13), strict=True):
        (event,) = stack.wait_events(msg["id"], timeout=120)
        assert event["status"] == "succeeded", event
        key = f"output/{msg['id']}/{msg['id']}.json"
        info = json.loads(stack.s3.get_object(Bucket=bucket, Key=key)["Body"].read())
        assert info["info"]["seed"] == seed and info["info"]["interrupted"] is False
