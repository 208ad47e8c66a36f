"""Deliverer configuration, read from the environment (set by CDK or local mode)."""

from __future__ import annotations

from typing import Any

from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from sdeks.tasks_table import TaskTable
from sdeks.webhook_secret import read_secret, signing_key
from webhooks.deliver import Deliverer, http_client


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SDEKS_", extra="ignore", frozen=True)

    webhook_queue_url: str
    webhook_secret_id: str = Field(description="Secrets Manager id (name or ARN) of the signing secret")
    task_table: str
    webhook_allow_loopback: bool = Field(
        default=False, description="local mode only: receivers on 127.0.0.1 / ::1 may be called"
    )
    webhook_timeout_s: float = Field(default=10.0, gt=0, le=60)
    wait_time_s: int = Field(default=20, ge=0, le=20)
    aws_region: str | None = Field(
        default=None, validation_alias=AliasChoices("AWS_REGION", "AWS_DEFAULT_REGION", "SDEKS_AWS_REGION")
    )


def build(settings: Settings, session: Any) -> Deliverer:
    """A deliverer with the signing secret read once (per process / Lambda cold start)."""
    secret = read_secret(session.client("secretsmanager"), settings.webhook_secret_id)
    return Deliverer(
        table=TaskTable(session.resource("dynamodb").Table(settings.task_table)),
        key=signing_key(secret),
        http=http_client(settings.webhook_timeout_s),
        allow_loopback=settings.webhook_allow_loopback,
    )


def env_for(resources: Any, *, allow_loopback: bool = False, **overrides: Any) -> dict[str, str]:
    """The environment that launches ``python -m webhooks`` against a provisioned stack.

    ``resources`` is a :class:`sdeks.local.provision.LocalResources`; ``overrides`` are
    further settings by field name (``wait_time_s=1`` → ``SDEKS_WAIT_TIME_S=1``).
    """
    env = {
        "SDEKS_WEBHOOK_QUEUE_URL": resources.webhook_queue.url,
        "SDEKS_WEBHOOK_SECRET_ID": resources.webhook_secret_id,
        "SDEKS_TASK_TABLE": resources.task_table,
        "SDEKS_WEBHOOK_ALLOW_LOOPBACK": "1" if allow_loopback else "0",
        "AWS_ENDPOINT_URL": resources.aws_endpoint_url,
        "AWS_REGION": resources.region,
        "AWS_DEFAULT_REGION": resources.region,
    }
    env.update({f"SDEKS_{name.upper()}": str(value) for name, value in overrides.items()})
    return env
