"""The one function that turns a deployment config and its resource names into the API's environment.

CDK (the Lambda's environment), local mode (the local server's) and the tests call it,
so the three cannot drift; the result is validated by :class:`ApiSettings`, the model
the handler reads it back with. Kept apart from :mod:`sdeks.api.settings` because it
needs the deployment config, which the Lambda must not import.
"""

from __future__ import annotations

from sdeks.api.settings import DEFAULT_PRESIGN_EXPIRES_S, ApiSettings
from sdeks.config import Config


def api_environment(
    config: Config,
    *,
    tasks_topic_arn: str,
    task_table: str,
    output_bucket: str,
    public_base_url: str | None = None,
) -> dict[str, str]:
    """``SDEKS_*`` variables for the API of ``config`` wired to these resources (names or CDK tokens)."""
    # Every field is given, so nothing of the caller's own environment (a settings source) leaks in.
    settings = ApiSettings(
        runtimes=config.runtime_types,
        tasks_topic_arn=tasks_topic_arn,
        task_table=task_table,
        output_bucket=output_bucket,
        presign_expires_s=DEFAULT_PRESIGN_EXPIRES_S,
        status_ttl_days=config.output.expire_days,
        public_base_url=public_base_url,
        max_work={r.name: r.max_work for r in config.runtimes},
    )
    return settings.to_env()
