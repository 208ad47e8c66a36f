"""``metadata.webhook``: the front door accepts public https receivers only (loopback in local mode)."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from sdeks.contract import MAX_WEBHOOK_URL_LENGTH, WEBHOOK_LOOPBACK_CONTEXT, TaskRequest, describe
from sdeks.tasks_table import TaskTable
from tests.fixtures.api import txt2img


def with_webhook(webhook: object, **kw) -> dict:
    body = txt2img(**kw)
    body["task"]["metadata"]["webhook"] = webhook
    return body


def problems(webhook: object, loopback: bool = False) -> list[dict[str, str]]:
    try:
        TaskRequest.model_validate(with_webhook(webhook), context={WEBHOOK_LOOPBACK_CONTEXT: loopback})
    except ValidationError as exc:
        return describe(exc)
    return []


def test_https_receiver_defaults_to_completed_events():
    task = TaskRequest.model_validate(with_webhook({"url": "https://hooks.example.com/sd?token=x"})).task
    assert task.metadata.webhook is not None
    assert task.metadata.webhook.events == ["completed"]
    assert task.metadata.webhook.url == "https://hooks.example.com/sd?token=x"


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("http://hooks.example.com/", "must be https, not 'http'"),
        ("ftp://hooks.example.com/", "must be https"),
        ("https://10.0.0.1/hook", "non-public address 10.0.0.1"),
        ("https://169.254.169.254/latest/meta-data", "non-public address 169.254.169.254"),
        ("https://[fd00:ec2::254]/", "non-public address fd00:ec2::254"),
        ("https://127.0.0.1:8443/", "non-public address 127.0.0.1"),
        ("http://127.0.0.1:8080/", "must be https"),
        ("https://user:pw@hooks.example.com/", "must not carry credentials"),
        ("https:///path", "needs a host"),
        ("https://hooks.example.com:99999/", "invalid host or port"),
    ],
)
def test_refused_receivers_name_the_reason(url, message):
    [problem] = problems({"url": url})
    assert problem["field"] == "task.metadata.webhook.url"
    assert message in problem["message"]


def test_url_length_is_bounded():
    base = "https://hooks.example.com/"
    assert problems({"url": base + "a" * (MAX_WEBHOOK_URL_LENGTH - len(base))}) == []
    [problem] = problems({"url": base + "a" * (MAX_WEBHOOK_URL_LENGTH - len(base) + 1)})
    assert f"at most {MAX_WEBHOOK_URL_LENGTH} characters" in problem["message"]


def test_loopback_only_when_local_mode_allows_it():
    assert problems({"url": "http://127.0.0.1:8080/hook"}, loopback=True) == []
    assert problems({"url": "https://[::1]:8443/hook"}, loopback=True) == []
    # local mode admits loopback, never private or metadata addresses
    [problem] = problems({"url": "http://10.0.0.1/hook"}, loopback=True)
    assert "must be https" in problem["message"]
    [problem] = problems({"url": "https://169.254.169.254/"}, loopback=True)
    assert "non-public address" in problem["message"]


@pytest.mark.parametrize(
    ("events", "message"),
    [
        (["started"], "'started' is not available yet"),
        (["completed", "started"], "'started' is not available yet"),
        (["completed", "completed"], "must not repeat"),
        ([], "at least 1 item"),
        (["finished"], "'completed'"),
    ],
)
def test_events_filter(events, message):
    [problem] = problems({"url": "https://hooks.example.com/", "events": events})
    assert problem["field"].startswith("task.metadata.webhook.events")
    assert message in problem["message"]


def test_unknown_webhook_fields_are_refused():
    [problem] = problems({"url": "https://hooks.example.com/", "secret": "x"})
    assert problem["field"] == "task.metadata.webhook.secret"


def test_api_stores_the_webhook_in_the_status_row_not_the_message(api):
    webhook = {"url": "https://hooks.example.com/sd?token=t0k", "events": ["completed"]}
    ans = api.submit(with_webhook(webhook, task_id="hooked"))
    assert ans.status == 202
    row = TaskTable.from_name(api.res.task_table, endpoint_url=api.res.aws_endpoint_url).get_item("hooked")
    assert row["webhook"] == webhook
    status = api.call("GET", "/v1alpha2/tasks/hooked")
    assert status.status == 200 and "webhook" not in status.json  # the URL may hold a token: not echoed


def test_api_refuses_loopback_receivers_unless_local_mode_allows_them(api, monkeypatch):
    body = with_webhook({"url": "http://127.0.0.1:9/hook"}, task_id="loop")
    refused = api.submit(body)
    assert refused.status == 400 and refused.json["error"]["code"] == "validation_error"
    assert refused.json["error"]["details"] == [
        {"field": "task.metadata.webhook.url", "message": "webhook url must be https, not 'http'"}
    ]
    monkeypatch.setenv("SDEKS_WEBHOOK_ALLOW_LOOPBACK", "1")
    assert api.submit(body).status == 202


def test_api_refuses_started_events_with_a_clear_400(api):
    ans = api.submit(with_webhook({"url": "https://hooks.example.com/", "events": ["started"]}))
    assert ans.status == 400
    assert "'started' is not available yet" in ans.json["error"]["message"]


def test_without_a_receiver_policy_only_the_shape_is_checked():
    """The agent validates tasks the front door accepted (no context): local-mode receivers must pass there."""
    local = with_webhook({"url": "http://127.0.0.1:8080/hook"})
    assert TaskRequest.model_validate(local).task.metadata.webhook.url == "http://127.0.0.1:8080/hook"
    for url, message in (("ftp://hooks.example.com/", "must be https"), ("https://u:p@h.example/", "credentials")):
        with pytest.raises(ValidationError, match=message):
            TaskRequest.model_validate(with_webhook({"url": url}))


def test_same_id_with_another_webhook_is_a_conflict(api):
    assert api.submit(with_webhook({"url": "https://a.example.com/"}, task_id="same")).status == 202
    assert api.submit(with_webhook({"url": "https://a.example.com/"}, task_id="same")).status == 202
    conflict = api.submit(with_webhook({"url": "https://b.example.com/"}, task_id="same"))
    assert conflict.status == 409 and conflict.json["error"]["code"] == "conflict"
