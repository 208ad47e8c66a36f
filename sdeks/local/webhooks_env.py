"""The environment that launches ``python -m webhooks`` (the deliverer) against a provisioned stack.

Lives with local mode, like :mod:`sdeks.local.agent_env`, so that the shared library never
imports an application package.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sdeks.local.provision import LocalResources


def webhooks_env(resources: LocalResources, *, allow_loopback: bool = False, **overrides: Any) -> dict[str, str]:
    """``SDEKS_*``/``AWS_*`` variables read by ``webhooks.settings.Settings``.

    ``overrides`` are further settings by field name (``wait_time_s=1`` → ``SDEKS_WAIT_TIME_S=1``).
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
