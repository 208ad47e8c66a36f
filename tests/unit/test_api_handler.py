"""The API handler in-process, against a real moto server: routes, errors, idempotency, claim check, status."""

from __future__ import annotations

import base64
import json
import logging
import threading
import uuid
from datetime import UTC, datetime

import boto3
import httpx
import pytest

from sdeks.contract import (
    MAX_REQUEST_BYTES,
    SNS_MAX_MESSAGE_BYTES,
    SubmitResponse,
    TaskMessage,
    TaskRequest,
    TaskStatus,
    claim_check_key,
)
from sdeks.tasks_table import TaskTable
from tests.fixtures.api import api_log_lines, proxy_event, txt2img


def receive_all(res, runtime: str, wait: int = 1) -> list[dict]:
    sqs = boto3.client("sqs", endpoint_url=res.aws_endpoint_url)
    out: list[dict] = []
    while True:
        got = sqs.receive_message(QueueUrl=res.queues[runtime].url, MaxNumberOfMessages=10, WaitTimeSeconds=wait)
        msgs = got.get("Messages", [])
        if not msgs:
            return out
        out += msgs
        wait = 0


def test_lambda_entry_is_the_shared_handler(lambda_handler):
    from sdeks.api.handler import handler

    assert lambda_handler is handler


def test_submit_enqueues_and_answers_202(api):
    ans = api.submit(txt2img(task_id="task-1"))
    assert ans.status == 202
    resp = SubmitResponse.model_validate(ans.json)
    bucket = api.res.output_bucket
    assert resp.id == "task-1" and resp.runtime == "sdruntime" and resp.status == "queued"
    assert resp.output_location == f"s3://{bucket}/output/task-1"
    assert resp.status_url == "https://abc123.execute-api.us-east-1.amazonaws.com/prod/v1alpha2/tasks/task-1"
    assert ans.headers["Location"] == resp.status_url
    [msg] = receive_all(api.res, "sdruntime")
    message = TaskMessage.model_validate_json(msg["Body"])
    assert message.id == "task-1" and message.claim_check is None
    assert message.task.content.prompt == "a lighthouse"
    row = TaskTable.from_name(api.res.task_table, endpoint_url=api.res.aws_endpoint_url).get_item("task-1")
    assert row["status"] == "queued" and row.get("enqueued_at")


def test_generated_id_and_trailing_slash(api):
    ans = api.call("POST", "/v1alpha2/", txt2img())
    assert ans.status == 202
    assert len(ans.json["id"]) == 32
    [msg] = receive_all(api.res, "sdruntime")
    assert json.loads(msg["Body"])["id"] == ans.json["id"]


def test_message_attributes_carry_runtime_and_tasktype(api):
    sqs = boto3.client("sqs", endpoint_url=api.res.aws_endpoint_url)
    sns = boto3.client("sns", endpoint_url=api.res.aws_endpoint_url)
    # a second, unfiltered, non-raw subscription shows the attributes SNS received
    url = sqs.create_queue(QueueName=f"probe-{uuid.uuid4().hex[:8]}")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    sns.subscribe(TopicArn=api.res.tasks_topic_arn, Protocol="sqs", Endpoint=arn)
    assert api.submit(txt2img(task_id="attrs")).status == 202
    [msg] = sqs.receive_message(QueueUrl=url, WaitTimeSeconds=2)["Messages"]
    attrs = json.loads(msg["Body"])["MessageAttributes"]
    assert attrs["runtime"]["Value"] == "sdruntime"
    assert attrs["tasktype"]["Value"] == "text-to-image"


def test_base64_encoded_body(api):
    raw = json.dumps(txt2img(task_id="b64")).encode()
    ans = api.call("POST", "/v1alpha2", raw=raw, base64_body=True, headers={"content-type": "application/json"})
    assert ans.status == 202 and ans.json["id"] == "b64"
    bad = api.call("POST", "/v1alpha2", raw="not base64!!", base64_body=False, headers={})
    assert bad.status == 400
    event = proxy_event("POST", "/v1alpha2", "%%%notbase64", headers={"content-type": "application/json"})
    event["isBase64Encoded"] = True
    assert api.call_event(event).json["error"]["code"] == "malformed_body"


