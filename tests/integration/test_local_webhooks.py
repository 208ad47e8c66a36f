"""Webhooks end to end in local mode: real API, agent, runtime, deliverer process and receiver.

One stack per module (``sdeks local up --detach``). The receiver is a real HTTP
server on 127.0.0.1, which local mode admits; signatures are checked with the
third-party ``standardwebhooks`` library and the secret ``sdeks webhook-secret`` prints.
"""

from __future__ import annotations

import time
from pathlib import Path

import boto3
import httpx
import pytest
import standardwebhooks

from sdeks.contract import CompletionEvent, WebhookPayload
from sdeks.events import EventSubscription
from sdeks.local.provision import local_session
from sdeks.local.state import LocalState
from sdeks.tasks_table import TaskTable
from sdeks.webhook_secret import read_secret, signing_key
from tests.fixtures.local import local_stack, sdeks
from tests.fixtures.webhooks import Receiver
from webhooks.deliver import Deliverer, Verdict, http_client

pytestmark = pytest.mark.slow

PRESIGN_EXPIRES_S = 900
CONFIG = f"""
project: hooktest
runtimes:
  - name: sdruntime
    type: sdwebui
output:
  presign_images: true  # completion events carry presigned image URLs
  presign_expires_s: {PRESIGN_EXPIRES_S}
"""


@pytest.fixture(scope="module")
def stack(tmp_path_factory, tiny_model_dir):
    with local_stack(tmp_path_factory.mktemp("hooks"), CONFIG, Path(tiny_model_dir)) as running:
        yield running


def submit(state: LocalState, task_id: str, webhook: dict) -> httpx.Response:
    body = {
        "task": {
            "metadata": {"id": task_id, "runtime": "sdruntime", "tasktype": "text-to-image", "webhook": webhook},
            "content": {"prompt": "a kite", "steps": 2, "width": 64, "height": 64},
        }
    }
    return httpx.post(f"{state.api_url}/v1alpha2", json=body, headers={"x-api-key": state.api_key}, timeout=10)


