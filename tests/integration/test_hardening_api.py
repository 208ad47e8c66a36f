"""Hardening at the front door, through the real local API process (moto server behind it).

Each refusal is a 400 JSON error naming the field, and nothing is written: no status row,
no message on the queue.
"""

from __future__ import annotations

import boto3
import httpx
import pytest

from tests.fixtures.api import assert_matches_openapi, txt2img

pytestmark = pytest.mark.slow


def _submit(local_api, body) -> tuple[int, dict]:
    resp = httpx.post(f"{local_api.url}/v1alpha2", headers={"x-api-key": local_api.api_key}, json=body, timeout=30)
    payload = resp.json()
    assert_matches_openapi("POST", "/v1alpha2", resp.status_code, payload)
    return resp.status_code, payload


def _nothing_written(local_api, task_id: str) -> None:
    table = boto3.resource("dynamodb", endpoint_url=local_api.res.aws_endpoint_url).Table(local_api.res.task_table)
    assert "Item" not in table.get_item(Key={"id": task_id}, ConsistentRead=True)
    sqs = boto3.client("sqs", endpoint_url=local_api.res.aws_endpoint_url)
    attrs = sqs.get_queue_attributes(
        QueueUrl=local_api.res.queues["sdruntime"].url, AttributeNames=["ApproximateNumberOfMessages"]
    )["Attributes"]
    assert attrs["ApproximateNumberOfMessages"] == "0"


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
    status, body = _submit(local_api, txt2img(task_id=f"strict-{field}", **content))
    assert status == 400, body
    assert f"task.content.{field}" in body["error"]["message"]
    _nothing_written(local_api, f"strict-{field}")
