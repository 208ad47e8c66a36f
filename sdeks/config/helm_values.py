"""Values of the ``helm/sd-on-eks`` chart for one runtime: the single mapping from config to chart.

The CDK stack calls :func:`helm_values` once per runtime (with CloudFormation tokens for the
resource names it creates); a user installing the chart alone can print the same values with
``yaml.safe_dump(helm_values(...))``. The chart's ``values.schema.json`` validates the result.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sdeks.config.layout import resource_layout
from sdeks.config.schema import Config, Runtime

CHART_DIR = Path(__file__).resolve().parents[2] / "helm" / "sd-on-eks"
"""The chart these values are for."""

AGENT_METRICS_PORT = 9095
RUNTIME_PORT = 8080

CONFIG_SOURCES: dict[str, str] = {
    "runtime.name": "runtimes[].name",
    "runtime.type": "runtimes[].type",
    "runtime.checkpoint": "runtimes[].model.checkpoint",
    "agent.allowedInputBuckets": "inputs.allowed_buckets",
    "agent.allowedInputHosts": "inputs.allowed_hosts",
    "agent.inputMaxBytes": "inputs.max_bytes",
    "agent.inputTimeoutSeconds": "inputs.timeout_s",
    "agent.prefetch": "runtimes[].prefetch",
    "agent.taskTimeoutSeconds": "runtimes[].task_timeout_s",
    "agent.shutdownGraceSeconds": "runtimes[].shutdown_grace_s",
    "agent.statusTtlDays": "output.expire_days",
    "agent.presignImages": "output.presign_images",
    "agent.presignExpiresSeconds": "output.presign_expires_s",
    "runtime.gpus": "runtimes[].gpu.per_pod",
    "models.s3.prefix": "runtimes[].model.prefix",
    "scaling.minReplicas": "runtimes[].scaling.min_replicas",
    "scaling.maxReplicas": "runtimes[].scaling.max_replicas",
    "scaling.queueLength": "runtimes[].scaling.queue_length",
    "scaling.activationQueueLength": "runtimes[].scaling.activation_queue_length",
    "scaling.cooldownSeconds": "runtimes[].scaling.cooldown_s",
    "nodePool.instanceFamilies": "runtimes[].gpu.instance_families",
    "nodePool.capacityTypes": "runtimes[].gpu.capacity_types",
    "nodePool.maxGpus": "runtimes[].gpu.max_gpus",
    "nodePool.amiAlias": "cluster.bottlerocket_alias",
    "nodePool.tags": "tags",
}
"""Chart value ← the config field it is copied from (``runtimes[]`` = the runtime being rendered).

The chart's values.schema.json bounds these values exactly as sdeks/config/schema.py bounds the
fields (tested both ways in tests/helm/test_values_schema.py), so a config that validates renders,
and a value the chart rejects is rejected at synth, not in the cluster during ``cdk deploy``.
A config ``None`` is the chart's ``""`` (helm drops null values).
"""

RESOURCE_VALUES: dict[str, str] = {
    "runtime.image": "runtime_image",
    "agent.image": "agent_image",
    "agent.queueUrl": "queue_url",
    "agent.outputBucket": "output_bucket",
    "agent.resultsTopicArn": "results_topic_arn",
    "agent.taskTable": "task_table",
    "aws.region": "region",
    "models.s3.bucket": "model_bucket",
    "models.s3.region": "region",
    "nodePool.clusterName": "cluster_name",
    "nodePool.nodeRole": "node_role",
}
"""Chart value ← the :func:`helm_values` argument naming a resource created outside the chart.

Images are among them: the config's ``agent_image`` / ``runtimes[].image`` when set, else the
URI of the image the CDK stack builds (infra/images.py)."""


def helm_values(
    config: Config,
    runtime: Runtime,
    *,
    queue_url: str,
    output_bucket: str,
    results_topic_arn: str,
    task_table: str,
    region: str,
    model_bucket: str,
    cluster_name: str,
    node_role: str,
    agent_image: str,
    runtime_image: str,
) -> dict[str, Any]:
    """Chart values for ``runtime`` of ``config``.

    The keyword arguments are the names of resources created outside the chart (by the CDK
    stack or by hand); they may be CDK tokens, which is why they are passed through untouched.
    Release and ServiceAccount names come from :func:`sdeks.config.resource_layout` (the EKS Pod
    Identity association targets that ServiceAccount; the chart creates it).
    """
    if runtime not in config.runtimes:
        raise ValueError(f"runtime {runtime.name!r} is not one of the config's runtimes")
    release = resource_layout(config).release_for(runtime.name)
    inputs = config.inputs
    gpu = runtime.gpu
    scaling = runtime.scaling
    return {
        "fullnameOverride": release.release_name,
        "runtime": {
            "name": runtime.name,
            "type": runtime.type,
            "image": runtime_image,
            "checkpoint": runtime.model.checkpoint or "",
            "port": RUNTIME_PORT,
            "gpus": gpu.per_pod,
        },
        "agent": {
            "image": agent_image,
            "queueUrl": queue_url,
            "outputBucket": output_bucket,
            "resultsTopicArn": results_topic_arn,
            "taskTable": task_table,
            "allowedInputBuckets": list(inputs.allowed_buckets),
            "allowedInputHosts": list(inputs.allowed_hosts),
            "inputMaxBytes": inputs.max_bytes,
            # The schema takes a number; keep integers integral so the env var reads "10", not "10.0".
            "inputTimeoutSeconds": int(inputs.timeout_s) if float(inputs.timeout_s).is_integer() else inputs.timeout_s,
            "prefetch": runtime.prefetch,
            "taskTimeoutSeconds": runtime.task_timeout_s,
            "shutdownGraceSeconds": runtime.shutdown_grace_s,
            "statusTtlDays": config.output.expire_days,
            "presignImages": config.output.presign_images,
            "presignExpiresSeconds": config.output.presign_expires_s,
            "metricsPort": AGENT_METRICS_PORT,
        },
        "aws": {"region": region},
        "serviceAccount": {"create": True, "name": release.service_account},
        "models": {
            "source": "s3",
            "s3": {"bucket": model_bucket, "prefix": runtime.model.prefix, "region": region},
        },
        "scaling": {
            "enabled": True,
            "minReplicas": scaling.min_replicas,
            "maxReplicas": scaling.max_replicas,
            "queueLength": scaling.queue_length,
            "activationQueueLength": scaling.activation_queue_length,
            "cooldownSeconds": scaling.cooldown_s,
        },
        "nodePool": {
            "enabled": True,
            "clusterName": cluster_name,
            "nodeRole": node_role,
            "instanceFamilies": list(gpu.instance_families),
            "capacityTypes": list(gpu.capacity_types),
            "maxGpus": gpu.max_gpus,
            "amiAlias": config.cluster.bottlerocket_alias,
            "tags": {"sdeks.io/project": config.project, **config.tags},
        },
    }
