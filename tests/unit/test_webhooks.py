"""The webhook deliverer's core: Standard Webhooks signatures, the address policy, the retry schedule.

Signatures are checked with the third-party ``standardwebhooks`` library; deliveries
go to a real HTTP(S) receiver on 127.0.0.1. The task table is an in-process fake.
"""

from __future__ import annotations

import itertools
import json
import ssl
import time
from datetime import UTC, datetime

import httpx
import pytest
import standardwebhooks
from botocore.exceptions import ClientError

from sdeks.config import load_config, resource_layout
from sdeks.contract import CompletionEvent, WebhookPayload
from sdeks.webhook_retries import MAX_RETRY_DELAY_S, MIN_RETRY_SPAN_S, max_receives, retry_delay_s, retry_span_s
from sdeks.webhook_secret import new_secret_value, signing_key, signing_secret
from tests.fixtures.webhooks import Receiver, self_signed
from webhooks.deliver import Deliverer, Verdict, delivery_id, http_client
from webhooks.signing import signed_headers

SECRET = signing_secret(new_secret_value())
SENT_AT = datetime(2026, 12, 2, 6, 0, tzinfo=UTC)


def event(task_id: str = "t1", status: str = "succeeded", **kw) -> CompletionEvent:
    return CompletionEvent(
        id=task_id,
        runtime="sdruntime",
        status=status,
        result=status == "succeeded",
        image_url=[f"s3://bucket/output/{task_id}/{task_id}-1.png"] if status == "succeeded" else [],
        attempt=1,
        **kw,
    )


class FakeTable:
    def __init__(self, rows: dict | None = None, fail: bool = False) -> None:
        self.rows = rows or {}
        self.fail = fail

    def get_item(self, task_id: str):
        if self.fail:
            raise ClientError({"Error": {"Code": "ProvisionedThroughputExceededException"}}, "GetItem")
        return self.rows.get(task_id)


def row(url: str, events: list[str] | None = None) -> dict:
    return {"id": "t1", "webhook": {"url": url, "events": events or ["completed"]}}


def deliverer(table, *, allow_loopback=True, resolver=None, http=None, secret=SECRET) -> Deliverer:
    return Deliverer(
        table=table,
        key=signing_key(secret),
        http=http or http_client(5.0),
        allow_loopback=allow_loopback,
        resolver=resolver or (lambda host, port: ["127.0.0.1"]),
    )


# --- signatures ---------------------------------------------------------------


def test_signature_verifies_with_the_standard_webhooks_library():
    body = b'{"type":"task.completed"}'
    headers = signed_headers(signing_key(SECRET), "msg_1", int(time.time()), body)
    assert standardwebhooks.Webhook(SECRET).verify(body, headers) == {"type": "task.completed"}
    with pytest.raises(standardwebhooks.webhooks.WebhookVerificationError):
        standardwebhooks.Webhook(SECRET).verify(b'{"type":"task.failed"}', headers)
    with pytest.raises(standardwebhooks.webhooks.WebhookVerificationError):
        standardwebhooks.Webhook(signing_secret(new_secret_value())).verify(body, headers)
    stale = signed_headers(signing_key(SECRET), "msg_1", int(time.time()) - 3600, body)
    with pytest.raises(standardwebhooks.webhooks.WebhookVerificationError, match="too old"):
        standardwebhooks.Webhook(SECRET).verify(body, stale)


def test_cdk_generated_secret_is_a_valid_standard_webhooks_secret():
    stored = "Ab3dEf6hIj9kLm2nOp5qRs8tUv1wXy4zAb7dEf0hIj3kLm6n"  # 48 letters/digits as Secrets Manager makes them
    secret = signing_secret(stored)
    assert secret.startswith("whsec_") and signing_secret(secret) == secret
    body = b"{}"
    headers = signed_headers(signing_key(secret), "msg_2", int(time.time()), body)
    standardwebhooks.Webhook(secret).verify(body, headers)


@pytest.mark.parametrize("bad", ["whsec_not base64!", "whsec_", "whsec_YWJj"])
def test_unusable_secrets_are_refused(bad):
    with pytest.raises(ValueError, match="webhook secret"):
        signing_key(bad)


def test_delivery_id_is_stable_per_event_and_differs_between_events():
    assert delivery_id(event()) == delivery_id(CompletionEvent.model_validate_json(event().model_dump_json()))
    assert delivery_id(event()) != delivery_id(event(status="failed", error="boom"))
    assert delivery_id(event()) != delivery_id(event("t2"))


# --- retry schedule -----------------------------------------------------------


def test_retry_delays_grow_exponentially_and_cap_at_the_sqs_limit():
    delays = [retry_delay_s(n) for n in range(1, 13)]
    assert delays[:4] == [5, 20, 80, 320]
    assert all(b >= a for a, b in itertools.pairwise(delays))
    assert max(delays) == MAX_RETRY_DELAY_S == 43200
    assert retry_delay_s(10_000) == MAX_RETRY_DELAY_S


