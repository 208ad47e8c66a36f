"""AWS Lambda entry of the sdeks API (API Gateway REST proxy integration).

Handler: ``handler.handler``. The logic lives in :mod:`sdeks.api.handler` (bundled
with this file), so the local HTTP adapter serves exactly the same function.

Environment: SDEKS_RUNTIMES (JSON {name: type}), SDEKS_TASKS_TOPIC_ARN,
SDEKS_TASK_TABLE, SDEKS_OUTPUT_BUCKET, SDEKS_PRESIGN_EXPIRES_S (default 3600),
optional SDEKS_PUBLIC_BASE_URL (base of status_url, e.g. a custom domain).
"""

from sdeks.api.handler import handler

__all__ = ["handler"]
