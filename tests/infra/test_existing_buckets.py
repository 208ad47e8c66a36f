"""Buckets given by name in the config are used, not created, and permissions follow them."""

from __future__ import annotations

import json

import pytest

from tests.infra.helpers import actions_on, policy_statements

pytestmark = pytest.mark.slow


def test_named_buckets_are_not_created(synth_existing_buckets):
    buckets = synth_existing_buckets.resources("AWS::S3::Bucket")
    assert list(buckets) == [k for k in buckets if k.startswith("StorageAccessLogs")]
    fn = next(
        v["Properties"]
        for v in synth_existing_buckets.resources("AWS::Lambda::Function").values()
        if v["Properties"].get("Handler") == "handler.handler"
    )
    assert fn["Environment"]["Variables"]["SDEKS_OUTPUT_BUCKET"] == "my-outputs"


def test_permissions_name_the_given_buckets(synth_existing_buckets):
    allowed = actions_on([s for _, s in policy_statements(synth_existing_buckets.raw)])
    puts = json.dumps(allowed["s3:PutObject"])
    assert "my-outputs/_claims/*" in puts
    gets = json.dumps(allowed["s3:GetObject"])
    assert "my-models/sd15/*" in gets and "my-inputs/*" in gets


def test_nag_clean_with_named_buckets(synth_existing_buckets):
    assert not synth_existing_buckets.nag_violations(), [v["ruleName"] for v in synth_existing_buckets.nag_violations()]