# --- error classes -------------------------------------------------------------------


@pytest.mark.parametrize(
    "raw",
    ["{", "not json", "", "   ", '{"task": NaN}', "[1,2", '{"a":1}}', "\x00\x01"],
)
def test_malformed_json_is_400(shared_api, raw):
    ans = shared_api.call("POST", "/v1alpha2", raw=raw, headers={"Content-Type": "application/json"})
    assert ans.status == 400
    assert ans.json["error"]["code"] == "malformed_json"


def test_validation_error_names_the_field(shared_api):
    ans = shared_api.submit(txt2img("sda", width=513, steps=0))
    assert ans.status == 400
    err = ans.json["error"]
    assert err["code"] == "validation_error"
    fields = {d["field"] for d in err["details"]}
    assert {"task.content.width", "task.content.steps"} <= fields
    assert "task.content.width" in err["message"]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "task"),
        ({"task": {"metadata": {"runtime": "sda", "tasktype": "nope"}, "content": {}}}, "task.metadata.tasktype"),
        ({"task": {"metadata": {"runtime": "sda", "tasktype": "text-to-image", "id": "a/b"}}}, "task.metadata.id"),
        (
            {"task": {"metadata": {"runtime": "sda", "tasktype": "text-to-image", "prefix": "../x"}}},
            "task.metadata.prefix",
        ),
        ([1, 2], "(body)"),
        ({"task": txt2img("sda")["task"], "extra": 1}, "extra"),
    ],
)
def test_validation_errors(shared_api, body, field):
    ans = shared_api.submit(body)
    assert ans.status == 400, ans.json
    assert field in {d["field"] for d in ans.json["error"]["details"]}


def test_unknown_runtime_lists_configured_runtimes(shared_api):
    ans = shared_api.submit(txt2img(runtime="nosuch"))
    assert ans.status == 400
    err = ans.json["error"]
    assert err["code"] == "unknown_runtime"
    assert "comfy, sda" in err["message"]
    assert err["details"][0]["field"] == "task.metadata.runtime"


def test_tasktype_runtime_type_mismatch(shared_api):
    ans = shared_api.submit(txt2img(runtime="comfy"))
    assert ans.status == 400
    err = ans.json["error"]
    assert err["code"] == "unsupported_tasktype"
    assert "pipeline" in err["message"]
    pipeline = {
        "task": {
            "metadata": {"runtime": "sda", "tasktype": "pipeline"},
            "content": {"1": {"class_type": "KSampler", "inputs": {}}},
        }
    }
    assert shared_api.submit(pipeline).json["error"]["code"] == "unsupported_tasktype"


@pytest.mark.parametrize(
    "content_type",
    [
        "text/plain",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
        "application/json; charset=latin-1",
    ],
)
def test_wrong_content_type_is_415(shared_api, content_type):
    ans = shared_api.call("POST", "/v1alpha2", raw=json.dumps(txt2img("sda")), headers={"Content-Type": content_type})
    assert ans.status == 415
    assert ans.json["error"]["code"] == "unsupported_media_type"


@pytest.mark.parametrize(
    "content_type", [None, "application/json; charset=UTF-8", "APPLICATION/JSON", "application/vnd.x+json"]
)
def test_json_content_types_accepted(shared_api, content_type):
    headers = {"Content-Type": content_type} if content_type else {}
    assert shared_api.call("POST", "/v1alpha2", raw=json.dumps(txt2img("sda")), headers=headers).status == 202


def test_body_over_limit_is_413(shared_api):
    raw = json.dumps(txt2img("sda", prompt="x")) + " " * MAX_REQUEST_BYTES
    ans = shared_api.call("POST", "/v1alpha2", raw=raw, headers={"Content-Type": "application/json"})
    assert ans.status == 413
    assert ans.json["error"]["code"] == "payload_too_large"
    ans = shared_api.call("POST", "/v1alpha2", raw=raw.encode(), base64_body=True)
    assert ans.status == 413


