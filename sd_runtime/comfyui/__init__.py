"""ComfyUI's API dialect on the sd_runtime engine: ``api`` (routes, queue, websocket),
``graph`` (validation and execution of API-format workflows), ``nodes`` (the node set).

``mount(app, engine)`` adds the routes to the A1111 app; both dialects share the engine.
"""

from sd_runtime.comfyui.api import mount

__all__ = ["mount"]
