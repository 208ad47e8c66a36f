"""The resource layout derived from a config: one description for CDK, the helm values and local mode.

Names, subscriptions and filter policies are computed here once; the CDK
constructs, the chart values and the local provisioner all read this, so local
mode tests the same topology that ``cdk deploy`` creates and no module spells
``f"{project}-..."`` on its own.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sdeks.config.schema import Config, Runtime
from sdeks.contract.routing import filter_policy
from sdeks.contract.table import TASK_TABLE_KEY, TASK_TABLE_TTL_ATTRIBUTE  # noqa: F401  (re-exported)
from sdeks.webhook_retries import max_receives


@dataclass(frozen=True)
class RuntimeQueues:
    runtime: Runtime
    queue_name: str
    dlq_name: str
    filter_policy: dict[str, Any]
    """Tasks-topic subscription filter: the runtime's name, or its checkpoints when a task names no runtime
    (:func:`sdeks.contract.routing.filter_policy`)."""
    visibility_timeout_s: int
    max_receive_count: int
    dlq_retention_s: int = 14 * 24 * 3600


@dataclass(frozen=True)
class RuntimeRelease:
    """The runtime's helm release in the cluster and the identity its pods run as."""

    runtime: Runtime
    release_name: str
    """Release of ``helm/sd-on-eks``; also the name of its objects (Deployment, NodePool, ...)."""
    service_account: str
    """The ServiceAccount the chart creates and the EKS Pod Identity association targets."""


@dataclass(frozen=True)
class WebhookQueues:
    """The webhook deliverer's queue (every results-topic event, raw delivery), its DLQ and signing secret."""

    queue_name: str
    dlq_name: str
    secret_name: str
    visibility_timeout_s: int
    max_receive_count: int
    dlq_retention_s: int = 14 * 24 * 3600


@dataclass(frozen=True)
class ResourceLayout:
    project: str
    tasks_topic_name: str
    results_topic_name: str
    task_table_name: str
    runtimes: tuple[RuntimeQueues, ...]
    cluster_name: str
    namespace: str
    """Kubernetes namespace of the runtime releases."""
    system_nodegroup_name: str
    interruption_queue_name: str
    """Karpenter's spot interruption / rebalance queue."""
    releases: tuple[RuntimeRelease, ...]
    local_output_bucket: str
    """The output bucket in local mode: the configured one, else a name from the project.

    The cloud stack lets CloudFormation name a bucket it creates (names are global).
    """
    webhooks: WebhookQueues

    def queues_for(self, runtime_name: str) -> RuntimeQueues:
        for queues in self.runtimes:
            if queues.runtime.name == runtime_name:
                return queues
        raise KeyError(runtime_name)

    def release_for(self, runtime_name: str) -> RuntimeRelease:
        for release in self.releases:
            if release.runtime.name == runtime_name:
                return release
        raise KeyError(runtime_name)


WEBHOOK_VISIBILITY_TIMEOUT_S = 360
"""Six times the deliverer Lambda's timeout (AWS's advice for SQS event sources)."""


def resource_layout(config: Config) -> ResourceLayout:
    project = config.project
    return ResourceLayout(
        project=project,
        tasks_topic_name=f"{project}-tasks",
        results_topic_name=f"{project}-results",
        task_table_name=f"{project}-tasks",
        runtimes=tuple(
            RuntimeQueues(
                runtime=runtime,
                queue_name=f"{project}-{runtime.name}",
                dlq_name=f"{project}-{runtime.name}-dlq",
                filter_policy=filter_policy(runtime.name, runtime.checkpoints),
                visibility_timeout_s=runtime.visibility_timeout_s,
                max_receive_count=runtime.max_receive_count,
            )
            for runtime in config.runtimes
        ),
        cluster_name=project,
        namespace=project,
        system_nodegroup_name=f"{project}-system",
        interruption_queue_name=f"{project}-karpenter",
        releases=tuple(
            RuntimeRelease(
                runtime=runtime,
                release_name=f"{project}-{runtime.name}",
                service_account=f"{project}-{runtime.name}",
            )
            for runtime in config.runtimes
        ),
        local_output_bucket=config.output.bucket or f"{project}-output",
        webhooks=WebhookQueues(
            queue_name=f"{project}_webhooks",  # "_": no runtime queue (<project>-<DNS label>) can take the name
            dlq_name=f"{project}_webhooks-dlq",
            secret_name=f"{project}/webhook-signing-secret",
            visibility_timeout_s=WEBHOOK_VISIBILITY_TIMEOUT_S,
            max_receive_count=max_receives(),
        ),
    )
