"""The local HTTP adapter as a real process: key check, body limit, the handler's answers over HTTP,
waiting for results, cancel, presigned URLs, and the CLI against it."""

from __future__ import annotations

import json
import socket
import threading
import time

import boto3
import httpx
import pytest

from sdeks.contract import MAX_REQUEST_BYTES, SubmitResponse, TaskMessage
from sdeks.tasks_table import TaskTable
from tests.fixtures.api import assert_matches_openapi, txt2img

pytestmark = pytest.mark.slow


def _check(resp: httpx.Response) -> dict:
    assert resp.headers["content-type"] == "application/json"
    body = resp.json()
    assert_matches_openapi(resp.request.method, resp.request.url.path, resp.status_code, body)
    return body


def test_health_needs_no_key(local_api):
    assert httpx.get(f"{local_api.url}/healthz").json() == {"status": "ok"}


@pytest.mark.parametrize("headers", [{}, {"x-api-key": "wrong"}, {"x-api-key": ""}])
def test_missing_or_wrong_key_is_403(local_api, headers):
    for method, path in [("POST", "/v1alpha2"), ("GET", "/v1alpha2/runtimes"), ("GET", "/v1alpha2/tasks/x")]:
        resp = httpx.request(method, local_api.url + path, headers=headers, json=txt2img())
        assert resp.status_code == 403
        assert _check(resp)["error"]["code"] == "forbidden"


def test_submit_and_follow_status_url(local_api):
    key = {"x-api-key": local_api.api_key}
    resp = _submit(local_api, "via-http")
    assert resp.status_code == 202
    answer = SubmitResponse.model_validate(_check(resp))
    assert answer.status_url == f"{local_api.url}/v1alpha2/tasks/via-http"
    status = httpx.get(answer.status_url, headers=key)
    assert status.status_code == 200 and _check(status)["status"] == "queued"

    sqs = boto3.client("sqs", endpoint_url=local_api.res.aws_endpoint_url)
    [msg] = sqs.receive_message(QueueUrl=local_api.res.queues["sdruntime"].url, WaitTimeSeconds=2)["Messages"]
    assert TaskMessage.model_validate_json(msg["Body"]).id == "via-http"

    runtimes = httpx.get(f"{local_api.url}/v1alpha2/runtimes", headers=key)
    assert [r["name"] for r in _check(runtimes)] == ["sdruntime"]


def test_errors_over_http(local_api):
    key = {"x-api-key": local_api.api_key}
    url = local_api.url
    assert httpx.post(f"{url}/v1alpha2", headers={**key, "content-type": "text/plain"}, content="{}").status_code == 415
    resp = httpx.post(f"{url}/v1alpha2", headers={**key, "content-type": "application/json"}, content=b"\xff\xfe{")
    assert resp.status_code == 400 and _check(resp)["error"]["code"] == "malformed_json"
    assert httpx.get(f"{url}/v1alpha2/tasks/nope", headers=key).status_code == 404
    assert httpx.put(f"{url}/v1alpha2", headers=key).status_code == 405
    assert httpx.get(f"{url}/elsewhere", headers=key).status_code == 404
    assert httpx.get(f"{url}/v1alpha2/tasks/bad%20id", headers=key).status_code == 400


def test_huge_body_refused_before_reading(local_api):
    """Content-Length over the limit: 413 at once, without sending (or the server reading) the body."""
    host, port = local_api.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=5) as sock:
        sock.sendall(
            (
                f"POST /v1alpha2 HTTP/1.1\r\nHost: {host}\r\nx-api-key: {local_api.api_key}\r\n"
                f"Content-Type: application/json\r\nContent-Length: {MAX_REQUEST_BYTES + 1}\r\n\r\n"
            ).encode()
        )
        reply = b""
        while b"\r\n\r\n" not in reply or not reply.rstrip().endswith(b"}"):
            chunk = sock.recv(65536)
            if not chunk:
                break
            reply += chunk
    head, _, body = reply.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 413")
    assert json.loads(body)["error"]["code"] == "payload_too_large"


