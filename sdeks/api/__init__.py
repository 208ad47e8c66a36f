"""The front door: the API handler (API Gateway REST proxy events), its local HTTP adapter and OpenAPI document.

``lambda/api/handler.py`` is a thin entry that re-exports :func:`sdeks.api.handler.handler`;
``python -m sdeks.api.local_server`` serves the very same function over HTTP in local mode.
"""
