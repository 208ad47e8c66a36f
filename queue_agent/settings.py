"""Agent configuration, read from the environment (``SDEKS_*``, ``AWS_*``).

The helm chart and local mode (:func:`sdeks.local.agent_env.agent_env`) set
exactly these names; nothing else configures the agent.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import AliasChoices, Field, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from queue_agent import emf
from sdeks.contract import RuntimeType
from sdeks.tasks_table import DEFAULT_ROW_TTL

CommaList = Annotated[list[str], NoDecode]


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SDEKS_", extra="ignore", frozen=True)

    queue_url: str
    runtime_name: str
    runtime_type: RuntimeType = "sdwebui"
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
    status_ttl_days: int = Field(
        default=DEFAULT_ROW_TTL.days,
        ge=1,
        description="status rows the agent creates expire with the outputs they point at (config output.expire_days)",
    )

    presign_images: bool = Field(
        default=False, description="completion events carry presigned HTTPS image URLs (config output.presign_images)"
    )
    presign_expires_s: int = Field(
        default=3600, ge=1, le=7 * 24 * 3600, description="their lifetime (config output.presign_expires_s)"
    )

    project: str | None = Field(
        default=None, min_length=1, max_length=1024, description="deployment name (Project dimension of task metrics)"
    )
    emf_endpoint: str | None = Field(
        default=None,
        description="CloudWatch agent EMF listener (tcp://host:port or udp://host:port); unset: no task metric records",
    )

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

    @field_validator("emf_endpoint")
    @classmethod
    def _emf_endpoint(cls, value: str | None) -> str | None:
        if value:
            emf.parse_endpoint(value)
        return value or None

    @model_validator(mode="after")
    def _records_name_their_project(self) -> Settings:
        if self.emf_endpoint and not self.project:
            raise ValueError("SDEKS_EMF_ENDPOINT needs SDEKS_PROJECT (the Project dimension of every record)")
        return self

    @property
    def health_path(self) -> str:
        if self.runtime_health_path:
            return self.runtime_health_path
        return "/system_stats" if self.runtime_type == "comfyui" else "/healthz"

    @property
    def input_buckets(self) -> frozenset[str]:
        """Buckets inputs may come from: the configured ones plus the output bucket."""
        return frozenset([*self.allowed_input_buckets, self.output_bucket])