def test_chunked_body_over_limit_is_413(local_api):
    def chunks():
        for _ in range(MAX_REQUEST_BYTES // 65536 + 2):
            yield b" " * 65536

    try:
        resp = httpx.post(
            f"{local_api.url}/v1alpha2",
            headers={"x-api-key": local_api.api_key, "content-type": "application/json"},
            content=chunks(),
        )
    except httpx.HTTPError:  # the server may close while we still send; then it must have said 413 first
        pytest.skip("connection closed mid-upload")
    assert resp.status_code == 413


def test_concurrent_duplicates_and_presigned_download_over_http(local_api):
    from concurrent.futures import ThreadPoolExecutor

    key = {"x-api-key": local_api.api_key}
    body = txt2img(task_id="http-dup", seed=3)
    with httpx.Client(base_url=local_api.url, headers=key) as client, ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda _: client.post("/v1alpha2", json=body), range(8)))
    assert {a.status_code for a in answers} == {202}
    assert len({a.content for a in answers}) == 1
    sqs = boto3.client("sqs", endpoint_url=local_api.res.aws_endpoint_url)
    url = local_api.res.queues["sdruntime"].url
    got = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=2).get("Messages", [])
    got += sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=1).get("Messages", [])
    assert [json.loads(m["Body"])["id"] for m in got] == ["http-dup"]

    res = local_api.res
    boto3.client("s3", endpoint_url=res.aws_endpoint_url).put_object(
        Bucket=res.output_bucket, Key="output/http-dup/http-dup-1.png", Body=b"png bytes"
    )
    table = TaskTable.from_name(res.task_table, endpoint_url=res.aws_endpoint_url)
    table.mark_running("http-dup", "sdruntime", attempt=1)
    table.mark_succeeded("http-dup", [f"s3://{res.output_bucket}/output/http-dup/http-dup-1.png"])
    status = httpx.get(f"{local_api.url}/v1alpha2/tasks/http-dup", params={"presign": "1"}, headers=key)
    [image_url] = _check(status)["image_urls"]
    assert httpx.get(image_url).content == b"png bytes"


# --- wait for the result (?wait=N) ----------------------------------------------------


def _submit(api, task_id: str) -> httpx.Response:
    return httpx.post(f"{api.url}/v1alpha2", headers={"x-api-key": api.api_key}, json=txt2img(task_id=task_id))


def _table(local_api) -> TaskTable:
    return TaskTable.from_name(local_api.res.task_table, endpoint_url=local_api.res.aws_endpoint_url)


def _finish_later(local_api, task_id: str, delay_s: float, status: str = "succeeded") -> threading.Thread:
    """Play the agent: once the row exists and ``delay_s`` passed, run and finish the task (with one image)."""
    res = local_api.res

    def agent() -> None:
        table = _table(local_api)
        deadline = time.monotonic() + 10
        while table.get(task_id) is None and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(delay_s)
        table.mark_running(task_id, "sdruntime", attempt=1)
        if status == "succeeded":
            key = f"output/{task_id}/{task_id}-1.png"
            boto3.client("s3", endpoint_url=res.aws_endpoint_url).put_object(
                Bucket=res.output_bucket, Key=key, Body=b"png of " + task_id.encode()
            )
            table.mark_succeeded(task_id, [f"s3://{res.output_bucket}/{key}"])
        else:
            table.mark_failed(task_id, "runtime said 422")

    thread = threading.Thread(target=agent, daemon=True)
    thread.start()
    return thread


def test_status_wait_answers_as_soon_as_the_task_ends(local_api):
    key = {"x-api-key": local_api.api_key}
    assert _submit(local_api, "wait-early").status_code == 202
    agent = _finish_later(local_api, "wait-early", delay_s=1.0)
    started = time.monotonic()
    resp = httpx.get(f"{local_api.url}/v1alpha2/tasks/wait-early", params={"wait": 20}, headers=key, timeout=30)
    elapsed = time.monotonic() - started
    agent.join()
    assert resp.status_code == 200 and _check(resp)["status"] == "succeeded"
    assert 0.8 < elapsed < 6, elapsed  # ended by the task, not by the 20 s


def test_status_wait_gives_up_after_n_seconds(local_api):
    key = {"x-api-key": local_api.api_key}
    assert _submit(local_api, "wait-out").status_code == 202
    started = time.monotonic()
    resp = httpx.get(f"{local_api.url}/v1alpha2/tasks/wait-out", params={"wait": 2}, headers=key, timeout=30)
    elapsed = time.monotonic() - started
    assert resp.status_code == 200 and _check(resp)["status"] == "queued"
    assert 2 <= elapsed < 5, elapsed


@pytest.mark.parametrize("wait", ["26", "-1", "soon", "1.5"])
def test_wait_out_of_bounds_is_400(local_api, wait):
    key = {"x-api-key": local_api.api_key}
    for resp in (
        httpx.get(f"{local_api.url}/v1alpha2/tasks/any", params={"wait": wait}, headers=key),
        httpx.post(f"{local_api.url}/v1alpha2", params={"wait": wait}, headers=key, json=txt2img()),
    ):
        assert resp.status_code == 400
        assert _check(resp)["error"]["code"] == "invalid_query"


