"""Operating a deployment: one CloudWatch dashboard, alarms to an alarm topic, pod logs, GPU metrics.

- **Alarm topic**: SNS, encrypted with a customer-managed KMS key (CloudWatch alarms
  cannot publish to a topic under the AWS-managed SNS key), TLS only; an optional
  e-mail subscription from ``observability.alarm_email``.
- **Alarms** (each notifies on ALARM and on OK): a runtime's DLQ is not empty; a
  runtime's oldest queued message is older than ``observability.oldest_message_alarm_s``;
  the API answered 5xx; the API Lambda failed.
- **Logs and GPU metrics** (with the cluster): the ``amazon-cloudwatch-observability``
  EKS add-on — Fluent Bit ships pod logs to ``/aws/containerinsights/<cluster>/application``,
  Container Insights collects node/pod metrics, its DCGM exporter GPU metrics on GPU
  nodes (``accelerated_compute_metrics``), and the CloudWatch agent's EMF listener
  receives the queue agents' task metrics (:mod:`queue_agent.emf`). The log groups are
  created here first, so they carry the configured retention instead of "never expire".
  The add-on's service account gets a Pod Identity role limited to those log groups.
- **Dashboard** ``<project>-operations``: API, queues, task outcomes and latencies (the
  EMF names of :mod:`queue_agent.emf`), GPUs. Layout: docs/operations.md.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from aws_cdk import Aws, CfnOutput, Duration, RemovalPolicy
from aws_cdk import aws_cloudwatch as cw
from aws_cdk import aws_cloudwatch_actions as cw_actions
from aws_cdk import aws_eks_v2 as eks
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_logs as logs
from aws_cdk import aws_sns as sns
from aws_cdk import aws_sns_subscriptions as subs
from constructs import Construct

from infra.cluster import pod_identity_role
from queue_agent import emf
from sdeks.config import Config, ResourceLayout

if TYPE_CHECKING:
    from infra.api import Api
    from infra.cluster import Cluster
    from infra.messaging import Messaging

ADDON_NAME = "amazon-cloudwatch-observability"
ADDON_NAMESPACE = "amazon-cloudwatch"
ADDON_SERVICE_ACCOUNT = "cloudwatch-agent"
"""The add-on's CloudWatch agent and Fluent Bit both run as this service account."""
CONTAINER_INSIGHTS_GROUPS = ("application", "dataplane", "host", "performance")
"""Log groups the add-on writes to, ``/aws/containerinsights/<cluster>/<kind>``."""

RETENTION = {
    1: logs.RetentionDays.ONE_DAY,
    3: logs.RetentionDays.THREE_DAYS,
    5: logs.RetentionDays.FIVE_DAYS,
    7: logs.RetentionDays.ONE_WEEK,
    14: logs.RetentionDays.TWO_WEEKS,
    30: logs.RetentionDays.ONE_MONTH,
    60: logs.RetentionDays.TWO_MONTHS,
    90: logs.RetentionDays.THREE_MONTHS,
    120: logs.RetentionDays.FOUR_MONTHS,
    150: logs.RetentionDays.FIVE_MONTHS,
    180: logs.RetentionDays.SIX_MONTHS,
    365: logs.RetentionDays.ONE_YEAR,
    400: logs.RetentionDays.THIRTEEN_MONTHS,
    545: logs.RetentionDays.EIGHTEEN_MONTHS,
    731: logs.RetentionDays.TWO_YEARS,
    1096: logs.RetentionDays.THREE_YEARS,
    1827: logs.RetentionDays.FIVE_YEARS,
    3653: logs.RetentionDays.TEN_YEARS,
}
"""``observability.log_retention_days`` (the config accepts exactly these) → CDK's enum."""

USAGE_VCPU = {"Service": "EC2", "Type": "Resource", "Resource": "vCPU"}
"""AWS/Usage ResourceCount of running EC2 vCPUs; ``Class`` is ``<family letter>/Spot`` or ``/OnDemand``."""
WIDTH = 24
ALARM_PERIOD = Duration.minutes(5)
PERCENTILES = ("p50", "p95")


