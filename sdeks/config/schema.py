"""Deployment configuration: one file drives CDK, the helm values and local mode.

Every model forbids unknown keys so that a typo (``max_recieve_count``) fails
loudly instead of silently falling back to a default.
"""

from __future__ import annotations

import ipaddress
import json
import re
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from sdeks.contract.budget import DEFAULT_MAX_WORK
from sdeks.contract.content import TASKTYPES_BY_RUNTIME_TYPE, RuntimeType
from sdeks.contract.routing import MAX_MODELS_PER_RUNTIME, checkpoint_key
from sdeks.contract.task import PREFIX_PATTERN, RUNTIME_NAME_PATTERN

_BUCKET_PATTERN = r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$"
_HOST_PATTERN = r"^(\*\.)?([A-Za-z0-9-]+\.)+[A-Za-z][A-Za-z0-9-]*$"
"""A DNS name, optionally ``*.``-prefixed; the last label starts with a letter, so an IPv4 address never matches."""
_GPU_FAMILY_PATTERN = r"^[gp][a-z0-9-]+$"
_RESERVED_TAG_PATTERN = (
    r"^(kubernetes\.io/cluster/|eks:eks-cluster-name$|karpenter\.sh/nodepool$|karpenter\.sh/nodeclaim$"
    r"|karpenter\.k8s\.aws/ec2nodeclass$)"
)
"""Tag keys Karpenter sets on the nodes it launches itself; a NodePool may not set them."""


def _items(pattern: str | None = None, **schema: object) -> dict[str, object]:
    """JSON Schema of a list field whose items a validator checks (so the error names the list and the reason).

    The validators below enforce exactly this; the schema states it for the chart's values.schema.json,
    which is tested equal to it (tests/helm/test_values_schema.py).
    """
    items: dict[str, object] = {"type": "string", **({"pattern": pattern} if pattern else {})}
    return {"items": items, "uniqueItems": True, **schema}


def _unique(value: list[str]) -> list[str]:
    repeated = sorted({v for v in value if value.count(v) > 1})
    if repeated:
        raise ValueError(f"repeated: {', '.join(repeated)}")
    return value


