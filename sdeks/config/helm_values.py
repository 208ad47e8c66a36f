"""Values of the ``helm/sd-on-eks`` chart for one runtime: the single mapping from config to chart.

The CDK stack calls :func:`helm_values` once per runtime (with CloudFormation tokens for the
resource names it creates); a user installing the chart alone can print the same values with
``yaml.safe_dump(helm_values(...))``. The chart's ``values.schema.json`` validates the result.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sdeks.config.schema import Config, Runtime

CHART_DIR = Path(__file__).resolve().parents[2] / "helm" / "sd-on-eks"
"""The chart these values are for."""

AGENT_METRICS_PORT = 9095
RUNTIME_PORT = 8080


def release_name(config: Config, runtime: Runtime) -> str:
    """Name of the runtime's helm release and of its objects (Deployment, NodePool, ...): ``<project>-<runtime>``.

    A natural choice for the ServiceAccount (``service_account``) and its Pod Identity association too.
    """
    return f"{config.project}-{runtime.name}"


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
    service_account: str,
) -> dict[str, Any]:
    """Chart values for ``runtime`` of ``config``.

    The keyword arguments are the names of resources created outside the chart (by the CDK
    stack or by hand); they may be CDK tokens, which is why they are passed through untouched.
    ``service_account`` is the name the EKS Pod Identity association targets; the chart creates
    the ServiceAccount with that name.
    """
    if runtime not in config.runtimes:
        raise ValueError(f"runtime {runtime.name!r} is not one of the config's runtimes")
    inputs = config.inputs
    gpu = runtime.gpu
    scaling = runtime.scaling
    return {
        "fullnameOverride": release_name(config, runtime),
        "runtime": {
            "name": runtime.name,
            "type": runtime.type,
            "image": runtime.image,
            "checkpoint": runtime.model.checkpoint or "",
            "port": RUNTIME_PORT,
        },
        "agent": {
            "image": config.agent_image,
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
            "metricsPort": AGENT_METRICS_PORT,
        },
        "aws": {"region": region},
        "serviceAccount": {"create": True, "name": service_account},
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
