"""The resource layout derived from a config: one description for CDK and local mode.

Names, subscriptions and filter policies are computed here once; the CDK
constructs and the local provisioner both iterate over this, so local mode
tests the same topology that ``cdk deploy`` creates.
"""

from __future__ import annotations

from dataclasses import dataclass

from sdeks.config.schema import Config, Runtime
from sdeks.webhook_retries import max_receives


@dataclass(frozen=True)
class RuntimeQueues:
    runtime: Runtime
    queue_name: str
    dlq_name: str
    filter_policy: dict[str, list[str]]
    visibility_timeout_s: int
    max_receive_count: int
    dlq_retention_s: int = 14 * 24 * 3600


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
    webhooks: WebhookQueues

    def queues_for(self, runtime_name: str) -> RuntimeQueues:
        for queues in self.runtimes:
            if queues.runtime.name == runtime_name:
                return queues
        raise KeyError(runtime_name)


TASK_TABLE_KEY = "id"
"""Partition key of the task table (string)."""

TASK_TABLE_TTL_ATTRIBUTE = "expires_at"

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
                filter_policy={"runtime": [runtime.name]},
                visibility_timeout_s=runtime.visibility_timeout_s,
                max_receive_count=runtime.max_receive_count,
            )
            for runtime in config.runtimes
        ),
        webhooks=WebhookQueues(
            queue_name=f"{project}_webhooks",  # "_": no runtime queue (<project>-<DNS label>) can take the name
            dlq_name=f"{project}_webhooks-dlq",
            secret_name=f"{project}/webhook-signing-secret",
            visibility_timeout_s=WEBHOOK_VISIBILITY_TIMEOUT_S,
            max_receive_count=max_receives(),
        ),
    )
