"""Create the cloud resource layout on an AWS-compatible endpoint (moto server).

Iterates over the same :func:`sdeks.config.resource_layout` as the CDK stack,
so local mode exercises the topology that ``cdk deploy`` creates: one tasks
topic, a queue + DLQ per runtime subscribed with raw delivery and the layout's
filter policy (its runtime name or its models), a results topic with the webhook deliverer's queue +
DLQ, the webhook signing secret, the task table and the bucket.
"""

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass, field
from typing import Any

import boto3

from sdeks.config import TASK_TABLE_KEY, Config, RuntimeQueues, WebhookQueues, resource_layout
from sdeks.webhook_secret import new_secret_value


@dataclass
class QueueRefs:
    url: str
    arn: str
    dlq_url: str
    dlq_arn: str


@dataclass
class LocalResources:
    """Names, ARNs and URLs of the provisioned resources (written to .sdeks/local.json)."""

    aws_endpoint_url: str
    region: str
    output_bucket: str
    tasks_topic_arn: str
    results_topic_arn: str
    task_table: str
    queues: dict[str, QueueRefs] = field(default_factory=dict)
    webhook_queue: QueueRefs | None = None
    webhook_secret_id: str = ""


LOCAL_CREDENTIALS = {"aws_access_key_id": "local", "aws_secret_access_key": "local"}
"""moto accepts any credentials; explicit ones keep a local stack independent of ~/.aws."""


def local_session(region: str) -> boto3.session.Session:
    return boto3.session.Session(region_name=region, **LOCAL_CREDENTIALS)


def aws_clients(endpoint_url: str, region: str) -> dict[str, Any]:
    session = local_session(region)
    services = ("s3", "sns", "sqs", "dynamodb", "secretsmanager")
    return {name: session.client(name, endpoint_url=endpoint_url) for name in services}


def provision(config: Config, endpoint_url: str, region: str = "us-east-1") -> LocalResources:
    """Create (idempotently) every resource the config describes and return their references."""
    layout = resource_layout(config)
    clients = aws_clients(endpoint_url, region)
    s3, sns, sqs, ddb = clients["s3"], clients["sns"], clients["sqs"], clients["dynamodb"]

    bucket = layout.local_output_bucket
    if region == "us-east-1":
        s3.create_bucket(Bucket=bucket)
    else:
        s3.create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": region})

    with contextlib.suppress(ddb.exceptions.ResourceInUseException):
        ddb.create_table(
            TableName=layout.task_table_name,
            AttributeDefinitions=[{"AttributeName": TASK_TABLE_KEY, "AttributeType": "S"}],
            KeySchema=[{"AttributeName": TASK_TABLE_KEY, "KeyType": "HASH"}],
            BillingMode="PAY_PER_REQUEST",
        )

    tasks_topic = sns.create_topic(Name=layout.tasks_topic_name)["TopicArn"]
    results_topic = sns.create_topic(Name=layout.results_topic_name)["TopicArn"]

    queues: dict[str, QueueRefs] = {}
    for rq in layout.runtimes:
        refs = _queue_with_dlq(sqs, rq)
        sns.subscribe(
            TopicArn=tasks_topic,
            Protocol="sqs",
            Endpoint=refs.arn,
            Attributes={"RawMessageDelivery": "true", "FilterPolicy": json.dumps(rq.filter_policy)},
            ReturnSubscriptionArn=True,
        )
        queues[rq.runtime.name] = refs

    hooks = layout.webhooks
    webhook_queue = _queue_with_dlq(sqs, hooks)
    sns.subscribe(
        TopicArn=results_topic,
        Protocol="sqs",
        Endpoint=webhook_queue.arn,
        Attributes={"RawMessageDelivery": "true"},
        ReturnSubscriptionArn=True,
    )
    secrets = clients["secretsmanager"]
    try:
        secret_id = secrets.describe_secret(SecretId=hooks.secret_name)["ARN"]
    except secrets.exceptions.ResourceNotFoundException:
        secret_id = secrets.create_secret(Name=hooks.secret_name, SecretString=new_secret_value())["ARN"]

    return LocalResources(
        aws_endpoint_url=endpoint_url,
        region=region,
        output_bucket=bucket,
        tasks_topic_arn=tasks_topic,
        results_topic_arn=results_topic,
        task_table=layout.task_table_name,
        queues=queues,
        webhook_queue=webhook_queue,
        webhook_secret_id=secret_id,
    )


def _queue_with_dlq(sqs: Any, spec: RuntimeQueues | WebhookQueues) -> QueueRefs:
    """A queue and its DLQ as the layout describes them (names, visibility, maxReceiveCount, DLQ retention)."""
    dlq_url = sqs.create_queue(
        QueueName=spec.dlq_name, Attributes={"MessageRetentionPeriod": str(spec.dlq_retention_s)}
    )["QueueUrl"]
    dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    url = sqs.create_queue(
        QueueName=spec.queue_name,
        Attributes={
            "VisibilityTimeout": str(spec.visibility_timeout_s),
            "RedrivePolicy": json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": spec.max_receive_count}),
        },
    )["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    return QueueRefs(url=url, arn=arn, dlq_url=dlq_url, dlq_arn=dlq_arn)
