"""The webhook deliverer: a Lambda fed by its own queue (+ DLQ) on the results topic, and its signing secret.

Off the GPU path: the queue takes every completion event (raw delivery); the
Lambda reads the task's webhook from the status row, signs and POSTs. A failed
try is postponed on the queue by the retry schedule (sdeks/webhook_retries.py)
and reported as a partial batch failure; after the layout's maxReceiveCount
(≥ 24 h of tries) the event rests in the DLQ for 14 days.

The Lambda runs outside any VPC on purpose: receivers are public HTTPS
endpoints, and the deliverer refuses private, loopback and metadata addresses
itself, so it needs no route into the VPC at all.
"""

from __future__ import annotations

from aws_cdk import CfnOutput, Duration, RemovalPolicy
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_lambda_event_sources as sources
from aws_cdk import aws_logs as logs
from aws_cdk import aws_secretsmanager as secretsmanager
from aws_cdk import aws_sns as sns
from aws_cdk import aws_sns_subscriptions as subs
from aws_cdk import aws_sqs as sqs
from constructs import Construct

from infra.bundle import WEBHOOKS_HANDLER, build_webhooks_bundle
from infra.messaging import sdeks_queue
from sdeks.config import ResourceLayout
from sdeks.webhook_secret import GENERATED_LENGTH

BATCH_SIZE = 5
"""Events per invocation: at most BATCH_SIZE receiver timeouts (10 s each) fit in the function's timeout."""
MAX_CONCURRENCY = 10
"""Concurrent invocations the queue may drive: bounds the load a burst of completions puts on receivers."""


class Webhooks(Construct):
    def __init__(
        self,
        scope: Construct,
        cid: str,
        *,
        layout: ResourceLayout,
        results_topic: sns.ITopic,
        table: dynamodb.ITable,
    ) -> None:
        super().__init__(scope, cid)
        hooks = layout.webhooks

        self.secret = secretsmanager.Secret(
            self,
            "SigningSecret",
            secret_name=hooks.secret_name,
            description=f"{layout.project}: Standard Webhooks signing secret (whsec_ + this value)",
            generate_secret_string=secretsmanager.SecretStringGenerator(
                password_length=GENERATED_LENGTH, exclude_punctuation=True, include_space=False
            ),
            removal_policy=RemovalPolicy.DESTROY,
        )
        self.dlq = sdeks_queue(self, "Dlq", hooks.dlq_name, retention_period=Duration.seconds(hooks.dlq_retention_s))
        self.queue = sdeks_queue(
            self,
            "Queue",
            hooks.queue_name,
            visibility_timeout=Duration.seconds(hooks.visibility_timeout_s),
            dead_letter_queue=sqs.DeadLetterQueue(queue=self.dlq, max_receive_count=hooks.max_receive_count),
        )
        # Adds the queue policy statement: sns:SendMessage from the results topic only (aws:SourceArn).
        results_topic.add_subscription(subs.SqsSubscription(self.queue, raw_message_delivery=True))

        self.log_group = logs.LogGroup(
            self, "FunctionLogs", retention=logs.RetentionDays.ONE_MONTH, removal_policy=RemovalPolicy.DESTROY
        )
        self.role = iam.Role(
            self,
            "FunctionRole",
            assumed_by=iam.ServicePrincipal("lambda.amazonaws.com"),
            description=f"{layout.project} webhook deliverer: its queue, task rows (read), signing secret (read)",
        )
        self.role.add_to_policy(
            iam.PolicyStatement(
                sid="Logs",
                actions=["logs:CreateLogStream", "logs:PutLogEvents"],
                resources=[self.log_group.log_group_arn],
            )
        )
        self.role.add_to_policy(
            iam.PolicyStatement(sid="ReadTaskRows", actions=["dynamodb:GetItem"], resources=[table.table_arn])
        )
        self.role.add_to_policy(
            iam.PolicyStatement(
                sid="ReadSigningSecret", actions=["secretsmanager:GetSecretValue"], resources=[self.secret.secret_arn]
            )
        )
        self.function = lambda_.Function(
            self,
            "Function",
            description=f"{layout.project}: signed webhook deliveries of completion events",
            runtime=lambda_.Runtime.PYTHON_3_12,
            architecture=lambda_.Architecture.X86_64,
            handler=WEBHOOKS_HANDLER,
            code=lambda_.Code.from_asset(str(build_webhooks_bundle())),
            memory_size=256,
            timeout=Duration.seconds(hooks.visibility_timeout_s // 6),  # AWS: queue visibility ≥ 6 × timeout
            role=self.role,
            log_group=self.log_group,
            logging_format=lambda_.LoggingFormat.JSON,
            environment={
                "SDEKS_WEBHOOK_QUEUE_URL": self.queue.queue_url,
                "SDEKS_WEBHOOK_SECRET_ID": self.secret.secret_arn,
                "SDEKS_TASK_TABLE": table.table_name,
            },
        )
        # Grants the role what the mapping and the deliverer need on this queue only: receive, delete,
        # change visibility (postponing a failed try), attributes.
        self.function.add_event_source(
            sources.SqsEventSource(
                self.queue,
                batch_size=BATCH_SIZE,
                report_batch_item_failures=True,
                max_concurrency=MAX_CONCURRENCY,
            )
        )

        CfnOutput(
            self,
            "SecretCommand",
            value=f"aws secretsmanager get-secret-value --secret-id {hooks.secret_name} --query SecretString"
            " --output text",
            description="the webhook signing secret is whsec_ + this value (or: sdeks webhook-secret --config FILE)",
        )
