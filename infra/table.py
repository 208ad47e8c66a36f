"""Task status table: one row per task id (idempotency + status), expiring with the outputs."""

from __future__ import annotations

from aws_cdk import RemovalPolicy
from aws_cdk import aws_dynamodb as dynamodb
from constructs import Construct

from sdeks.config import TASK_TABLE_KEY, TASK_TABLE_TTL_ATTRIBUTE, ResourceLayout


class TaskTable(Construct):
    def __init__(self, scope: Construct, cid: str, *, layout: ResourceLayout) -> None:
        super().__init__(scope, cid)
        self.table = dynamodb.Table(
            self,
            "Table",
            table_name=layout.task_table_name,
            partition_key=dynamodb.Attribute(name=TASK_TABLE_KEY, type=dynamodb.AttributeType.STRING),
            billing_mode=dynamodb.BillingMode.PAY_PER_REQUEST,
            point_in_time_recovery_specification=dynamodb.PointInTimeRecoverySpecification(
                point_in_time_recovery_enabled=True
            ),
            time_to_live_attribute=TASK_TABLE_TTL_ATTRIBUTE,
            encryption=dynamodb.TableEncryption.AWS_MANAGED,
            removal_policy=RemovalPolicy.RETAIN,
        )