def test_max_receives_makes_retries_span_at_least_a_day():
    receives = max_receives()
    assert retry_span_s(receives) >= MIN_RETRY_SPAN_S > retry_span_s(receives - 1)
    assert receives == 10 and retry_span_s(receives) / 3600 > 31


def test_layout_sizes_the_webhook_queue_from_the_schedule():
    hooks = resource_layout(load_config(None)).webhooks
    assert hooks.max_receive_count == max_receives()
    assert hooks.queue_name == "sdeks_webhooks" and hooks.dlq_name == "sdeks_webhooks-dlq"
    assert hooks.dlq_retention_s == 14 * 24 * 3600


# --- delivery -----------------------------------------------------------------


def test_delivers_a_signed_completed_event(receiver: Receiver):
    table = FakeTable({"t1": row(receiver.url("/hook?token=abc"))})
    outcome = deliverer(table).deliver(event(context={"user": 7}).model_dump_json(), SENT_AT)
    assert outcome.verdict is Verdict.DELIVERED and outcome.final
    [got] = receiver.deliveries
    assert got.path == "/hook?token=abc"
    assert got.headers["content-type"] == "application/json"
    assert got.headers["host"] == f"127.0.0.1:{receiver.port}"
    payload = standardwebhooks.Webhook(SECRET).verify(got.body, got.headers)
    parsed = WebhookPayload.model_validate(payload)
    assert parsed.type == "task.completed" and parsed.timestamp == SENT_AT
    assert parsed.data == event(context={"user": 7})
    assert got.headers["webhook-id"] == delivery_id(event(context={"user": 7}))


def test_receiver_failure_asks_for_a_retry_with_the_same_id(receiver: Receiver):
    receiver.statuses = [500, 503]
    d = deliverer(FakeTable({"t1": row(receiver.url())}))
    outcomes = [d.deliver(event().model_dump_json(), SENT_AT, attempt=n) for n in (1, 2, 3)]
    assert [o.verdict for o in outcomes] == [Verdict.RETRY, Verdict.RETRY, Verdict.DELIVERED]
    assert outcomes[0].reason == "receiver answered HTTP 500"
    assert receiver.answered == [500, 503, 200]
    assert len({d.headers["webhook-id"] for d in receiver.deliveries}) == 1
    assert len({d.body for d in receiver.deliveries}) == 1


def test_redirects_are_not_followed(receiver: Receiver):
    receiver.statuses = [307]
    outcome = deliverer(FakeTable({"t1": row(receiver.url())})).deliver(event().model_dump_json(), SENT_AT)
    assert outcome.verdict is Verdict.RETRY and "307" in outcome.reason
    assert len(receiver.deliveries) == 1


def test_unreachable_receiver_is_retried():
    from tests.fixtures.aws import free_port

    url = f"http://127.0.0.1:{free_port()}/hook"
    outcome = deliverer(FakeTable({"t1": row(url)})).deliver(event().model_dump_json(), SENT_AT)
    assert outcome.verdict is Verdict.RETRY and "ConnectError" in outcome.reason


@pytest.mark.parametrize(
    ("table", "body", "reason"),
    [
        (FakeTable(), event().model_dump_json(), "task has no webhook"),
        (FakeTable({"t1": {"id": "t1"}}), event().model_dump_json(), "task has no webhook"),
        (FakeTable({"t1": row("https://hooks.example.com/")}), '{"not": "an event"}', "not a completion event"),
        (FakeTable({"t1": row("https://hooks.example.com/")}), "{{{", "not a completion event"),
    ],
)
def test_nothing_to_deliver(table, body, reason):
    calls = []
    http = httpx.Client(transport=httpx.MockTransport(lambda request: calls.append(request) or httpx.Response(200)))
    outcome = deliverer(table, http=http).deliver(body, SENT_AT)
    assert (outcome.verdict, outcome.reason) == (Verdict.NOT_WANTED, reason) and outcome.final
    assert calls == []


def test_task_table_trouble_is_retried():
    outcome = deliverer(FakeTable(fail=True)).deliver(event().model_dump_json(), SENT_AT)
    assert outcome.verdict is Verdict.RETRY and "task table unavailable" in outcome.reason


@pytest.mark.parametrize(
    ("url", "resolved", "reason"),
    [
        ("https://hooks.example.com/", ["10.0.0.1"], "resolves to non-public address 10.0.0.1"),
        ("https://hooks.example.com/", ["169.254.169.254"], "non-public address 169.254.169.254"),
        ("https://hooks.example.com/", ["93.184.216.34", "fd00:ec2::254"], "non-public address fd00:ec2::254"),
        ("https://hooks.example.com/", ["127.0.0.1"], "non-public address 127.0.0.1"),
        ("https://hooks.example.com/", ["::ffff:192.168.1.1"], "non-public address ::ffff:192.168.1.1"),
        ("https://10.0.0.1/", ["10.0.0.1"], "non-public address 10.0.0.1"),
        ("https://169.254.169.254/latest", ["169.254.169.254"], "non-public address 169.254.169.254"),
        ("http://127.0.0.1:9/hook", ["127.0.0.1"], "must be https"),
    ],
)
def test_private_receivers_are_refused_before_any_connection(url, resolved, reason):
    """Production policy (no loopback): refused, final (never retried), and no request leaves."""
    calls = []
    http = httpx.Client(transport=httpx.MockTransport(lambda request: calls.append(request) or httpx.Response(200)))
    d = deliverer(FakeTable({"t1": row(url)}), allow_loopback=False, resolver=lambda h, p: resolved, http=http)
    outcome = d.deliver(event().model_dump_json(), SENT_AT)
    assert outcome.verdict is Verdict.REFUSED and outcome.final
    assert reason in outcome.reason
    assert calls == []


