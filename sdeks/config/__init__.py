"""Deployment configuration: schema, loader and the derived resource layout."""

from sdeks.config.layout import (
    TASK_TABLE_KEY,
    TASK_TABLE_TTL_ATTRIBUTE,
    ResourceLayout,
    RuntimeQueues,
    WebhookQueues,
    resource_layout,
)
from sdeks.config.loader import DEFAULT_CONFIG, ENV_OVERRIDES, ConfigError, load_config, parse_config
from sdeks.config.schema import Api, Cluster, Config, GpuNodes, Inputs, ModelSource, Output, Runtime, Scaling

__all__ = [
    "DEFAULT_CONFIG",
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
    "Scaling",
    "WebhookQueues",
    "load_config",
    "parse_config",
    "resource_layout",
]
