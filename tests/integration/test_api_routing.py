"""Routing by checkpoint through the real handler and a moto server: SNS filter policies put every task
on exactly one runtime's queue, and a task that cannot be routed is a 400 with nothing enqueued."""

from __future__ import annotations

import json
import uuid

import boto3
import pytest

from sdeks.contract import SNS_MAX_MESSAGE_BYTES, TaskMessage, TaskRequest
from sdeks.local.provision import provision
from tests.fixtures.api import ApiClient, api_environ
from tests.fixtures.aws import stack_config

RUNTIMES = [
    {"name": "alpha", "type": "sdwebui", "model": {"checkpoint": "alpha.safetensors"}, "models": ["shared"]},
    {"name": "beta", "type": "sdwebui", "models": ["beta-xl", "shared.safetensors"]},
    {"name": "comfy", "type": "comfyui", "models": ["alpha.safetensors", "flux.safetensors"]},
    {"name": "plain", "type": "sdwebui"},
]


@pytest.fixture(scope="module")
def stack(moto_server):
    config = stack_config(RUNTIMES)
    return config, provision(config, moto_server)


@pytest.fixture
def api(stack, lambda_handler, monkeypatch) -> ApiClient:
    config, res = stack
    for name, value in api_environ(config, res).items():
        monkeypatch.setenv(name, value)
    return ApiClient(lambda_handler, config, res)


def drain(res) -> dict[str, list[dict]]:
    """Every message now on each runtime's queue (deleted), by runtime."""
    sqs = boto3.client("sqs", endpoint_url=res.aws_endpoint_url)
    found: dict[str, list[dict]] = {}
    for runtime, queue in res.queues.items():
        while msgs := sqs.receive_message(
            QueueUrl=queue.url, MaxNumberOfMessages=10, WaitTimeSeconds=0, MessageAttributeNames=["All"]
        ).get("Messages", []):
            found.setdefault(runtime, []).extend(msgs)
            sqs.delete_message_batch(
                QueueUrl=queue.url,
                Entries=[{"Id": str(n), "ReceiptHandle": m["ReceiptHandle"]} for n, m in enumerate(msgs)],
            )
    return found


def attributes(message: dict) -> dict[str, str]:
    return {k: v["StringValue"] for k, v in message.get("MessageAttributes", {}).items()}


def body(content: dict, tasktype: str = "text-to-image", runtime: str | None = None) -> dict:
    task_id = uuid.uuid4().hex
    metadata = {"id": task_id, "tasktype": tasktype, **({"runtime": runtime} if runtime else {})}
    return {"task": {"metadata": metadata, "content": content}}


def checkpoint(name: str, **content) -> dict:
    return {"prompt": "x", "steps": 2, "alwayson_scripts": {"sd_model_checkpoint": name}, **content}


def workflow(ckpt_name: str) -> dict:
    return {
        "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": ckpt_name}},
        "9": {"class_type": "SaveImage", "inputs": {"images": ["4", 0]}},
    }


@pytest.mark.parametrize(
    ("content", "tasktype", "runtime", "published"),
    [
        (checkpoint("beta-xl"), "text-to-image", "beta", {"model": "beta-xl"}),
        (
            {"prompt": "x", "override_settings": {"sd_model_checkpoint": "beta-xl [0123abcd]"}},
            "text-to-image",
            "beta",
            {"model": "beta-xl"},
        ),
        (checkpoint("alpha"), "text-to-image", "alpha", {"model": "alpha.safetensors", "runtime": "alpha"}),
        (workflow("flux.safetensors"), "pipeline", "comfy", {"model": "flux.safetensors"}),
        (workflow("alpha.safetensors"), "pipeline", "comfy", {"model": "alpha.safetensors", "runtime": "comfy"}),
    ],
)
def test_a_task_naming_only_a_checkpoint_lands_on_the_one_runtime_that_serves_it(
    api, stack, content, tasktype, runtime, published
):
    _, res = stack
    drain(res)
    request = body(content, tasktype)
    ans = api.submit(request)
    assert ans.status == 202, ans.json
    assert ans.json["runtime"] == runtime
    queued = drain(res)
    assert list(queued) == [runtime]
    (message,) = queued[runtime]
    assert attributes(message) == {"tasktype": tasktype, **published}
    sent = TaskMessage.model_validate_json(message["Body"])
    assert sent.runtime == runtime and sent.task is not None and sent.task.metadata.runtime == runtime
    status = api.call("GET", f"/v1alpha2/tasks/{request['task']['metadata']['id']}")
    assert status.json["runtime"] == runtime


