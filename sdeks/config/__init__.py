"""Deployment configuration: schema, loader and the derived resource layout.

The loader (and with it YAML) is imported on first use only: the Lambda and the
queue agent import this package for the resource layout, and must not carry the
config loader into their processes.
"""

from typing import Any

from sdeks.config.layout import (
    TASK_TABLE_KEY,
    TASK_TABLE_TTL_ATTRIBUTE,
    ResourceLayout,
    RuntimeQueues,
    RuntimeRelease,
    WebhookQueues,
    resource_layout,
)
from sdeks.config.schema import (
    KUBERNETES_VERSIONS,
    Api,
    Cluster,
    Config,
    GpuNodes,
    Inputs,
    ModelSource,
    Output,
    Runtime,
    Scaling,
)

__all__ = [
    "DEFAULT_CONFIG",
    "KUBERNETES_VERSIONS",
    "ENV_OVERRIDES",
    "TASK_TABLE_KEY",
    "TASK_TABLE_TTL_ATTRIBUTE",
    "Api",
    "Cluster",
    "Config",
    "ConfigError",
    "GpuNodes",
    "Inputs",
    "ModelSource",
    "Output",
    "ResourceLayout",
    "Runtime",
    "RuntimeQueues",
    "RuntimeRelease",
    "Scaling",
    "WebhookQueues",
    "load_config",
    "parse_config",
    "resource_layout",
]

_LOADER_NAMES = frozenset({"DEFAULT_CONFIG", "ENV_OVERRIDES", "ConfigError", "load_config", "parse_config"})


def __getattr__(name: str) -> Any:
    """``from sdeks.config import load_config`` keeps working, loading the loader only then."""
    if name in _LOADER_NAMES:
        from sdeks.config import loader

        return getattr(loader, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
