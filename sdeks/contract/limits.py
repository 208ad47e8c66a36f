"""Structural limits on every JSON document the system accepts: the API's request and the agent's message.

A task is a few levels deep (request → task → content → alwayson_scripts → a script's
args); a ComfyUI workflow a few more (prompt → node → inputs → a link). Anything much deeper
is an attack on the parsers and serializers downstream (pydantic, json.dumps, DynamoDB), each
with its own, different recursion limit: some fail with a 500 after the status row is written,
some at the agent. One bound, checked first on both sides, keeps every later step inside
all of them.
"""

from __future__ import annotations

from typing import Any

MAX_JSON_DEPTH = 32
"""Containers (objects and arrays) nested in one document, the outermost counting as 1."""


class JsonTooDeepError(ValueError):
    """A document nests containers deeper than :data:`MAX_JSON_DEPTH`."""

    def __init__(self, depth: int, limit: int = MAX_JSON_DEPTH) -> None:
        super().__init__(f"JSON nested deeper than {limit} levels (objects and arrays); at most {limit} allowed")
        self.depth = depth
        self.limit = limit


def check_json_depth(value: Any, limit: int = MAX_JSON_DEPTH) -> Any:
    """Return ``value`` unchanged, or raise :class:`JsonTooDeepError`; iterative, so any depth is safe to check."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, dict):
            children = node.values()
        elif isinstance(node, list):
            children = node
        else:
            continue
        if depth > limit:
            raise JsonTooDeepError(depth, limit)
        stack.extend((child, depth + 1) for child in children if isinstance(child, dict | list))
    return value
