"""JSON Schema constraints of one value, to compare the chart's values.schema.json with pydantic models."""

from __future__ import annotations

import json
from typing import Any

SCALAR_BOUNDS = (
    "type",
    "const",
    "minimum",
    "maximum",
    "exclusiveMinimum",
    "exclusiveMaximum",
    "pattern",
    "minLength",
    "maxLength",
    "minItems",
    "maxItems",
    "uniqueItems",
)
NESTED_BOUNDS = ("items", "additionalProperties", "propertyNames", "not")


def bounds(node: dict[str, Any], defs: dict[str, Any] | None = None) -> dict[str, Any]:
    """The constraints of a schema node, without titles, defaults and descriptions.

    A pydantic ``None`` is the chart's ``""``: helm values cannot carry null (helm deletes such keys).
    ``defs`` resolves ``$ref`` of a pydantic schema.
    """
    while "$ref" in node:
        node = (defs or {})[node["$ref"].rsplit("/", 1)[-1]]
    if node.get("type") == "null":
        return {"const": ""}
    if "anyOf" in node:
        return {"anyOf": sorted((bounds(branch, defs) for branch in node["anyOf"]), key=json.dumps)}
    out: dict[str, Any] = {k: node[k] for k in SCALAR_BOUNDS if k in node}
    if "enum" in node:
        out["enum"] = sorted(node["enum"])
    for key in NESTED_BOUNDS:
        if isinstance(node.get(key), dict):
            out[key] = bounds(node[key], defs)
    return out
