"""The one function that turns a deployment config and its resource names into the API's environment.

CDK (the Lambda's environment), local mode (the local server's) and the tests call it,
so the three cannot drift; the result is validated by :class:`ApiSettings`, the model
the handler reads it back with. Kept apart from :mod:`sdeks.api.settings` because it
needs the deployment config, which the Lambda must not import.
"""

from __future__ import annotations

from collections.abc import Mapping

from sdeks.api.settings import ApiSettings
from sdeks.config import Config


def api_environment(
    config: Config,
    *,
    tasks_topic_arn: str,
    task_table: str,
    output_bucket: str,
    queue_urls: Mapping[str, str] | None = None,
    public_base_url: str | None = None,
    webhook_allow_loopback: bool = False,
    presign_images: bool | None = None,
    presign_expires_s: int | None = None,
) -> dict[str, str]:
    """``SDEKS_*`` variables for the API of ``config`` wired to these resources (names or CDK tokens).

    ``presign_images``/``presign_expires_s`` override the config's ``output`` settings of the same
    names (whether every status carries presigned image URLs, and for how long they are valid).
    ``queue_urls`` (runtime name → its queue's URL) lets a queued task's status say how many tasks
    are ahead of it; a runtime without one answers without that figure.
    """
    # Every field is given, so nothing of the caller's own environment (a settings source) leaks in.
    settings = ApiSettings(
        runtimes=config.runtime_types,
        models=config.runtime_models,
        queue_urls=dict(queue_urls or {}),
        tasks_topic_arn=tasks_topic_arn,
        task_table=task_table,
        output_bucket=output_bucket,
        presign_images=config.output.presign_images if presign_images is None else presign_images,
        presign_expires_s=config.output.presign_expires_s if presign_expires_s is None else presign_expires_s,
        status_ttl_days=config.output.expire_days,
        public_base_url=public_base_url,
        max_work={r.name: r.max_work for r in config.runtimes},
        webhook_allow_loopback=webhook_allow_loopback,
    )
    return settings.to_env()
