"""Agent configuration, read from the environment (``SDEKS_*``, ``AWS_*``).

The helm chart and local mode set exactly these names; :func:`env_for` builds
them for a local stack so tests and ``sdeks local up`` launch the agent the same way.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AliasChoices, Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

CommaList = Annotated[list[str], NoDecode]


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SDEKS_", extra="ignore", frozen=True)

    queue_url: str
    runtime_name: str
    runtime_type: Literal["sdwebui", "comfyui"] = "sdwebui"
    runtime_url: str = "http://127.0.0.1:8080"
    runtime_health_path: str | None = Field(
        default=None, description="readiness probe of the runtime; default /healthz (sdwebui), /system_stats (comfyui)"
    )
    output_bucket: str
    results_topic_arn: str
    task_table: str

    allowed_input_buckets: CommaList = Field(default_factory=list)
    allowed_input_hosts: CommaList = Field(default_factory=list)
    input_max_bytes: int = Field(default=20 * 1024 * 1024, ge=1024)
    input_timeout_s: float = Field(default=10.0, gt=0)

    prefetch: int = Field(default=1, ge=0, le=8)
    task_timeout_s: float = Field(default=300.0, gt=0)
    wait_time_s: int = Field(default=20, ge=0, le=20)
    visibility_s: int = Field(default=60, ge=2, le=43200, description="visibility set by each heartbeat")
    backoff_base_s: float = Field(default=5.0, ge=0)
    backoff_max_s: float = Field(default=300.0, ge=0, le=43200)
    shutdown_grace_s: float = Field(default=25.0, ge=0, description="time SIGTERM leaves the running task")
    claim_check_max_bytes: int = Field(default=8 * 1024 * 1024, ge=1024)

    agent_host: str = "0.0.0.0"
    agent_port: int = Field(default=9095, ge=0, le=65535)
    log_level: str = "INFO"

    aws_region: str | None = Field(
        default=None, validation_alias=AliasChoices("AWS_REGION", "AWS_DEFAULT_REGION", "SDEKS_AWS_REGION")
    )

    @field_validator("allowed_input_buckets", "allowed_input_hosts", mode="before")
    @classmethod
    def _split(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @property
    def health_path(self) -> str:
        if self.runtime_health_path:
            return self.runtime_health_path
        return "/system_stats" if self.runtime_type == "comfyui" else "/healthz"

    @property
    def input_buckets(self) -> frozenset[str]:
        """Buckets inputs may come from: the configured ones plus the output bucket."""
        return frozenset([*self.allowed_input_buckets, self.output_bucket])


def env_for(
    resources: Any,
    runtime_name: str,
    runtime_url: str,
    runtime_type: str = "sdwebui",
    *,
    port: int = 9095,
    inputs: Any = None,
    **overrides: Any,
) -> dict[str, str]:
    """The environment that launches ``python -m queue_agent`` against a provisioned stack.

    ``resources`` is a :class:`sdeks.local.provision.LocalResources` (or anything with
    its attributes); ``inputs`` an optional :class:`sdeks.config.Inputs`. ``overrides``
    are further settings by field name (``wait_time_s=1`` → ``SDEKS_WAIT_TIME_S=1``).
    """
    env = {
        "SDEKS_QUEUE_URL": resources.queues[runtime_name].url,
        "SDEKS_RUNTIME_NAME": runtime_name,
        "SDEKS_RUNTIME_TYPE": runtime_type,
        "SDEKS_RUNTIME_URL": runtime_url,
        "SDEKS_OUTPUT_BUCKET": resources.output_bucket,
        "SDEKS_RESULTS_TOPIC_ARN": resources.results_topic_arn,
        "SDEKS_TASK_TABLE": resources.task_table,
        "SDEKS_AGENT_PORT": str(port),
        "AWS_ENDPOINT_URL": resources.aws_endpoint_url,
        "AWS_REGION": resources.region,
        "AWS_DEFAULT_REGION": resources.region,
    }
    if inputs is not None:
        env["SDEKS_ALLOWED_INPUT_BUCKETS"] = ",".join(inputs.allowed_buckets)
        env["SDEKS_ALLOWED_INPUT_HOSTS"] = ",".join(inputs.allowed_hosts)
        env["SDEKS_INPUT_MAX_BYTES"] = str(inputs.max_bytes)
        env["SDEKS_INPUT_TIMEOUT_S"] = str(inputs.timeout_s)
    for name, value in overrides.items():
        if isinstance(value, (list, tuple)):
            value = ",".join(value)
        env[f"SDEKS_{name.upper()}"] = str(value)
    return env
