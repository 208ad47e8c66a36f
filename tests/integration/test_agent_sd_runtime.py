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


def test_runtime_without_its_model_fails_tasks_with_the_reason_then_serves_once_it_appears(
    stack, tiny_model_dir, start_agent, tmp_path
):
    """A missing checkpoint: the runtime serves anyway and says why, the agent drains the queue with that
    reason (so KEDA and Karpenter scale the node away), and both serve once the model is pushed."""
    import shutil

    import httpx

    from tests.fixtures.runtime import start_sd_runtime
    from tests.integration.test_agent_process import wait_until

    models = tmp_path / "models"
    models.mkdir()
    configured = models / "tiny-sd"
    with start_sd_runtime(
        configured, models_dir=models, up_path="/livez", extra_args=["--model-recheck-s", "0.5"]
    ) as url:
        health = httpx.get(f"{url}/healthz", timeout=5)
        assert health.status_code == 503
        assert health.json()["status"] == "no_model"
        assert health.json()["error"] == "model file not found: tiny-sd"
        assert str(tmp_path) not in health.text, "a server path outside the models dir leaked"
        assert httpx.get(f"{url}/livez", timeout=5).status_code == 200

        agent = start_agent(stack.resources, url, wait_ready=False, task_timeout_s=120)
        msg = task_message({"prompt": "a red cube", "steps": 2, "width": 64, "height": 64})
        stack.publish(msg)
        (event,) = stack.wait_events(msg["id"], timeout=60)
        assert event["status"] == "failed"
        assert event["error"] == "the runtime cannot run tasks: model file not found: tiny-sd"
        row = stack.row(msg["id"])
        assert row["status"] == "failed" and row["error"] == event["error"]
        wait_until(lambda: stack.queue_counts() == (0, 0), timeout=10)
        (logged,) = agent.logged("runtime cannot run tasks; failing them until it can")
        assert logged["reason"] == "model file not found: tiny-sd"
        readyz = httpx.get(f"{agent.url}/readyz", timeout=5)
        assert readyz.status_code == 503 and "model file not found: tiny-sd" in readyz.text

        # `sdeks models push` lands the model (atomically, as an S3 object appears): both serve.
        shutil.copytree(tiny_model_dir / "tiny-sd", models / ".incoming")
        (models / ".incoming").rename(configured)
        wait_until(lambda: httpx.get(f"{url}/healthz", timeout=5).status_code == 200, timeout=60)
        ok = task_message({"prompt": "a red cube", "steps": 2, "width": 64, "height": 64})
        stack.publish(ok)
        (event,) = stack.wait_events(ok["id"], timeout=120)
        assert event["status"] == "succeeded", event
        assert httpx.get(f"{agent.url}/readyz", timeout=5).status_code == 200
