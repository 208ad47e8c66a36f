"""The API process's configuration contract: the ``SDEKS_*`` environment, as a settings model.

CDK (the Lambda's environment), local mode (the local server's) and tests all build this
environment with :func:`sdeks.api.environment.api_environment`, which validates it through
this very model; the handler reads it back with :meth:`ApiSettings.from_env`. The model
imports only the contract, so the Lambda loads neither the YAML config loader nor local mode.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping

from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict, SettingsError

from sdeks.contract import RuntimeType, summarize

ENV_PREFIX = "SDEKS_"
DEFAULT_PRESIGN_EXPIRES_S = 3600
MAX_PRESIGN_EXPIRES_S = 7 * 24 * 3600
"""SigV4 presigned URLs live at most a week."""


class ConfigurationError(RuntimeError):
    """The deployment is broken (missing or malformed environment); a 500, logged, never the client's fault."""


class ApiSettings(BaseSettings):
    """Everything the API handler reads from its environment (``SDEKS_<FIELD>``)."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore", frozen=True)

    runtimes: dict[str, RuntimeType] = Field(min_length=1, description="configured runtimes, name → runtime type")
    models: dict[str, list[str]] = Field(
        default_factory=dict, description="checkpoints each runtime declares, name → [checkpoint] (task routing)"
    )
    queue_urls: dict[str, str] = Field(
        default_factory=dict,
        description="runtime name → its SQS queue URL: the depth a queued task's status reports (tasks_ahead_approx)",
    )
    tasks_topic_arn: str = Field(min_length=1)
    task_table: str = Field(min_length=1)
    output_bucket: str = Field(min_length=1)
    presign_images: bool = Field(
        default=False, description="status carries presigned HTTPS image URLs without ?presign=1 (?presign=0 opts out)"
    )
    presign_expires_s: int = Field(default=DEFAULT_PRESIGN_EXPIRES_S, ge=1, le=MAX_PRESIGN_EXPIRES_S)
    status_ttl_days: int = Field(
        default=30, ge=1, description="status rows expire with the outputs they point at (config output.expire_days)"
    )
    public_base_url: str | None = Field(
        default=None, description="base of status_url instead of the request's host (e.g. a custom domain)"
    )
    max_work: dict[str, float] = Field(
        default_factory=dict,
        description="runtime name → most megapixel-steps per task (config runtimes[].max_work); absent = unbounded",
    )
    webhook_allow_loopback: bool = Field(
        default=False, description="local mode only: admit webhook receivers on 127.0.0.1 (never set by CDK)"
    )

    @model_validator(mode="after")
    def _models_of_runtimes(self) -> ApiSettings:
        for what, named in (("models", self.models), ("queue URLs", self.queue_urls)):
            strays = sorted(set(named) - set(self.runtimes))
            if strays:
                raise ValueError(f"{what} of runtimes that are not configured: {', '.join(strays)}")
        return self

    @field_validator("public_base_url")
    @classmethod
    def _no_trailing_slash(cls, value: str | None) -> str | None:
        return value.rstrip("/") or None if value else None

    @classmethod
    def from_env(cls) -> ApiSettings:
        """The settings of this process's environment; a broken one raises ConfigurationError."""
        try:
            return cls()
        except ValidationError as exc:
            raise ConfigurationError(f"API environment: {summarize(exc)}") from None
        except SettingsError as exc:  # a JSON field that is not JSON
            raise ConfigurationError(f"API environment: {exc}") from None

    def to_env(self) -> dict[str, str]:
        """The environment that reads back as these settings (unset optional values are left out)."""
        env = {}
        for name, value in self.model_dump(mode="json", exclude_none=True).items():
            if isinstance(value, bool):
                text = str(int(value))  # 1/0: what people write in an environment
            elif isinstance(value, str):
                text = value
            else:
                text = json.dumps(value, sort_keys=True)
            env[ENV_PREFIX + name.upper()] = text
        return env


ENV_VARS: tuple[str, ...] = (
    *(ENV_PREFIX + name.upper() for name in ApiSettings.model_fields),
    "AWS_ENDPOINT_URL",
    "AWS_REGION",
    "AWS_DEFAULT_REGION",
)
"""Everything the handler reads; a change of any of them rebuilds the cached clients."""


def env_key(environ: Mapping[str, str] | None = None) -> tuple[str | None, ...]:
    env = os.environ if environ is None else environ
    return tuple(env.get(name) for name in ENV_VARS)
