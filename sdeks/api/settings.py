"""Configuration of the API handler, read from the environment (set by CDK or local mode)."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass

from sdeks.contract import TASKTYPES_BY_RUNTIME_TYPE

DEFAULT_PRESIGN_EXPIRES_S = 3600
MAX_PRESIGN_EXPIRES_S = 7 * 24 * 3600  # SigV4 limit

ENV_VARS = (
    "SDEKS_RUNTIMES",
    "SDEKS_TASKS_TOPIC_ARN",
    "SDEKS_TASK_TABLE",
    "SDEKS_OUTPUT_BUCKET",
    "SDEKS_PRESIGN_EXPIRES_S",
    "SDEKS_PUBLIC_BASE_URL",
    "SDEKS_WEBHOOK_ALLOW_LOOPBACK",
    "AWS_ENDPOINT_URL",
    "AWS_REGION",
    "AWS_DEFAULT_REGION",
)
"""Everything the handler reads; a change of any of them rebuilds the cached clients."""


class ConfigurationError(RuntimeError):
    """The deployment is broken (missing or malformed environment); a 500, logged, never the client's fault."""


@dataclass(frozen=True)
class Settings:
    runtimes: Mapping[str, str]
    """Configured runtimes, name → runtime type (``sdwebui`` or ``comfyui``)."""
    tasks_topic_arn: str
    task_table: str
    output_bucket: str
    presign_expires_s: int = DEFAULT_PRESIGN_EXPIRES_S
    public_base_url: str | None = None
    """Optional override of the base of ``status_url`` (e.g. a custom domain with a base path)."""
    webhook_loopback: bool = False
    """Local mode only: admit webhook receivers on 127.0.0.1 (never set by CDK)."""

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ
        missing = [
            name
            for name in ("SDEKS_RUNTIMES", "SDEKS_TASKS_TOPIC_ARN", "SDEKS_TASK_TABLE", "SDEKS_OUTPUT_BUCKET")
            if not env.get(name)
        ]
        if missing:
            raise ConfigurationError(f"missing environment: {', '.join(missing)}")
        try:
            runtimes = json.loads(env["SDEKS_RUNTIMES"])
        except ValueError as exc:
            raise ConfigurationError(f"SDEKS_RUNTIMES is not JSON: {exc}") from None
        if not isinstance(runtimes, dict) or not runtimes:
            raise ConfigurationError("SDEKS_RUNTIMES must be a non-empty JSON object {name: type}")
        for name, kind in runtimes.items():
            if kind not in TASKTYPES_BY_RUNTIME_TYPE:
                raise ConfigurationError(f"runtime {name!r} has unknown type {kind!r}")
        try:
            expires = int(env.get("SDEKS_PRESIGN_EXPIRES_S") or DEFAULT_PRESIGN_EXPIRES_S)
        except ValueError:
            raise ConfigurationError("SDEKS_PRESIGN_EXPIRES_S must be an integer") from None
        if not 1 <= expires <= MAX_PRESIGN_EXPIRES_S:
            raise ConfigurationError(f"SDEKS_PRESIGN_EXPIRES_S must be in 1..{MAX_PRESIGN_EXPIRES_S}")
        return cls(
            runtimes=dict(runtimes),
            tasks_topic_arn=env["SDEKS_TASKS_TOPIC_ARN"],
            task_table=env["SDEKS_TASK_TABLE"],
            output_bucket=env["SDEKS_OUTPUT_BUCKET"],
            presign_expires_s=expires,
            public_base_url=(env.get("SDEKS_PUBLIC_BASE_URL") or "").rstrip("/") or None,
            webhook_loopback=env.get("SDEKS_WEBHOOK_ALLOW_LOOPBACK", "").lower() in ("1", "true"),
        )


def env_key(environ: Mapping[str, str] | None = None) -> tuple[str | None, ...]:
    env = os.environ if environ is None else environ
    return tuple(env.get(name) for name in ENV_VARS)
