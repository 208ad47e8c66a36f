"""The environment that launches ``python -m queue_agent`` against a provisioned stack.

The agent is configured by its environment only (``SDEKS_*`` names, read by
``queue_agent.settings.Settings``); local mode, the benchmarks and the tests
build that environment here, so they launch the agent the way the helm chart
does. It lives with local mode rather than in the agent so that the agent's
import graph stays free of local-mode code.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sdeks.config import Inputs
    from sdeks.local.provision import LocalResources


def agent_env(
    resources: LocalResources,
    runtime_name: str,
    runtime_url: str,
    runtime_type: str = "sdwebui",
    *,
    port: int = 9095,
    inputs: Inputs | None = None,
    status_ttl_days: int | None = None,
    **overrides: Any,
) -> dict[str, str]:
    """``SDEKS_*``/``AWS_*`` variables for one agent serving ``runtime_name``.

    ``inputs`` and ``status_ttl_days`` (the config's ``output.expire_days``) come from the deployment
    config, as the chart's values do (:func:`sdeks.config.helm_values.helm_values`); unset, the agent's
    defaults apply. ``overrides`` are further settings by field name (``wait_time_s=1`` →
    ``SDEKS_WAIT_TIME_S=1``; a list becomes a comma-separated value).
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
    if status_ttl_days is not None:
        env["SDEKS_STATUS_TTL_DAYS"] = str(status_ttl_days)
    for name, value in overrides.items():
        if isinstance(value, (list, tuple)):
            value = ",".join(value)
        env[f"SDEKS_{name.upper()}"] = str(value)
    return env
