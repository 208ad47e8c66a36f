"""ComfyUI's API dialect on the sd_runtime engine: ``api`` (routes and request bodies),
``prompt_queue`` (queue, history, execution), ``files`` (the in-memory image store),
``hub`` (websocket fan-out), ``graph`` (validation and execution of API-format
workflows), ``cache`` (node outputs kept between prompts), ``nodes`` (the node set and
its types) with ``nodes_sampling``, ``nodes_conditioning``, ``nodes_latent``,
``nodes_loaders``, ``bodies`` (JSON bodies as ComfyUI reads them), ``system``
(``/system_stats``).

``mount(app, engine)`` adds the routes to the A1111 app; both dialects share the engine.
"""

from sd_runtime.comfyui.api import mount

__all__ = ["mount"]