def addon_configuration() -> dict:
    """Add-on values: Container Insights with GPU metrics, the EMF listener, container logs.

    ``agent.config`` replaces the add-on's default agent configuration; Application
    Signals (in that default) is left out: nothing here is instrumented for it.
    """
    return {
        "agent": {
            "config": {
                "logs": {
                    "metrics_collected": {
                        "kubernetes": {"enhanced_container_insights": True, "accelerated_compute_metrics": True},
                        "emf": {},
                    }
                }
            }
        },
        "containerLogs": {"enabled": True},
    }


class Observability(Construct):
    def __init__(
        self,
        scope: Construct,
        cid: str,
        *,
        config: Config,
        layout: ResourceLayout,
        api: Api,
        messaging: Messaging,
        cluster: Cluster | None = None,
    ) -> None:
        super().__init__(scope, cid)
        self.config = config
        self.project = config.project
        settings = config.observability

        # --- alarm topic ----------------------------------------------------------------------
        self.alarm_key = kms.Key(
            self,
            "AlarmKey",
            description=f"{self.project}: encrypts the alarm topic",
            enable_key_rotation=True,
            removal_policy=RemovalPolicy.DESTROY,
        )
        # CloudWatch publishes alarm notifications to the encrypted topic.
        self.alarm_key.add_to_resource_policy(
            iam.PolicyStatement(
                sid="CloudWatchAlarmsPublish",
                principals=[iam.ServicePrincipal("cloudwatch.amazonaws.com")],
                actions=["kms:Decrypt", "kms:GenerateDataKey*"],
                resources=["*"],
            )
        )
        self.alarm_topic = sns.Topic(
            self, "AlarmTopic", topic_name=f"{self.project}-alarms", master_key=self.alarm_key, enforce_ssl=True
        )
        if settings.alarm_email:
            self.alarm_topic.add_subscription(subs.EmailSubscription(settings.alarm_email))

        # --- alarms ---------------------------------------------------------------------------
        self.alarms: dict[str, cw.Alarm] = {}
        for rq in layout.runtimes:
            name = rq.runtime.name
            queues = messaging.runtime_queues[name]
            self._alarm(
                f"{name}-dlq-not-empty",
                queues.dlq.metric_approximate_number_of_messages_visible(period=ALARM_PERIOD, statistic="Maximum"),
                threshold=1,
                description=f"Tasks of runtime {name} are in its dead-letter queue: they failed transiently"
                f" {rq.max_receive_count} times. `sdeks dlq list --runtime {name}` shows why (docs/operations.md).",
            )
            self._alarm(
                f"{name}-oldest-message",
                queues.queue.metric_approximate_age_of_oldest_message(period=ALARM_PERIOD, statistic="Maximum"),
                threshold=settings.oldest_message_alarm_s,
                comparison=cw.ComparisonOperator.GREATER_THAN_THRESHOLD,
                description=f"A task of runtime {name} has waited more than {settings.oldest_message_alarm_s}s in"
                " its queue: no capacity (GPU quota, spot shortage, max_replicas) or the agents are stuck.",
            )
        self._alarm(
            "api-5xx",
            api.rest_api.metric_server_error(period=ALARM_PERIOD, statistic="Sum"),
            threshold=1,
            description="The API answered 5xx: the API Lambda failed or timed out, or API Gateway could not call it.",
        )
        self._alarm(
            "api-lambda-errors",
            api.function.metric_errors(period=ALARM_PERIOD, statistic="Sum"),
            threshold=1,
            description="The API Lambda raised or timed out (its log group has the stack trace).",
        )

        # --- logs, Container Insights, GPU metrics, EMF listener (the cluster's add-on) -------
        self.log_groups: dict[str, logs.LogGroup] = {}
        self.addon: eks.Addon | None = None
        if cluster is not None:
            self._cluster_telemetry(cluster, RETENTION[settings.log_retention_days], settings.addon_version)

        # --- dashboard ------------------------------------------------------------------------
        self.dashboard = cw.Dashboard(
            self,
            "Dashboard",
            dashboard_name=f"{self.project}-operations",
            default_interval=Duration.hours(3),
            widgets=self._widgets(layout, api, messaging, cluster),
        )
        CfnOutput(
            self,
            "DashboardUrl",
            value=f"https://{Aws.REGION}.console.aws.amazon.com/cloudwatch/home?region={Aws.REGION}"
            f"#dashboards/dashboard/{self.project}-operations",
            description="the deployment's CloudWatch dashboard (docs/operations.md)",
        )
        CfnOutput(self, "AlarmTopicArn", value=self.alarm_topic.topic_arn, description="alarm notifications")

    def _alarm(
        self,
        name: str,
        metric: cw.IMetric,
        *,
        threshold: float,
        description: str,
        comparison: cw.ComparisonOperator = cw.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
    ) -> None:
        alarm = cw.Alarm(
            self,
            f"Alarm-{name}",
            alarm_name=f"{self.project}-{name}",
            alarm_description=description,
            metric=metric,
            threshold=threshold,
            comparison_operator=comparison,
            evaluation_periods=1,
            treat_missing_data=cw.TreatMissingData.NOT_BREACHING,
        )
        action = cw_actions.SnsAction(self.alarm_topic)
        alarm.add_alarm_action(action)
        alarm.add_ok_action(action)
        self.alarms[name] = alarm

    def _cluster_telemetry(self, cluster: Cluster, retention: logs.RetentionDays, addon_version: str | None) -> None:
        groups = {kind: f"/aws/containerinsights/{cluster.cluster_name}/{kind}" for kind in CONTAINER_INSIGHTS_GROUPS}
        groups["task-metrics"] = emf.metrics_log_group(self.project)
        for kind, group_name in groups.items():
            self.log_groups[kind] = logs.LogGroup(
                self,
                f"Logs-{kind}",
                log_group_name=group_name,
                retention=retention,
                removal_policy=RemovalPolicy.DESTROY,
            )
        self.agent_role = pod_identity_role(
            self, "CloudWatchAgentRole", f"{cluster.cluster_name}: CloudWatch agent and Fluent Bit (observability)"
        )
        self.agent_role.add_to_policy(
            iam.PolicyStatement(
                sid="WriteOwnLogGroups",
                actions=["logs:CreateLogGroup", "logs:CreateLogStream", "logs:PutLogEvents", "logs:DescribeLogStreams"],
                resources=[group.log_group_arn for group in self.log_groups.values()],
            )
        )
        self.agent_role.add_to_policy(
            iam.PolicyStatement(
                sid="NodeMetadata",
                actions=["ec2:DescribeInstances", "ec2:DescribeTags", "ec2:DescribeVolumes"],
                resources=["*"],
            )
        )
        association = eks.CfnPodIdentityAssociation(
            self,
            "CloudWatchAgentIdentity",
            cluster_name=cluster.cluster.cluster_name,
            namespace=ADDON_NAMESPACE,
            service_account=ADDON_SERVICE_ACCOUNT,
            role_arn=self.agent_role.role_arn,
        )
        association.node.add_dependency(cluster.pod_identity_agent)
        self.addon = eks.Addon(
            self,
            "CloudWatchObservability",
            cluster=cluster.cluster,
            addon_name=ADDON_NAME,
            addon_version=addon_version,
            configuration_values=addon_configuration(),
            preserve_on_delete=False,
        )
        # Credentials and retention first: Fluent Bit would otherwise create the groups without retention.
        self.addon.node.add_dependency(association, cluster.system_nodes, *self.log_groups.values())

    # --- dashboard --------------------------------------------------------------------------

    def _task_metric(self, name: str, runtime: str, statistic: str, label: str) -> cw.Metric:
        return cw.Metric(
            namespace=emf.NAMESPACE,
            metric_name=name,
            dimensions_map={emf.DIMENSION_PROJECT: self.project, emf.DIMENSION_RUNTIME: runtime},
            statistic=statistic,
            period=Duration.minutes(1),
            label=label,
        )

    def _widgets(
        self, layout: ResourceLayout, api: Api, messaging: Messaging, cluster: Cluster | None
    ) -> list[list[cw.IWidget]]:
        names = [rq.runtime.name for rq in layout.runtimes]
        minute = Duration.minutes(1)
        queues = messaging.runtime_queues
        third, quarter = WIDTH // 3, WIDTH // 4
        rows: list[list[cw.IWidget]] = [
            [cw.TextWidget(markdown=f"# {self.project}: API", width=WIDTH, height=1)],
            [
                cw.GraphWidget(
                    title="API requests",
                    left=[api.rest_api.metric_count(period=minute, statistic="Sum", label="requests")],
                    width=third,
                ),
                cw.GraphWidget(
                    title="API 4xx / 5xx",
                    left=[
                        api.rest_api.metric_client_error(period=minute, statistic="Sum", label="4xx"),
                        api.rest_api.metric_server_error(period=minute, statistic="Sum", label="5xx"),
                    ],
                    width=third,
                ),
                cw.AlarmStatusWidget(title="alarms", alarms=list(self.alarms.values()), width=third),
            ],
            [cw.TextWidget(markdown="# Queues", width=WIDTH, height=1)],
            [
                cw.GraphWidget(
                    title="queue depth (waiting, in flight)",
                    left=[
                        m
                        for n in names
                        for m in (
                            queues[n].queue.metric_approximate_number_of_messages_visible(
                                period=minute, statistic="Maximum", label=f"{n} waiting"
                            ),
                            queues[n].queue.metric_approximate_number_of_messages_not_visible(
                                period=minute, statistic="Maximum", label=f"{n} in flight"
                            ),
                        )
                    ],
                    width=third,
                ),
                cw.GraphWidget(
                    title="age of oldest message (s)",
                    left=[
                        queues[n].queue.metric_approximate_age_of_oldest_message(
                            period=minute, statistic="Maximum", label=n
                        )
                        for n in names
                    ],
                    left_annotations=[
                        cw.HorizontalAnnotation(
                            value=self.config.observability.oldest_message_alarm_s, label="alarm", color=cw.Color.RED
                        )
                    ],
                    width=third,
                ),
                cw.GraphWidget(
                    title="DLQ depth",
                    left=[
                        queues[n].dlq.metric_approximate_number_of_messages_visible(
                            period=minute, statistic="Maximum", label=n
                        )
                        for n in names
                    ],
                    width=third,
                ),
            ],
            [cw.TextWidget(markdown="# Tasks (queue agents, EMF)", width=WIDTH, height=1)],
            [
                cw.GraphWidget(
                    title="task outcomes per minute",
                    left=[
                        self._task_metric(metric, n, "Sum", f"{n} {outcome}")
                        for n in names
                        for outcome, metric in emf.OUTCOME_METRICS.items()
                    ],
                    stacked=True,
                    width=quarter,
                ),
                *(
                    cw.GraphWidget(
                        title=f"{title} p50 / p95 (s)",
                        left=[self._task_metric(metric, n, p, f"{n} {p}") for n in names for p in PERCENTILES],
                        width=quarter,
                    )
                    for title, metric in (
                        ("queue wait", emf.QUEUE_WAIT),
                        ("run time", emf.RUN_TIME),
                        ("end to end", emf.END_TO_END),
                    )
                ),
            ],
        ]
        if cluster is not None:
            rows += [[cw.TextWidget(markdown="# GPUs", width=WIDTH, height=1)], self._gpu_widgets(cluster)]
        return rows

    def _gpu_widgets(self, cluster: Cluster) -> list[cw.IWidget]:
        minute = Duration.minutes(1)
        classes = sorted({family[0].upper() for r in self.config.runtimes for family in r.gpu.instance_families})

        def insight(metric: str, statistic: str, label: str) -> cw.Metric:
            return cw.Metric(
                namespace="ContainerInsights",
                metric_name=metric,
                dimensions_map={"ClusterName": cluster.cluster_name},
                statistic=statistic,
                period=minute,
                label=label,
            )

        def usage(capacity: str, letter: str) -> cw.Metric:
            return cw.Metric(
                namespace="AWS/Usage",
                metric_name="ResourceCount",
                dimensions_map={**USAGE_VCPU, "Class": f"{letter}/{capacity}"},
                statistic="Maximum",
                period=minute,
                label=f"{letter} {capacity}",
            )

        return [
            cw.GraphWidget(
                title="GPU utilisation % (DCGM, all GPU nodes)",
                left=[
                    insight("node_gpu_utilization", "Average", "GPU average"),
                    insight("node_gpu_utilization", "Maximum", "GPU max"),
                    insight("node_gpu_memory_utilization", "Average", "GPU memory average"),
                ],
                left_y_axis=cw.YAxisProps(min=0, max=100),
                width=WIDTH // 2,
            ),
            cw.GraphWidget(
                title="GPU instance vCPUs by capacity type (account-wide, AWS/Usage)",
                left=[usage(capacity, letter) for letter in classes for capacity in ("Spot", "OnDemand")],
                stacked=True,
                width=WIDTH // 2,
            ),
        ]
