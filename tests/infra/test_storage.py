"""Buckets: private, encrypted, TLS-only, logged, expiring."""

from __future__ import annotations

import pytest

from tests.infra.helpers import is_tls_only

pytestmark = pytest.mark.slow


def test_every_bucket_private_encrypted_tls_only(synth_any):
    buckets = synth_any.resources("AWS::S3::Bucket")
    assert len(buckets) == 3  # output, models, access logs
    for b in buckets.values():
        props = b["Properties"]
        assert props["PublicAccessBlockConfiguration"] == {
            "BlockPublicAcls": True,
            "BlockPublicPolicy": True,
            "IgnorePublicAcls": True,
            "RestrictPublicBuckets": True,
        }
        rule = props["BucketEncryption"]["ServerSideEncryptionConfiguration"][0]
        assert rule["ServerSideEncryptionByDefault"]["SSEAlgorithm"] in ("AES256", "aws:kms")
        assert "AccessControl" not in props
    covered = {
        p["Properties"]["Bucket"]["Ref"]
        for p in synth_any.resources("AWS::S3::BucketPolicy").values()
        if is_tls_only(p["Properties"]["PolicyDocument"]["Statement"])
    }
    assert covered == set(buckets)


def test_output_bucket_expires_and_logs(synth_any):
    buckets = synth_any.resources("AWS::S3::Bucket")
    output = next(v["Properties"] for k, v in buckets.items() if k.startswith("StorageOutput"))
    logs = next(k for k in buckets if k.startswith("StorageAccessLogs"))
    rules = output["LifecycleConfiguration"]["Rules"]
    assert rules[0]["ExpirationInDays"] == synth_any.config.output.expire_days
    assert rules[0]["Status"] == "Enabled"
    assert output["LoggingConfiguration"]["DestinationBucketName"] == {"Ref": logs}