def wait_for(condition, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def test_completed_webhook_is_signed_and_retried_after_a_receiver_failure(stack, receiver: Receiver):
    root, state = stack
    secret = sdeks(root, "webhook-secret", check=True).stdout.strip()
    assert secret.startswith("whsec_")
    receiver.statuses = [500]

    answer = submit(state, "hooked-1", {"url": receiver.url("/in?token=abc"), "events": ["completed"]})
    assert answer.status_code == 202, answer.text

    wait_for(lambda: len(receiver.deliveries) >= 2, 120, "the retried delivery")
    first, second = receiver.deliveries[:2]
    assert receiver.answered[:2] == [500, 200]
    assert first.path == second.path == "/in?token=abc"
    assert first.headers["webhook-id"] == second.headers["webhook-id"]
    assert first.body == second.body
    payload = WebhookPayload.model_validate(standardwebhooks.Webhook(secret).verify(second.body, second.headers))
    assert payload.type == "task.completed"
    assert payload.data.id == "hooked-1" and payload.data.status == "succeeded"
    assert payload.data.image_url == [f"s3://{state.output_bucket}/output/hooked-1/hooked-1-1.png"]
    # the retry waited for the first step of the schedule (5 s), then the message was settled
    assert int(second.headers["webhook-timestamp"]) - int(first.headers["webhook-timestamp"]) >= 4
    sqs = boto3.client("sqs", endpoint_url=state.aws_endpoint_url, region_name=state.region)

    def queue_drained() -> bool:
        attrs = sqs.get_queue_attributes(QueueUrl=state.webhook_queue_url, AttributeNames=["All"])["Attributes"]
        return attrs["ApproximateNumberOfMessages"] == attrs["ApproximateNumberOfMessagesNotVisible"] == "0"

    wait_for(queue_drained, 30, "the delivered message to be deleted")
    time.sleep(6)
    assert len(receiver.deliveries) == 2


def test_private_receivers_are_refused_at_the_front_door(stack):
    _, state = stack
    for url in ("https://169.254.169.254/latest/meta-data", "https://10.0.0.1/hook", "http://10.0.0.1/hook"):
        answer = submit(state, "refused-1", {"url": url})
        assert answer.status_code == 400, url
        assert answer.json()["error"]["details"][0]["field"] == "task.metadata.webhook.url"
    unknown_event = submit(state, "refused-2", {"url": "https://hooks.example.com/", "events": ["finished"]})
    assert unknown_event.status_code == 400
    assert unknown_event.json()["error"]["details"][0]["field"] == "task.metadata.webhook.events[0]"


def test_without_the_local_mode_setting_a_loopback_receiver_is_never_contacted(stack, receiver: Receiver):
    """The production policy against the same stack: the row the API wrote names 127.0.0.1; nothing is sent."""
    _, state = stack
    answer = submit(state, "hooked-2", {"url": receiver.url()})
    assert answer.status_code == 202
    wait_for(lambda: len(receiver.deliveries) >= 1, 120, "the local-mode delivery")
    session = local_session(state.region)
    table = TaskTable(session.resource("dynamodb", endpoint_url=state.aws_endpoint_url).Table(state.task_table))
    secret = read_secret(session.client("secretsmanager", endpoint_url=state.aws_endpoint_url), state.webhook_secret_id)
    production = Deliverer(table=table, key=signing_key(secret), http=http_client(5.0), allow_loopback=False)
    event = receiver.deliveries[0].body
    completion = WebhookPayload.model_validate_json(event).data.model_dump_json()
    outcome = production.deliver(completion, WebhookPayload.model_validate_json(event).timestamp)
    assert outcome.verdict is Verdict.REFUSED and outcome.final
    assert "must be https" in outcome.reason
    assert len(receiver.deliveries) == 1


def test_started_and_completed_are_delivered_in_order_and_signed(stack, receiver: Receiver):
    root, state = stack
    secret = sdeks(root, "webhook-secret", check=True).stdout.strip()
    answer = submit(state, "hooked-both", {"url": receiver.url("/both"), "events": ["started", "completed"]})
    assert answer.status_code == 202, answer.text
    wait_for(lambda: len(receiver.deliveries) >= 2, 120, "the started and completed deliveries")
    verifier = standardwebhooks.Webhook(secret)
    payloads = [WebhookPayload.model_validate(verifier.verify(d.body, d.headers)) for d in receiver.deliveries]
    assert [(p.type, p.data.status) for p in payloads] == [("task.started", "running"), ("task.completed", "succeeded")]
    assert {p.data.id for p in payloads} == {"hooked-both"}
    assert payloads[0].data.attempt == 1
    ids = [d.headers["webhook-id"] for d in receiver.deliveries]
    assert ids[0] != ids[1], "each event is its own delivery"


def test_a_webhook_for_completed_only_never_gets_the_start(stack, receiver: Receiver):
    _, state = stack
    answer = submit(state, "hooked-done", {"url": receiver.url("/done"), "events": ["completed"]})
    assert answer.status_code == 202, answer.text
    wait_for(lambda: receiver.deliveries, 120, "the completed delivery")
    time.sleep(3)  # a start delivery, had there been one, came before the completion
    assert [WebhookPayload.model_validate_json(d.body).type for d in receiver.deliveries] == ["task.completed"]


def test_completion_events_carry_presigned_urls_that_download_the_images(stack, receiver: Receiver):
    """A receiver without AWS credentials downloads the PNG from the URL in its delivery (and an SNS subscriber
    gets the same event)."""
    root, state = stack
    secret = sdeks(root, "webhook-secret", check=True).stdout.strip()
    subscription = EventSubscription.create(state.results_topic_arn, state.aws_endpoint_url, state.region)
    try:
        answer = submit(state, "hooked-urls", {"url": receiver.url("/urls"), "events": ["completed"]})
        assert answer.status_code == 202, answer.text
        wait_for(lambda: len(receiver.deliveries) >= 1, 120, "the completed delivery")
        [event] = list(subscription.follow(count=1, timeout_s=60))
    finally:
        subscription.delete()
    delivery = receiver.deliveries[0]
    payload = WebhookPayload.model_validate(standardwebhooks.Webhook(secret).verify(delivery.body, delivery.headers))
    data = payload.data
    assert isinstance(data, CompletionEvent) and data.status == "succeeded"
    assert CompletionEvent.model_validate(event).image_urls == data.image_urls, "SNS and the webhook: one event"
    [url] = data.image_urls
    assert f"X-Amz-Expires={PRESIGN_EXPIRES_S}" in url
    [key] = [uri.removeprefix(f"s3://{state.output_bucket}/") for uri in data.image_url]
    s3 = boto3.client("s3", endpoint_url=state.aws_endpoint_url, region_name=state.region)
    stored = s3.get_object(Bucket=state.output_bucket, Key=key)["Body"].read()
    downloaded = httpx.get(url, timeout=10)  # no credentials: the URL is the authorization
    assert downloaded.status_code == 200 and downloaded.content == stored
    assert downloaded.content.startswith(b"\x89PNG")
