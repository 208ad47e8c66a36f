"""ComfyUI's API dialect on the sd_runtime engine: ``api`` (routes and request bodies),
``prompt_queue`` (queue, history, execution), ``files`` (the in-memory image store),
``hub`` (websocket fan-out), ``graph`` (validation and execution of API-format
workflows), ``nodes`` (the node set), ``system`` (``/system_stats``).

``mount(app, engine)`` adds the routes to the A1111 app; both dialects share the engine.
"""

from sd_runtime.comfyui.api import mount

__all__ = ["mount"]