def test_unknown_route_404_and_wrong_method_405(shared_api):
    assert shared_api.call("GET", "/nope").status == 404
    assert shared_api.call("GET", "/v1alpha2/tasks/a/b").status == 404
    assert shared_api.call("GET", "/").json["error"]["code"] == "not_found"
    ans = shared_api.call("GET", "/v1alpha2")
    assert ans.status == 405 and ans.headers["Allow"] == "POST"
    assert ans.json["error"]["code"] == "method_not_allowed"
    assert shared_api.call("DELETE", "/v1alpha2/tasks/abc").status == 405
    assert shared_api.call("POST", "/v1alpha2/runtimes", raw="{}").status == 405


def test_same_id_other_body_is_409(api):
    assert api.submit(txt2img(task_id="dup")).status == 202
    ans = api.submit(txt2img(task_id="dup", steps=5))
    assert ans.status == 409
    assert ans.json["error"]["code"] == "conflict"
    assert len(receive_all(api.res, "sdruntime")) == 1


def test_concurrent_duplicates_enqueue_once(api):
    body = txt2img(task_id="same-same", seed=7)
    answers: list = [None] * 8
    barrier = threading.Barrier(8)

    def post(i: int) -> None:
        barrier.wait()
        answers[i] = api.submit(body)

    threads = [threading.Thread(target=post, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert {a.status for a in answers} == {202}
    assert all(a.json == answers[0].json for a in answers)
    assert len(receive_all(api.res, "sdruntime", wait=2)) == 1


def test_large_init_image_goes_through_the_claim_check(api):
    image = base64.b64encode(uuid.uuid4().bytes * 65536).decode()  # 1 MiB raw, ~1.4 MB base64
    body = {
        "task": {
            "metadata": {"id": "bigimg", "runtime": "sdruntime", "tasktype": "image-to-image"},
            "content": {"prompt": "p", "init_images": [image]},
        }
    }
    ans = api.submit(body)
    assert ans.status == 202
    [msg] = receive_all(api.res, "sdruntime")
    assert len(msg["Body"]) < SNS_MAX_MESSAGE_BYTES
    message = TaskMessage.model_validate_json(msg["Body"])
    assert message.task is None
    assert message.claim_check == f"s3://{api.res.output_bucket}/{claim_check_key('bigimg')}"
    # resolve as the agent would
    bucket, key = message.claim_check.removeprefix("s3://").split("/", 1)
    obj = boto3.client("s3", endpoint_url=api.res.aws_endpoint_url).get_object(Bucket=bucket, Key=key)
    assert obj.get("ServerSideEncryption") == "AES256"
    stored = TaskRequest.model_validate_json(obj["Body"].read())
    assert stored.task.id == "bigimg"
    assert stored.task.content.init_images == [image]
    assert stored.task.fingerprint() == TaskRequest.model_validate(body).task.fingerprint()


def test_fan_out_reaches_only_the_named_runtime(api2):
    assert api2.submit(txt2img(runtime="sda", task_id="for-a")).status == 202
    [msg] = receive_all(api2.res, "sda")
    assert json.loads(msg["Body"])["runtime"] == "sda"
    assert receive_all(api2.res, "comfy", wait=0) == []
    pipeline = {
        "task": {
            "metadata": {"id": "for-comfy", "runtime": "comfy", "tasktype": "pipeline"},
            "content": {"prompt": {"3": {"class_type": "KSampler", "inputs": {"seed": 1}}}},
        }
    }
    assert api2.submit(pipeline).status == 202
    [msg] = receive_all(api2.res, "comfy")
    assert TaskMessage.model_validate_json(msg["Body"]).task.metadata.tasktype == "pipeline"
    assert receive_all(api2.res, "sda", wait=0) == []


# --- status -------------------------------------------------------------------------


def test_status_follows_the_agent(api):
    res = api.res
    assert api.submit(txt2img(task_id="life")).status == 202
    ans = api.call("GET", "/v1alpha2/tasks/life")
    assert ans.status == 200
    status = TaskStatus.model_validate(ans.json)
    assert status.status == "queued" and status.runtime == "sdruntime" and status.images == []

    table = TaskTable.from_name(res.task_table, endpoint_url=res.aws_endpoint_url)
    table.mark_running("life", "sdruntime", attempt=1)
    ans = api.call("GET", "/v1alpha2/tasks/life")
    assert ans.json["status"] == "running" and ans.json["attempts"] == 1 and ans.json["started_at"]

    s3 = boto3.client("s3", endpoint_url=res.aws_endpoint_url)
    key = "output/life/life-1.png"
    s3.put_object(Bucket=res.output_bucket, Key=key, Body=b"\x89PNG fake")
    uri = f"s3://{res.output_bucket}/{key}"
    table.mark_succeeded("life", [uri, "s3://elsewhere/x.png"], now=datetime.now(UTC))
    ans = api.call("GET", "/v1alpha2/tasks/life")
    assert ans.json["status"] == "succeeded" and ans.json["finished_at"]
    assert ans.json["images"] == [uri, "s3://elsewhere/x.png"]
    assert ans.json["image_urls"] is None

    ans = api.call("GET", "/v1alpha2/tasks/life", query={"presign": "1"})
    [url] = ans.json["image_urls"]  # only the output bucket is signed
    assert "X-Amz-Expires=900" in url
    assert httpx.get(url).content == b"\x89PNG fake"


def test_a_queued_status_says_approximately_how_many_tasks_are_ahead(api):
    for n in range(3):
        assert api.submit(txt2img(task_id=f"ahead-{n}")).status == 202
    sqs = boto3.client("sqs", endpoint_url=api.res.aws_endpoint_url)
    # an agent holds one (in flight, not visible): it still counts as ahead
    sqs.receive_message(QueueUrl=api.res.queues["sdruntime"].url, MaxNumberOfMessages=1, VisibilityTimeout=60)
    ans = api.call("GET", "/v1alpha2/tasks/ahead-2")
    assert ans.status == 200 and ans.json["status"] == "queued"
    assert ans.json["tasks_ahead_approx"] == 2  # 3 on the queue, less this one

    TaskTable.from_name(api.res.task_table, endpoint_url=api.res.aws_endpoint_url).mark_running(
        "ahead-2", "sdruntime", attempt=1
    )
    assert api.call("GET", "/v1alpha2/tasks/ahead-2").json["tasks_ahead_approx"] is None  # queued tasks only


def test_an_unreadable_queue_depth_leaves_the_field_out_and_is_logged(api, monkeypatch, caplog):
    assert api.submit(txt2img(task_id="no-depth")).status == 202
    monkeypatch.setenv("SDEKS_QUEUE_URLS", json.dumps({"sdruntime": api.res.queues["sdruntime"].url + "-gone"}))
    with caplog.at_level(logging.INFO, logger="sdeks.api"):
        ans = api.call("GET", "/v1alpha2/tasks/no-depth")
    assert ans.status == 200 and ans.json["status"] == "queued" and ans.json["tasks_ahead_approx"] is None
    [logged] = [line for line in api_log_lines(caplog.records) if line["message"] == "queue_depth_unavailable"]
    assert logged["task_id"] == "no-depth" and logged["level"] == "WARNING"


def test_failed_status_carries_the_error(api):
    api.submit(txt2img(task_id="sad"))
    table = TaskTable.from_name(api.res.task_table, endpoint_url=api.res.aws_endpoint_url)
    table.mark_running("sad", "sdruntime", attempt=2)
    table.mark_failed("sad", "runtime said 422")
    ans = api.call("GET", "/v1alpha2/tasks/sad")
    assert ans.json["status"] == "failed" and ans.json["error"] == "runtime said 422"


def test_status_errors(shared_api):
    assert shared_api.call("GET", "/v1alpha2/tasks/unknown-id").status == 404
    ans = shared_api.call("GET", "/v1alpha2/tasks/bad.id")
    assert ans.status == 400 and ans.json["error"]["code"] == "invalid_id"
    assert shared_api.call("GET", "/v1alpha2/tasks/" + "a" * 65).status == 400
    assert shared_api.call("GET", "/v1alpha2/tasks/x", query={"presign": "maybe"}).status == 400


def test_runtimes(shared_api):
    ans = shared_api.call("GET", "/v1alpha2/runtimes")
    assert ans.status == 200
    assert ans.json == [
        {"name": "comfy", "type": "comfyui", "tasktypes": ["pipeline"], "models": []},
        {
            "name": "sda",
            "type": "sdwebui",
            "tasktypes": ["text-to-image", "image-to-image", "extra-single-image", "extra-batch-images"],
            "models": [],
        },
    ]


# --- AWS failures ---------------------------------------------------------------------


def test_publish_failure_is_503_and_a_retry_publishes(api, monkeypatch):
    good_topic = api.res.tasks_topic_arn
    monkeypatch.setenv("SDEKS_TASKS_TOPIC_ARN", good_topic + "-missing")
    ans = api.submit(txt2img(task_id="retry-me"))
    assert ans.status == 503
    assert ans.json["error"]["code"] == "aws_unavailable" and ans.json["error"]["details"]["retryable"]
    assert receive_all(api.res, "sdruntime", wait=0) == []
    assert api.call("GET", "/v1alpha2/tasks/retry-me").json["status"] == "queued"  # the row stays

    monkeypatch.setenv("SDEKS_TASKS_TOPIC_ARN", good_topic)
    assert api.submit(txt2img(task_id="retry-me")).status == 202
    assert len(receive_all(api.res, "sdruntime")) == 1
    assert api.submit(txt2img(task_id="retry-me")).status == 202  # and only once
    assert receive_all(api.res, "sdruntime", wait=0) == []


def test_table_failure_is_503(api, monkeypatch):
    monkeypatch.setenv("SDEKS_TASK_TABLE", "no-such-table")
    assert api.submit(txt2img()).status == 503
    assert api.call("GET", "/v1alpha2/tasks/abc").status == 503


def test_misconfiguration_is_a_logged_500(api, monkeypatch, caplog):
    monkeypatch.delenv("SDEKS_RUNTIMES")
    with caplog.at_level(logging.INFO, logger="sdeks.api"):
        ans = api.call("GET", "/v1alpha2/runtimes")
    assert ans.status == 500 and ans.json["error"]["code"] == "internal_error"
    [logged] = [line for line in api_log_lines(caplog.records) if line["message"] == "misconfigured"]
    assert logged["level"] == "ERROR" and "runtimes" in logged["error"]


def test_logs_never_carry_key_or_body(api, caplog):
    secret_prompt = f"secret-prompt-{uuid.uuid4().hex}"
    with caplog.at_level(logging.INFO, logger="sdeks.api"):
        api.submit(txt2img(task_id="logged", prompt=secret_prompt), headers={"x-api-key": "super-secret-key"})
        api.submit({"task": "garbage " + secret_prompt}, headers={"x-api-key": "super-secret-key"})
    lines = api_log_lines(caplog.records)
    text = "\n".join(json.dumps(line) for line in lines)
    assert "super-secret-key" not in text and secret_prompt not in text
    # structured: the fields are keys of the log line itself, not JSON nested in its message
    submitted = [line for line in lines if line["message"] == "submitted"]
    assert submitted[0]["task_id"] == "logged" and submitted[0]["runtime"] == "sdruntime"
    assert submitted[0]["tasktype"] == "text-to-image" and submitted[0]["bytes"] > 0
    assert {line["message"] for line in lines} >= {"submitted", "request"}
    # each line names API Gateway's request id, so it joins the access log
    [request] = [line for line in lines if line["message"] == "request" and line["status"] == 202]
    assert request["request_id"] == submitted[0]["request_id"] and len(request["request_id"]) == 32
