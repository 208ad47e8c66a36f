"""``sdeks webhook-secret``: the secret of a deployed stack (here: provisioned on a moto server) and clear errors."""

from __future__ import annotations

import time

import pytest
import standardwebhooks

from sdeks.config import resource_layout
from sdeks.webhook_secret import signing_key
from tests.fixtures.local import sdeks
from webhooks.signing import signed_headers

pytestmark = pytest.mark.slow


def test_prints_the_deployed_stacks_secret_from_its_config(aws_stack, tmp_path, monkeypatch):
    config, res = aws_stack
    (tmp_path / "stack.yaml").write_text(f"project: {config.project}\nruntimes: [{{name: sdruntime}}]\n")
    monkeypatch.setenv("AWS_ENDPOINT_URL", res.aws_endpoint_url)
    result = sdeks(tmp_path, "webhook-secret", "--config", "stack.yaml", "--region", "us-east-1", check=True)
    secret = result.stdout.strip()
    assert secret.startswith("whsec_") and len(signing_key(secret)) == 32
    headers = signed_headers(signing_key(secret), "msg_x", int(time.time()), b"{}")
    standardwebhooks.Webhook(secret).verify(b"{}", headers)
    assert resource_layout(config).webhooks.secret_name in res.webhook_secret_id


def test_without_a_stack_or_config_it_says_what_to_do(tmp_path):
    result = sdeks(tmp_path, "webhook-secret")
    assert result.returncode == 1
    assert "no local stack found" in result.stderr and "--config" in result.stderr
    assert "Traceback" not in result.stderr


def test_unreadable_secret_is_a_clear_error(moto_server, tmp_path, monkeypatch):
    (tmp_path / "stack.yaml").write_text("project: nosuchproject\nruntimes: [{name: sdruntime}]\n")
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_server)
    result = sdeks(tmp_path, "webhook-secret", "--config", "stack.yaml", "--region", "us-east-1")
    assert result.returncode == 1
    assert "cannot read the webhook secret 'nosuchproject/webhook-signing-secret'" in result.stderr.replace("\n", "")
    assert "Traceback" not in result.stderr