def test_loopback_policy_still_refuses_private_addresses():
    calls = []
    http = httpx.Client(transport=httpx.MockTransport(lambda request: calls.append(request) or httpx.Response(200)))
    d = deliverer(FakeTable({"t1": row("https://hooks.example.com/")}), resolver=lambda h, p: ["10.1.2.3"], http=http)
    assert d.deliver(event().model_dump_json(), SENT_AT).verdict is Verdict.REFUSED
    assert calls == []


def test_unresolvable_host_is_retried():
    def fail(host, port):
        raise OSError("no such host")

    d = deliverer(FakeTable({"t1": row("https://hooks.example.com/")}), resolver=fail)
    assert d.deliver(event().model_dump_json(), SENT_AT).verdict is Verdict.RETRY


def test_https_goes_to_the_vetted_address_and_checks_the_certificate_for_the_host(tmp_path):
    """The name is resolved once; the connection goes to that address with the name for SNI and the cert check."""
    cert, key = self_signed(tmp_path, "hooks.test")
    server_tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_tls.load_cert_chain(cert, key)
    receiver = Receiver().start(server_tls)
    try:
        trust = ssl.create_default_context(cafile=str(cert))
        resolved: list[str] = []

        def resolver(host: str, port: int) -> list[str]:
            resolved.append(host)
            return ["127.0.0.1"]

        table = FakeTable({"t1": row(f"https://hooks.test:{receiver.port}/in")})
        d = deliverer(table, resolver=resolver, http=http_client(5.0, verify=trust))
        assert d.deliver(event().model_dump_json(), SENT_AT).verdict is Verdict.DELIVERED
        assert resolved == ["hooks.test"]
        [got] = receiver.deliveries
        assert got.headers["host"] == f"hooks.test:{receiver.port}"
        standardwebhooks.Webhook(SECRET).verify(got.body, got.headers)

        # A certificate for another name is rejected, even though the address is the same.
        table.rows["t1"] = row(f"https://other.test:{receiver.port}/in")
        outcome = d.deliver(event().model_dump_json(), SENT_AT)
        assert outcome.verdict is Verdict.RETRY and "ConnectError" in outcome.reason
        assert len(receiver.deliveries) == 1
    finally:
        receiver.stop()


def test_log_lines_name_the_host_never_the_url(receiver: Receiver, caplog):
    table = FakeTable({"t1": row(receiver.url("/hook?token=s3cret"))})
    with caplog.at_level("INFO", logger="sdeks.webhooks"):
        deliverer(table).deliver(event().model_dump_json(), SENT_AT)
    [line] = [json.loads(r.getMessage()) for r in caplog.records if r.name == "sdeks.webhooks"]
    assert line == {"event": "webhook_delivered", "reason": "HTTP 200", "attempt": 1, "task_id": "t1",
                    "host": "127.0.0.1"}  # fmt: skip
    assert "s3cret" not in caplog.text


def test_ipv6_literal_receivers_keep_brackets_in_the_host_header(receiver: Receiver):
    """``http://[::1]:PORT`` (local mode): the request goes to the vetted address, Host names the literal."""
    table = FakeTable({"t1": row(f"http://[::1]:{receiver.port}/v6")})
    d = deliverer(table, resolver=lambda host, port: ["127.0.0.1"] if host == "::1" else [])
    assert d.deliver(event().model_dump_json(), SENT_AT).verdict is Verdict.DELIVERED
    [got] = receiver.deliveries
    assert got.headers["host"] == f"[::1]:{receiver.port}" and got.path == "/v6"


def test_a_bug_retries_the_event_and_logs_no_message(caplog):
    class Broken(FakeTable):
        def get_item(self, task_id):
            raise RuntimeError(self.rows["url"])  # data in the message, as a real bug would carry it

    with caplog.at_level("INFO", logger="sdeks.webhooks"):
        broken = Broken({"url": "https://hooks.example.com/?token=s3cret"})
        outcome = deliverer(broken).deliver(event().model_dump_json(), SENT_AT)
    assert (outcome.verdict, outcome.reason) == (Verdict.RETRY, "internal error: RuntimeError")
    assert "webhook_internal_error" in caplog.text and "s3cret" not in caplog.text
