"""The resource layout derived from a config: one description for CDK and local mode.

Names, subscriptions and filter policies are computed here once; the CDK
constructs and the local provisioner both iterate over this, so local mode
tests the same topology that ``cdk deploy`` creates.
"""

from __future__ import annotations

from dataclasses import dataclass

from sdeks.config.schema import Config, Runtime
from sdeks.contract.table import TASK_TABLE_KEY, TASK_TABLE_TTL_ATTRIBUTE  # noqa: F401  (re-exported)


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
class ResourceLayout:
    project: str
    tasks_topic_name: str
    results_topic_name: str
    task_table_name: str
    runtimes: tuple[RuntimeQueues, ...]

    def queues_for(self, runtime_name: str) -> RuntimeQueues:
        for queues in self.runtimes:
            if queues.runtime.name == runtime_name:
                return queues
        raise KeyError(runtime_name)


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
    )