def test_a_named_runtime_gets_the_task_even_when_its_checkpoint_is_declared_elsewhere(api, stack):
    _, res = stack
    drain(res)
    cases = (("plain", "beta-xl"), ("beta", "shared"), ("alpha", "flux.safetensors"), ("alpha", "alpha"))
    for runtime, name in cases:  # the last one's model attribute is a checkpoint comfy declares too
        ans = api.submit(body(checkpoint(name), runtime=runtime))
        assert ans.status == 202 and ans.json["runtime"] == runtime
        queued = drain(res)
        assert list(queued) == [runtime], (runtime, name, queued)
        assert attributes(queued[runtime][0])["runtime"] == runtime


def test_a_claim_checked_task_is_routed_by_its_checkpoint_and_stored_with_its_runtime(api, stack):
    _, res = stack
    drain(res)
    big = checkpoint("beta-xl", prompt="x", padding="p" * (SNS_MAX_MESSAGE_BYTES + 10))
    ans = api.submit(body(big))
    assert ans.status == 202 and ans.json["runtime"] == "beta"
    (message,) = drain(res)["beta"]
    sent = TaskMessage.model_validate_json(message["Body"])
    assert sent.runtime == "beta" and sent.claim_check
    bucket, key = sent.claim_check.removeprefix("s3://").split("/", 1)
    s3 = boto3.client("s3", endpoint_url=res.aws_endpoint_url)
    stored = TaskRequest.model_validate_json(s3.get_object(Bucket=bucket, Key=key)["Body"].read())
    assert stored.task.metadata.runtime == "beta"


@pytest.mark.parametrize(
    ("request_body", "code", "field", "words", "available"),
    [
        (
            body(checkpoint("nope.safetensors")),
            "unknown_model",
            "task.content.alwayson_scripts.sd_model_checkpoint",
            "'nope.safetensors'",
            {
                "alpha": ["alpha.safetensors", "shared"],
                "beta": ["beta-xl", "shared.safetensors"],
                "plain": [],
            },
        ),
        (
            body(workflow("beta-xl"), "pipeline"),
            "unknown_model",
            "task.content.4.inputs.ckpt_name",
            "checkpoints by runtime: comfy: alpha.safetensors, flux.safetensors",
            {"comfy": ["alpha.safetensors", "flux.safetensors"]},
        ),
        (
            body(checkpoint("shared.safetensors [abc]")),
            "ambiguous_model",
            "task.content.alwayson_scripts.sd_model_checkpoint",
            "served by runtimes alpha, beta; name one in metadata.runtime",
            {"alpha": ["alpha.safetensors", "shared"], "beta": ["beta-xl", "shared.safetensors"]},
        ),
        (
            body({"prompt": "x"}),
            "unknown_runtime",
            "task.metadata.runtime",
            "configured runtimes: alpha, beta, comfy, plain",
            None,
        ),
    ],
)
def test_an_unroutable_task_is_a_400_listing_what_exists_and_nothing_is_enqueued(
    api, stack, request_body, code, field, words, available
):
    _, res = stack
    drain(res)
    ans = api.submit(request_body)
    assert ans.status == 400, ans.json
    error = ans.json["error"]
    assert error["code"] == code and words in error["message"]
    (problem,) = error["details"]
    assert problem["field"] == field
    assert problem.get("available") == available
    assert drain(res) == {}
    status = api.call("GET", f"/v1alpha2/tasks/{request_body['task']['metadata']['id']}")
    assert status.status == 404


def test_runtimes_lists_each_runtimes_models(api):
    ans = api.call("GET", "/v1alpha2/runtimes")
    assert ans.status == 200
    assert {r["name"]: r["models"] for r in ans.json} == {
        "alpha": ["alpha.safetensors", "shared"],
        "beta": ["beta-xl", "shared.safetensors"],
        "comfy": ["alpha.safetensors", "flux.safetensors"],
        "plain": [],
    }


def test_the_queues_are_subscribed_with_the_layouts_policies(stack):
    config, res = stack
    from sdeks.config import resource_layout

    sns = boto3.client("sns", endpoint_url=res.aws_endpoint_url)
    subs = sns.list_subscriptions_by_topic(TopicArn=res.tasks_topic_arn)["Subscriptions"]
    policies = {
        s["Endpoint"]: json.loads(
            sns.get_subscription_attributes(SubscriptionArn=s["SubscriptionArn"])["Attributes"]["FilterPolicy"]
        )
        for s in subs
    }
    layout = resource_layout(config)
    assert policies == {res.queues[rq.runtime.name].arn: rq.filter_policy for rq in layout.runtimes}
