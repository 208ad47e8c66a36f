"""Topics and queues: tasks topic → per-runtime queue (filter on ``runtime`` or ``model``) + DLQ; results topic."""

from __future__ import annotations

from typing import cast

from aws_cdk import Duration, RemovalPolicy
from aws_cdk import aws_kms as kms
from aws_cdk import aws_sns as sns
from aws_cdk import aws_sns_subscriptions as subs
from aws_cdk import aws_sqs as sqs
from constructs import Construct

from sdeks.config import ResourceLayout


def sdeks_queue(scope: Construct, cid: str, queue_name: str, **props: object) -> sqs.Queue:
    """Every sdeks queue: SQS-managed encryption, TLS only, removed with the stack."""
    return sqs.Queue(
        scope,
        cid,
        queue_name=queue_name,
        encryption=sqs.QueueEncryption.SQS_MANAGED,
        enforce_ssl=True,
        removal_policy=RemovalPolicy.DESTROY,
        **props,
    )


class RuntimeQueue(Construct):
    def __init__(self, scope: Construct, cid: str, *, queue: sqs.Queue, dlq: sqs.Queue) -> None:
        super().__init__(scope, cid)
        self.queue = queue
        self.dlq = dlq


class Messaging(Construct):
    """Everything named and filtered as :func:`sdeks.config.resource_layout` says.

    Topics use the AWS-managed SNS key (``alias/aws/sns``): publishers in the account
    need no KMS grant and SQS subscribers keep SSE-SQS. Queues use SSE-SQS. Every
    topic and queue denies non-TLS access.
    """

    def __init__(self, scope: Construct, cid: str, *, layout: ResourceLayout) -> None:
        super().__init__(scope, cid)
        sns_key = kms.Alias.from_alias_name(self, "SnsKey", "alias/aws/sns")
        self.tasks_topic = sns.Topic(
            self, "Tasks", topic_name=layout.tasks_topic_name, master_key=sns_key, enforce_ssl=True
        )
        self.results_topic = sns.Topic(
            self, "Results", topic_name=layout.results_topic_name, master_key=sns_key, enforce_ssl=True
        )
        self.runtime_queues: dict[str, RuntimeQueue] = {}
        for rq in layout.runtimes:
            name = rq.runtime.name
            dlq = sdeks_queue(self, f"{name}Dlq", rq.dlq_name, retention_period=Duration.seconds(rq.dlq_retention_s))
            queue = sdeks_queue(
                self,
                f"{name}Queue",
                rq.queue_name,
                visibility_timeout=Duration.seconds(rq.visibility_timeout_s),
                receive_message_wait_time=Duration.seconds(20),
                dead_letter_queue=sqs.DeadLetterQueue(queue=dlq, max_receive_count=rq.max_receive_count),
            )
            # Adds the queue policy statement: sns:SendMessage from this topic only (aws:SourceArn).
            subscription = self.tasks_topic.add_subscription(subs.SqsSubscription(queue, raw_message_delivery=True))
            # The policy as the layout states it, on the L1 resource: SubscriptionFilter cannot express
            # the "$or" of runtime name and models for message attributes.
            cast(sns.CfnSubscription, subscription.node.default_child).filter_policy = rq.filter_policy
            self.runtime_queues[name] = RuntimeQueue(self, name, queue=queue, dlq=dlq)
