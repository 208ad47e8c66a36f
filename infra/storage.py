"""Buckets: task outputs (images, claim-checked task bodies), models, and their access logs."""

from __future__ import annotations

from aws_cdk import Duration, RemovalPolicy
from aws_cdk import aws_s3 as s3
from constructs import Construct

from sdeks.config import Config


def _private_bucket(scope: Construct, cid: str, **kwargs) -> s3.Bucket:
    return s3.Bucket(
        scope,
        cid,
        block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
        encryption=s3.BucketEncryption.S3_MANAGED,
        enforce_ssl=True,
        object_ownership=s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
        removal_policy=RemovalPolicy.RETAIN,
        **kwargs,
    )


class Storage(Construct):
    """Output bucket (created or existing by name), model bucket, server access log bucket.

    Created buckets are private, SSE-S3 encrypted, TLS-only and logged; they are
    retained on ``cdk destroy`` (they hold user data): see docs/deploy.md, Teardown.
    """

    def __init__(self, scope: Construct, cid: str, *, config: Config, versioned_output: bool = False) -> None:
        super().__init__(scope, cid)
        self.access_logs = s3.Bucket(
            self,
            "AccessLogs",
            block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
            encryption=s3.BucketEncryption.S3_MANAGED,
            enforce_ssl=True,
            # The logging service is granted by bucket policy (feature flag serverAccessLogsUseBucketPolicy).
            object_ownership=s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
            removal_policy=RemovalPolicy.RETAIN,
            lifecycle_rules=[s3.LifecycleRule(id="expire-logs", expiration=Duration.days(90))],
        )

        if config.output.bucket:
            self.output_bucket: s3.IBucket = s3.Bucket.from_bucket_name(self, "Output", config.output.bucket)
            self.output_bucket_created = False
        else:
            self.output_bucket = _private_bucket(
                self,
                "Output",
                versioned=versioned_output,
                server_access_logs_bucket=self.access_logs,
                server_access_logs_prefix="output/",
                lifecycle_rules=[
                    s3.LifecycleRule(
                        id="expire-outputs",
                        expiration=Duration.days(config.output.expire_days),
                        noncurrent_version_expiration=Duration.days(1) if versioned_output else None,
                        abort_incomplete_multipart_upload_after=Duration.days(1),
                    ),
                ],
            )
            self.output_bucket_created = True

        model_buckets = {r.model.bucket for r in config.runtimes if r.model.bucket}
        self.model_buckets: dict[str, s3.IBucket] = {}
        for i, name in enumerate(sorted(model_buckets)):
            self.model_buckets[name] = s3.Bucket.from_bucket_name(self, f"Models{i}", name)
        self.created_model_bucket: s3.Bucket | None = None
        if any(not r.model.bucket for r in config.runtimes):
            self.created_model_bucket = _private_bucket(
                self,
                "Models",
                server_access_logs_bucket=self.access_logs,
                server_access_logs_prefix="models/",
            )

    def model_bucket_for(self, config: Config, runtime_name: str) -> s3.IBucket:
        runtime = config.runtime(runtime_name)
        if runtime.model.bucket:
            return self.model_buckets[runtime.model.bucket]
        assert self.created_model_bucket is not None
        return self.created_model_bucket