TagKey = Annotated[
    str, Field(min_length=1, max_length=128, json_schema_extra={"not": {"pattern": _RESERVED_TAG_PATTERN}})
]
TagValue = Annotated[str, Field(min_length=1, max_length=256)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ModelSource(_Strict):
    """Where the runtime finds its checkpoints.

    In the cloud: an S3 bucket (+ prefix) mounted read-only with Mountpoint for S3.
    Locally: a path; when both are absent local mode builds the tiny test model.
    """

    bucket: str | None = Field(default=None, pattern=_BUCKET_PATTERN, description="model bucket; created when absent")
    prefix: str = Field(default="models", pattern=PREFIX_PATTERN)
    checkpoint: str | None = Field(
        default=None, min_length=1, max_length=256, description="model loaded at start (file or directory name)"
    )
    local_path: str | None = Field(default=None, description="local mode: a diffusers dir or .safetensors file")


class GpuNodes(_Strict):
    instance_families: list[str] = Field(
        default_factory=lambda: ["g5", "g6", "g6e"], min_length=1, json_schema_extra=_items(_GPU_FAMILY_PATTERN)
    )
    capacity_types: list[Literal["spot", "on-demand"]] = Field(
        default_factory=lambda: ["spot", "on-demand"], min_length=1, json_schema_extra={"uniqueItems": True}
    )
    max_gpus: int = Field(default=8, ge=1, le=1000, description="Karpenter NodePool limit")
    per_pod: int = Field(
        default=1,
        ge=1,
        le=8,
        description="GPUs each pod requests; nodes are limited to instance types with exactly this many (no pod"
        " strands GPUs it does not use on a larger size)",
    )

    @field_validator("instance_families")
    @classmethod
    def _gpu_families(cls, value: list[str]) -> list[str]:
        for family in value:
            if not re.match(_GPU_FAMILY_PATTERN, family):
                raise ValueError(f"{family!r} is not a GPU instance family (g4dn, g5, g6, g6e, p4d, ...)")
        return _unique(value)

    @field_validator("capacity_types")
    @classmethod
    def _unique_capacity_types(cls, value: list[str]) -> list[str]:
        return _unique(value)


class Scaling(_Strict):
    min_replicas: int = Field(default=0, ge=0, le=100)
    max_replicas: int = Field(default=4, ge=1, le=100)
    queue_length: int = Field(default=2, ge=1, le=100, description="target messages per pod")
    activation_queue_length: int = Field(default=0, ge=0)
    cooldown_s: int = Field(default=300, ge=0, le=86400, description="idle time before scaling to min")

    @model_validator(mode="after")
    def _ordered(self) -> Scaling:
        if self.max_replicas < self.min_replicas:
            raise ValueError(f"max_replicas ({self.max_replicas}) must be >= min_replicas ({self.min_replicas})")
        return self


ROUTING_ENV_BUDGET = 3072
"""Bytes of the API Lambda's environment (4 KB in all, with ARNs and names) the routing tables may take:
``SDEKS_RUNTIMES`` and ``SDEKS_MODELS`` (sdeks.api.environment)."""

SPOT_SAFE_SHUTDOWN_GRACE_S = 90
"""Default time a running task gets after SIGTERM. EC2 gives a spot instance 2 minutes' notice; Karpenter
drains the node as the notice arrives, and the pod's terminationGracePeriodSeconds (this plus the chart's
termination margin) must end before the instance does."""


class Runtime(_Strict):
    name: str = Field(pattern=RUNTIME_NAME_PATTERN, description="tasks name it in metadata.runtime")
    type: RuntimeType = "sdwebui"
    model: ModelSource = Field(default_factory=ModelSource)
    models: list[Annotated[str, Field(min_length=1, max_length=256)]] = Field(
        default_factory=list,
        max_length=MAX_MODELS_PER_RUNTIME,
        description="checkpoints it serves, as A1111 lists them (file or directory names); a task naming one of them"
        " and no runtime is routed here (model.checkpoint is always among them). A checkpoint two runtimes declare"
        " routes only tasks that name their runtime",
        json_schema_extra={"uniqueItems": True},
    )
    image: str | None = Field(
        default=None,
        min_length=1,
        description="prebuilt runtime image; unset = cdk deploy builds sd_runtime/Dockerfile (needs Docker)",
    )
    gpu: GpuNodes = Field(default_factory=GpuNodes)
    scaling: Scaling = Field(default_factory=Scaling)
    task_timeout_s: int = Field(default=300, ge=10, le=3600)
    max_receive_count: int = Field(default=3, ge=1, le=20, description="deliveries before the DLQ")
    prefetch: int = Field(
        default=1,
        ge=0,
        le=8,
        description=(
            "tasks received and prepared beyond the two in flight at the runtime (the executing one and the next, "
            "waiting at the runtime); 0: one task at a time"
        ),
    )
    max_work: float = Field(
        default=DEFAULT_MAX_WORK,
        gt=0,
        le=100_000,
        description="most megapixel-steps one task may ask for (width × height × steps × images / 10⁶); "
        "the API refuses more with a 400",
    )
    shutdown_grace_s: int = Field(
        default=SPOT_SAFE_SHUTDOWN_GRACE_S,
        ge=0,
        le=SPOT_SAFE_SHUTDOWN_GRACE_S + 10,
        description="on SIGTERM (spot notice, scale-in) the running task's time to finish before it is interrupted"
        " and released to another pod; with the chart's margin it stays inside the 2-minute spot notice",
    )

    @field_validator("models")
    @classmethod
    def _distinct_models(cls, value: list[str]) -> list[str]:
        keys = [checkpoint_key(m) for m in value]
        repeated = sorted({m for m, k in zip(value, keys, strict=True) if keys.count(k) > 1})
        if repeated:
            raise ValueError(f"names of one checkpoint (A1111 matches them alike): {', '.join(repeated)}")
        return value

    @model_validator(mode="after")
    def _checkpoint_is_served(self) -> Runtime:
        if len(self.checkpoints) > MAX_MODELS_PER_RUNTIME:
            raise ValueError(
                f"models with model.checkpoint are {len(self.checkpoints)} checkpoints; at most"
                f" {MAX_MODELS_PER_RUNTIME} fit one SNS filter policy"
            )
        return self

    @property
    def checkpoints(self) -> tuple[str, ...]:
        """What the runtime is routed for: ``models``, and ``model.checkpoint`` unless it is one of them."""
        start = self.model.checkpoint
        if start is None or any(checkpoint_key(m) == checkpoint_key(start) for m in self.models):
            return tuple(self.models)
        return (start, *self.models)

    @property
    def tasktypes(self) -> tuple[str, ...]:
        return TASKTYPES_BY_RUNTIME_TYPE[self.type]

    @property
    def visibility_timeout_s(self) -> int:
        """Initial SQS visibility; the agent's heartbeat extends it while a task runs."""
        return min(43200, max(60, self.task_timeout_s // 2))


class Throttle(_Strict):
    rate_limit: float = Field(default=10.0, gt=0, le=10000, description="requests per second")
    burst_limit: int = Field(default=20, ge=1, le=5000)


class Quota(_Strict):
    limit: int = Field(default=10000, ge=1)
    period: Literal["DAY", "WEEK", "MONTH"] = "DAY"


class Api(_Strict):
    throttle: Throttle = Field(default_factory=Throttle)
    quota: Quota = Field(default_factory=Quota)


class Output(_Strict):
    bucket: str | None = Field(default=None, pattern=_BUCKET_PATTERN, description="created when absent")
    expire_days: int = Field(default=30, ge=1, le=3650, description="outputs are deleted after this many days")
    presign_images: bool = Field(
        default=False,
        description="every task status and completion event carries presigned HTTPS URLs of its images (image_urls)",
    )
    presign_expires_s: int = Field(
        default=3600, ge=1, le=7 * 24 * 3600, description="lifetime of presigned URLs (SigV4 allows a week)"
    )


class Inputs(_Strict):
    """What the agent may fetch when a task references an image by URL."""

    allowed_buckets: list[str] = Field(
        default_factory=list,
        description="s3:// sources; the output bucket is implied",
        json_schema_extra=_items(_BUCKET_PATTERN),
    )
    allowed_hosts: list[str] = Field(
        default_factory=list,
        description="https:// hosts ('*.example.com' allowed); empty = none",
        json_schema_extra=_items(_HOST_PATTERN),
    )
    max_bytes: int = Field(default=20 * 1024 * 1024, ge=1024, le=100 * 1024 * 1024)
    timeout_s: float = Field(default=10.0, gt=0, le=60)

    @field_validator("allowed_buckets")
    @classmethod
    def _buckets(cls, value: list[str]) -> list[str]:
        for bucket in value:
            if not re.match(_BUCKET_PATTERN, bucket):
                raise ValueError(f"{bucket!r} is not a valid bucket name")
        return _unique(value)

    @field_validator("allowed_hosts")
    @classmethod
    def _hosts(cls, value: list[str]) -> list[str]:
        for host in value:
            if not re.match(_HOST_PATTERN, host):
                raise ValueError(f"{host!r} is not a host name (IP addresses are never allowed)")
        return _unique(value)


KUBERNETES_VERSIONS = ("1.35", "1.36")
"""Versions the stack deploys: in EKS standard support at this release (2026-12) and with a kubectl
layer pinned in requirements/cdk.txt. Moving on (docs/deploy.md, "Kubernetes versions"): pin the
next ``aws-cdk.lambda-layer-kubectl-v1N``, add it here, then upgrade one minor version per deploy."""


class Cluster(_Strict):
    kubernetes_version: str = Field(
        default=KUBERNETES_VERSIONS[-1],
        description="EKS version; extended support costs about six times the standard control plane price",
        json_schema_extra={"enum": list(KUBERNETES_VERSIONS)},
    )
    system_instance_type: str = Field(default="m6i.large")
    system_nodes: int = Field(default=2, ge=1, le=10)
    interface_endpoints: bool = Field(
        default=False,
        description="ECR (api, dkr) and STS interface endpoints in each AZ: image manifests and credential calls stay"
        " off the NAT gateway, at about $22/month per endpoint (3 AZs); S3 (image layers, models) always has a free"
        " gateway endpoint",
    )
    bottlerocket_alias: str = Field(default="bottlerocket@v1.66.0", pattern=r"^bottlerocket@(v\d+\.\d+\.\d+|latest)$")
    endpoint_public_cidrs: list[str] = Field(
        default_factory=list,
        max_length=40,
        description="CIDRs that may reach the Kubernetes API from the internet; empty = private endpoint only "
        "(kubectl from inside the VPC: a bastion, VPN or Direct Connect; CDK's kubectl handler runs in the VPC)",
    )

    @field_validator("endpoint_public_cidrs")
    @classmethod
    def _public_cidrs(cls, value: list[str]) -> list[str]:
        for cidr in value:
            try:
                network = ipaddress.ip_network(cidr, strict=True)
            except ValueError as exc:
                raise ValueError(f"{cidr!r} is not a CIDR block: {exc}") from None
            if network.prefixlen == 0:
                raise ValueError(f"{cidr!r} opens the Kubernetes API to the whole internet; name your networks")
        return value

    @field_validator("kubernetes_version")
    @classmethod
    def _has_a_kubectl_layer(cls, value: str) -> str:
        if value not in KUBERNETES_VERSIONS:
            raise ValueError(
                f"{value!r} is not a version this project deploys; supported: {', '.join(KUBERNETES_VERSIONS)}"
                " (each has a kubectl layer and EKS standard support; docs/deploy.md says how to add the next)"
            )
        return value


class Observability(_Strict):
    """Dashboard, alarms and logs of a deployment (infra/observability.py, docs/operations.md)."""

    log_retention_days: Literal[
        1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 3653  # CloudWatch's choices
    ] = Field(default=30, description="days CloudWatch keeps pod logs and task metric records")
    alarm_email: str | None = Field(
        default=None, pattern=r"^[^@\s]+@[^@\s]+\.[^@\s]+$", max_length=254, description="subscribed to the alarm topic"
    )
    oldest_message_alarm_s: int = Field(
        default=900, ge=60, le=14 * 24 * 3600, description="alarm when a queued task waits longer than this"
    )
    addon_version: str | None = Field(
        default=None,
        pattern=r"^v\d+\.\d+\.\d+-eksbuild\.\d+$",
        description="amazon-cloudwatch-observability add-on version (default: EKS's default for the cluster)",
    )


class Config(_Strict):
    """The whole deployment. See config/default.yaml for a commented example."""

    project: str = Field(
        default="sdeks", pattern=r"^[a-z]([a-z0-9-]{0,22}[a-z0-9])$", description="prefix of every resource"
    )
    region: str | None = Field(default=None, pattern=r"^[a-z]{2}(-gov)?-[a-z]+-\d$")
    agent_image: str | None = Field(
        default=None,
        min_length=1,
        description="prebuilt queue agent image; unset = cdk deploy builds queue_agent/Dockerfile (needs Docker)",
    )
    api: Api = Field(default_factory=Api)
    output: Output = Field(default_factory=Output)
    inputs: Inputs = Field(default_factory=Inputs)
    cluster: Cluster = Field(default_factory=Cluster)
    runtimes: list[Runtime] = Field(min_length=1, max_length=20)
    tags: dict[TagKey, TagValue] = Field(default_factory=dict, description="on every resource and GPU node")
    observability: Observability = Field(default_factory=Observability)

    @field_validator("runtimes")
    @classmethod
    def _unique_names(cls, value: list[Runtime]) -> list[Runtime]:
        names = [r.name for r in value]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"runtime names must be unique; repeated: {', '.join(duplicates)}")
        return value

    @model_validator(mode="after")
    def _routing_fits_the_api_environment(self) -> Config:
        size = sum(len(json.dumps(table, sort_keys=True)) for table in (self.runtime_types, self.runtime_models))
        if size > ROUTING_ENV_BUDGET:
            raise ValueError(
                f"runtimes: their names and models take {size} bytes of the API Lambda's environment, at most"
                f" {ROUTING_ENV_BUDGET} fit (Lambda holds 4 KB in all); declare fewer or shorter checkpoint names"
            )
        return self

    @field_validator("tags")
    @classmethod
    def _tags_karpenter_may_set(cls, value: dict[str, str]) -> dict[str, str]:
        reserved = sorted(k for k in value if re.match(_RESERVED_TAG_PATTERN, k))
        if reserved:
            raise ValueError(f"tag keys reserved for the nodes' own tags (Karpenter, EKS): {', '.join(reserved)}")
        return value

    @property
    def runtime_types(self) -> dict[str, str]:
        """``{name: type}``: what task validation needs to route a task."""
        return {r.name: r.type for r in self.runtimes}

    @property
    def runtime_models(self) -> dict[str, list[str]]:
        """``{name: [checkpoint]}``: what task validation needs to route a task by the checkpoint it names."""
        return {r.name: list(r.checkpoints) for r in self.runtimes}

    def runtime(self, name: str) -> Runtime:
        for runtime in self.runtimes:
            if runtime.name == name:
                return runtime
        raise KeyError(name)
