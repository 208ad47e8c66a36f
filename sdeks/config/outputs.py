"""Keys of the CloudFormation stack's outputs: what the CLI reads after ``cdk deploy``.

The stack sets each output with exactly this key (not a construct path with a hash), so
``aws cloudformation describe-stacks`` and ``sdeks models`` / ``sdeks smoke`` find them by name.
"""

from __future__ import annotations

from enum import StrEnum


class StackOutput(StrEnum):
    API_URL = "ApiUrl"
    """Base URL of the REST API (``.../prod/``); tasks go to ``<ApiUrl>v1alpha2``."""
    API_KEY_ID = "ApiKeyId"
    """Id of the default API key; its value comes from ``aws apigateway get-api-key --include-value``."""
    OUTPUT_BUCKET = "OutputBucket"
    RESULTS_TOPIC_ARN = "ResultsTopicArn"
    TASK_TABLE_NAME = "TaskTableName"
    MODEL_BUCKET = "ModelBucket"
    """The bucket the stack created for models (absent when every runtime names its own bucket)."""
    MODEL_LOCATIONS = "ModelLocations"
    """JSON: ``{runtime: {"location": "s3://bucket/prefix/", "checkpoint": name}}`` (no checkpoint: none configured)."""


def model_location(bucket: str, prefix: str) -> str:
    """Where a runtime reads its models: Mountpoint mounts ``s3://bucket/prefix/`` as the models directory."""
    return f"s3://{bucket}/{prefix.strip('/')}/"
