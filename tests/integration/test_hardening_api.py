"""Hardening at the front door, through the real local API process (moto server behind it).

Each refusal is a 400 JSON error naming the field, and nothing is written: no status row,
no message on the queue.
"""

from __future__ import annotations

import json
import re

import boto3
import httpx
import pytest

from tests.fixtures.api import assert_matches_openapi, txt2img

pytestmark = pytest.mark.slow


def _queued(local_api) -> int:
    sqs = boto3.client("sqs", endpoint_url=local_api.res.aws_endpoint_url)
    attrs = sqs.get_queue_attributes(
        QueueUrl=local_api.res.queues["sdruntime"].url, AttributeNames=["ApproximateNumberOfMessages"]
    )["Attributes"]
    return int(attrs["ApproximateNumberOfMessages"])


def _refused(local_api, body) -> dict:
    """Submit ``body``; it must be a 400 that wrote no status row and published nothing."""
    before = _queued(local_api)
    status, payload = _submit(local_api, body)
    assert status == 400, payload
    table = boto3.resource("dynamodb", endpoint_url=local_api.res.aws_endpoint_url).Table(local_api.res.task_table)
    assert "Item" not in table.get_item(Key={"id": body["task"]["metadata"]["id"]}, ConsistentRead=True)
    assert _queued(local_api) == before
    return payload


def _submit(local_api, body) -> tuple[int, dict]:
    """POST ``body``; a ``"NESTED:<depth>"`` value is sent as that many nested objects (json.dumps cannot)."""
    text = re.sub(r'"NESTED:(\d+)"', lambda m: '{"a":' * int(m[1]) + '"x"' + "}" * int(m[1]), json.dumps(body))
    resp = httpx.post(
        f"{local_api.url}/v1alpha2",
        headers={"x-api-key": local_api.api_key, "content-type": "application/json"},
        content=text,
        timeout=30,
    )
    payload = resp.json()
    assert_matches_openapi("POST", "/v1alpha2", resp.status_code, payload)
    return resp.status_code, payload


@pytest.mark.parametrize(
    ("content", "field"),
    [
        ({"width": "64"}, "width"),
        ({"seed": False}, "seed"),
        ({"steps": "4"}, "steps"),
        ({"cfg_scale": True}, "cfg_scale"),
    ],
)
def test_no_type_coercion(local_api, content, field):
    body = _refused(local_api, txt2img(task_id=f"strict-{field}", **content))
    assert f"task.content.{field}" in body["error"]["message"]


def _nested(depth: int) -> str:
    return f"NESTED:{depth}"


@pytest.mark.parametrize("depth", [40, 255, 990, 5000])
def test_deep_nesting_is_400_before_any_write(local_api, depth):
    """The issue's cases: ~255 gave a 500 after the status row (a retry then stayed queued forever)."""
    task_id = f"deep-{depth}"
    body = _refused(local_api, txt2img(task_id=task_id, extension_args=_nested(depth)))
    assert body["error"]["code"] == "malformed_json"
    assert "at most 32" in body["error"]["message"]
    status, _ = _submit(local_api, txt2img(task_id=task_id))
    assert status == 202, "the id stays free for a corrected retry"


def test_depth_limit_leaves_room_for_real_tasks(local_api):
    """Content fields nested 20 levels (deeper than any A1111 extension's args) are still accepted."""
    status, body = _submit(local_api, txt2img(task_id="deep-ok", extension_args=_nested(20)))
    assert status == 202, body


def test_compute_budget_is_enforced_with_a_clear_400(local_api):
    """The issue's freezing task: inside every per-field bound, ~10,000 megapixel-steps in total."""
    assert local_api.config.runtime("sdruntime").max_work == 800
    huge = txt2img(task_id="budget-huge", width=2048, height=2048, steps=150, batch_size=16)
    body = _refused(local_api, huge)
    assert body["error"]["code"] == "over_budget"
    message = body["error"]["message"]
    assert "10066.3 megapixel-steps" in message and "at most 800" in message and "'sdruntime'" in message
    assert body["error"]["details"] == {"field": "task.content", "work": pytest.approx(10066.329600), "max_work": 800}
    # img2img counts the steps it runs (steps × denoising_strength), as the runtime does
    img2img = txt2img(task_id="budget-i2i", width=2048, height=2048, steps=150, denoising_strength=0.3)
    img2img["task"]["metadata"]["tasktype"] = "image-to-image"
    img2img["task"]["content"]["init_images"] = ["s3://some-bucket/in.png"]
    status, answer = _submit(local_api, img2img)
    assert status == 202, answer  # 4.19 MP × 45 steps = 188.7
    status, answer = _submit(
        local_api, txt2img(task_id="budget-edge", width=1024, height=1024, steps=50, batch_size=15)
    )
    assert status == 202, answer  # 786 megapixel-steps: inside the default budget


@pytest.mark.parametrize(
    ("content", "field"),
    [
        ({"alwayson_scripts": {"sd_model_checkpoint": "/models/other.safetensors"}}, "alwayson_scripts"),
        ({"alwayson_scripts": {"sd_model_checkpoint": "../../etc/x.safetensors"}}, "alwayson_scripts"),
        ({"override_settings": {"sd_model_checkpoint": "/etc/passwd"}}, "override_settings.sd_model_checkpoint"),
        ({"override_settings": {"sd_vae": "..\\vae.pt"}}, "override_settings.sd_vae"),
    ],
)
def test_models_by_name_only(local_api, content, field):
    body = _refused(local_api, txt2img(task_id=f"path-{abs(hash(str(content)))}", **content))
    assert field in body["error"]["message"] and "not by path" in body["error"]["message"]
