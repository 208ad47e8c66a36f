"""AWS Lambda entry of the sdeks API (API Gateway REST proxy integration).

Handler: ``handler.handler``. The logic lives in :mod:`sdeks.api.handler` (bundled
with this file), so the local HTTP adapter serves exactly the same function.

Environment: the ``SDEKS_*`` variables of :class:`sdeks.api.settings.ApiSettings`,
built by :func:`sdeks.api.environment.api_environment` (CDK sets them).
"""

from sdeks.api.handler import handler

__all__ = ["handler"]