def test_wait_on_an_unknown_task_is_an_immediate_404(local_api):
    started = time.monotonic()
    resp = httpx.get(
        f"{local_api.url}/v1alpha2/tasks/never-was", params={"wait": 20}, headers={"x-api-key": local_api.api_key}
    )
    assert resp.status_code == 404 and time.monotonic() - started < 3


def test_submit_wait_returns_the_final_status(local_api):
    key = {"x-api-key": local_api.api_key}
    agent = _finish_later(local_api, "post-wait", delay_s=0.5)
    resp = httpx.post(
        f"{local_api.url}/v1alpha2",
        params={"wait": 15, "presign": 1},
        headers=key,
        json=txt2img(task_id="post-wait"),
        timeout=30,
    )
    agent.join()
    assert resp.status_code == 200
    final = _check(resp)
    assert final["status"] == "succeeded" and final["id"] == "post-wait"
    assert resp.headers["location"] == f"{local_api.url}/v1alpha2/tasks/post-wait"
    [url] = final["image_urls"]
    assert httpx.get(url).content == b"png of post-wait"


def test_submit_wait_that_runs_out_is_the_usual_202(local_api):
    started = time.monotonic()
    resp = httpx.post(
        f"{local_api.url}/v1alpha2",
        params={"wait": 1},
        headers={"x-api-key": local_api.api_key},
        json=txt2img(task_id="post-wait-out"),
        timeout=30,
    )
    assert resp.status_code == 202 and _check(resp)["status"] == "queued"
    assert 1 <= time.monotonic() - started < 4


# --- cancel ---------------------------------------------------------------------------


def _cancel(local_api, task_id: str) -> httpx.Response:
    return httpx.post(f"{local_api.url}/v1alpha2/tasks/{task_id}/cancel", headers={"x-api-key": local_api.api_key})


def test_cancel_a_queued_task_is_final_and_idempotent(local_api):
    key = {"x-api-key": local_api.api_key}
    assert _submit(local_api, "cancel-q").status_code == 202
    first = _cancel(local_api, "cancel-q")
    assert first.status_code == 200
    body = _check(first)
    assert body["status"] == "cancelled" and body["finished_at"] and body["images"] == []
    again = _cancel(local_api, "cancel-q")
    assert again.status_code == 200 and _check(again) == body
    status = httpx.get(f"{local_api.url}/v1alpha2/tasks/cancel-q", headers=key)
    assert _check(status)["status"] == "cancelled"
    # the agent's writes can no longer move it: it may not start, finish or fail the task
    table = _table(local_api)
    assert table.is_cancelled("cancel-q")
    assert table.mark_running("cancel-q", "sdruntime", attempt=1) is None
    assert table.mark_succeeded("cancel-q", ["s3://b/x.png"]) is False
    assert table.mark_failed("cancel-q", "late") is False
    assert table.get("cancel-q").status == "cancelled" and table.get("cancel-q").images == []


def test_cancel_a_running_task(local_api):
    assert _submit(local_api, "cancel-r").status_code == 202
    table = _table(local_api)
    table.mark_running("cancel-r", "sdruntime", attempt=1)
    assert not table.is_cancelled("cancel-r")
    resp = _cancel(local_api, "cancel-r")
    assert resp.status_code == 200 and _check(resp)["status"] == "cancelled"
    assert table.is_cancelled("cancel-r")


def test_a_wait_ends_when_the_task_is_cancelled(local_api):
    key = {"x-api-key": local_api.api_key}
    assert _submit(local_api, "cancel-w").status_code == 202
    timer = threading.Timer(1.0, _cancel, args=(local_api, "cancel-w"))
    timer.start()
    started = time.monotonic()
    resp = httpx.get(f"{local_api.url}/v1alpha2/tasks/cancel-w", params={"wait": 20}, headers=key, timeout=30)
    timer.join()
    assert _check(resp)["status"] == "cancelled" and time.monotonic() - started < 6


@pytest.mark.parametrize("state", ["succeeded", "failed"])
def test_cancel_a_finished_task_is_409_with_its_state(local_api, state):
    key = {"x-api-key": local_api.api_key}
    task_id = f"cancel-done-{state}"
    _finish_later(local_api, task_id, delay_s=0, status=state)
    assert _submit(local_api, task_id).status_code == 202
    assert (
        _check(httpx.get(f"{local_api.url}/v1alpha2/tasks/{task_id}", params={"wait": 10}, headers=key, timeout=30))[
            "status"
        ]
        == state
    )
    resp = _cancel(local_api, task_id)
    assert resp.status_code == 409
    err = _check(resp)["error"]
    assert err["code"] == "task_finished" and err["details"] == {"id": task_id, "status": state}
    assert state in err["message"]


