"""Load and validate the deployment configuration.

Errors name the key and the reason (``runtimes[0].scaling.max_replicas: ...``),
because the first reader of a config error is a person at a terminal or a CDK
synth log, not a stack trace.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from sdeks.config.schema import Config
from sdeks.contract.errors import describe

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_CONFIG = REPO_ROOT / "config" / "default.yaml"

ENV_OVERRIDES: dict[str, tuple[str, ...]] = {
    "SDEKS_PROJECT": ("project",),
    "SDEKS_REGION": ("region",),
    "SDEKS_OUTPUT_BUCKET": ("output", "bucket"),
}
"""The few values people change per deployment, settable without editing the file."""


class ConfigError(ValueError):
    """A configuration file that cannot be used; the message says where and why."""


def config_path(path: str | os.PathLike[str] | None = None) -> Path:
    """The file to load: the argument, else ``$SDEKS_CONFIG``, else config/default.yaml."""
    return Path(path or os.environ.get("SDEKS_CONFIG") or DEFAULT_CONFIG)


def _apply_env(data: dict[str, Any], environ: dict[str, str]) -> dict[str, Any]:
    for var, keys in ENV_OVERRIDES.items():
        if environ.get(var):
            node = data
            for key in keys[:-1]:
                node = node.setdefault(key, {})
            node[keys[-1]] = environ[var]
    return data


def parse_config(data: Any, source: str = "<config>", environ: dict[str, str] | None = None) -> Config:
    """Validate an already-parsed document (plus environment overrides)."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: the top level must be a mapping, got {type(data).__name__}")
    data = _apply_env(dict(data), dict(os.environ if environ is None else environ))
    try:
        return Config.model_validate(data)
    except ValidationError as exc:
        problems = "\n".join(f"  {p['field']}: {p['message']}" for p in describe(exc))
        raise ConfigError(f"{source}: invalid configuration\n{problems}") from None


def load_config(path: str | os.PathLike[str] | None = None, environ: dict[str, str] | None = None) -> Config:
    """Read, parse and validate a configuration file."""
    file = config_path(path)
    try:
        text = file.read_text()
    except OSError as exc:
        raise ConfigError(f"{file}: cannot read configuration: {exc.strerror}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{file}: not valid YAML: {exc}") from None
    return parse_config(data, str(file), environ)