def test_cancel_errors(local_api):
    key = {"x-api-key": local_api.api_key}
    assert _check(_cancel(local_api, "no-such-task"))["error"]["code"] == "not_found"
    assert _cancel(local_api, "no-such-task").status_code == 404
    resp = _cancel(local_api, "bad%20id")
    assert resp.status_code == 400 and _check(resp)["error"]["code"] == "invalid_id"
    resp = httpx.get(f"{local_api.url}/v1alpha2/tasks/x/cancel", headers=key)
    assert resp.status_code == 405 and resp.headers["allow"] == "POST"
    assert httpx.post(f"{local_api.url}/v1alpha2/tasks/x/cancel").status_code == 403


# --- presigned URLs by configuration ------------------------------------------------------


def test_presigned_urls_in_every_status_when_configured(local_api_presigning):
    api = local_api_presigning
    key = {"x-api-key": api.api_key}
    _finish_later(api, "presigned", delay_s=0)
    assert _submit(api, "presigned").status_code == 202
    status = _check(httpx.get(f"{api.url}/v1alpha2/tasks/presigned", params={"wait": 10}, headers=key, timeout=30))
    assert status["status"] == "succeeded"
    [url] = status["image_urls"]  # without ?presign=1
    assert url.startswith("http") and "X-Amz-Expires=900" in url
    assert httpx.get(url).content == b"png of presigned"
    opted_out = _check(httpx.get(f"{api.url}/v1alpha2/tasks/presigned", params={"presign": "0"}, headers=key))
    assert opted_out["image_urls"] is None


def test_presigned_urls_only_on_request_by_default(local_api):
    key = {"x-api-key": local_api.api_key}
    _finish_later(local_api, "not-presigned", delay_s=0)
    assert _submit(local_api, "not-presigned").status_code == 202
    status = httpx.get(f"{local_api.url}/v1alpha2/tasks/not-presigned", params={"wait": 10}, headers=key, timeout=30)
    assert _check(status)["status"] == "succeeded" and _check(status)["image_urls"] is None


# --- the CLI against the real server ------------------------------------------------------


def _cli(*args: str):
    from typer.testing import CliRunner

    from sdeks.cli import app

    result = CliRunner().invoke(app, list(args))
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result


def test_cli_cancel_and_status_wait(local_api):
    flags = ("--api-url", local_api.url, "--api-key", local_api.api_key)
    assert _submit(local_api, "cli-cancel").status_code == 202
    result = _cli("cancel", "cli-cancel", *flags)
    assert result.exit_code == 0 and json.loads(result.stdout)["status"] == "cancelled"
    assert _cli("cancel", "cli-cancel", *flags).exit_code == 0  # idempotent
    result = _cli("status", "cli-cancel", "--wait", "5", *flags)
    assert result.exit_code == 0 and json.loads(result.stdout)["status"] == "cancelled"

    _finish_later(local_api, "cli-done", delay_s=0)
    assert _submit(local_api, "cli-done").status_code == 202
    started = time.monotonic()
    result = _cli("status", "cli-done", "--wait", "20", *flags)
    assert json.loads(result.stdout)["status"] == "succeeded" and time.monotonic() - started < 8
    result = _cli("cancel", "cli-done", *flags)
    assert result.exit_code == 1 and "already succeeded" in result.output and "task_finished" in result.output
    assert _cli("status", "x", "--wait", "26", *flags).exit_code == 2  # bounded like the API


def test_cli_submit_wait_downloads_through_the_waiting_api(local_api, tmp_path):
    flags = ("--api-url", local_api.url, "--api-key", local_api.api_key)
    _finish_later(local_api, "cli-submit", delay_s=0.5)
    result = _cli("submit", "--prompt", "p", "--id", "cli-submit", "--wait", "--out", str(tmp_path), *flags)
    assert result.exit_code == 0, result.output
    assert (tmp_path / "cli-submit-1.png").read_bytes() == b"png of cli-submit"


def test_client_submit_and_wait(local_api):
    from sdeks.client import ApiClient
    from sdeks.contract import TaskStatus

    _finish_later(local_api, "client-wait", delay_s=0.3)
    with ApiClient(local_api.url, local_api.api_key) as client:
        final = client.submit_and_wait(txt2img(task_id="client-wait"), wait_s=15)
        assert isinstance(final, TaskStatus) and final.status == "succeeded"
        assert httpx.get(final.image_urls[0]).content == b"png of client-wait"
        queued = client.submit_and_wait(txt2img(task_id="client-wait-out"), wait_s=1)
        assert isinstance(queued, SubmitResponse) and queued.status == "queued"
