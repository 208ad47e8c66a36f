"""Which runtime a task goes to, how the tasks topic says so, and how each runtime's queue listens.

A task names its runtime (``metadata.runtime``) or, when it does not, the checkpoint it wants
(``alwayson_scripts.sd_model_checkpoint``, ``override_settings.sd_model_checkpoint``, a ComfyUI
checkpoint loader's ``ckpt_name``); each runtime declares the checkpoints it serves. The API
resolves the one runtime at submit time (:func:`resolve_route`) and publishes the task with the
attributes of :meth:`Route.attributes`; each runtime's queue subscribes with
:func:`filter_policy`. The two are written together here because only together do they put every
task on exactly one queue:

- a task that names its runtime carries ``runtime``: the runtime branch of that runtime's policy
  matches; every model branch requires ``runtime`` to be absent, so no other queue gets it, even
  when the checkpoint it names is served elsewhere too;
- a task routed by its checkpoint carries ``model`` only when exactly one runtime (of any type)
  declares that checkpoint, so exactly one model branch matches; otherwise (the checkpoint is
  declared by a runtime of another type as well, or the task names several checkpoints) it
  carries the resolved ``runtime`` instead;
- a task whose checkpoint several runtimes able to run it declare is refused at submit
  (``ambiguous_model``), and so is one that no such runtime declares (``unknown_model``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sdeks.contract.codes import ErrorCode, routing_error
from sdeks.contract.content import TASKTYPES_BY_RUNTIME_TYPE

RUNTIME_ATTRIBUTE = "runtime"
"""Tasks-topic message attribute: the runtime the task named or resolved to."""
MODEL_ATTRIBUTE = "model"
"""Tasks-topic message attribute: the declared checkpoint the task names."""
TASKTYPE_ATTRIBUTE = "tasktype"

CHECKPOINT_SUFFIXES = (".safetensors", ".ckpt")
MAX_MODELS_PER_RUNTIME = 9
"""A runtime's policy must stay within SNS's 150 filter combinations. moto counts the ``$or``
policy below as 16 × the number of models (AWS counts less), and local mode must accept what
``cdk deploy`` creates."""


def checkpoint_key(name: str) -> str:
    """The name a checkpoint is matched by, as AUTOMATIC1111 matches one.

    A1111 accepts a checkpoint's title with or without its ``[hash]``, and its model name
    (the file name without extension): ``v1-5.safetensors [6ce0161689]``, ``v1-5.safetensors``
    and ``v1-5`` are one checkpoint.
    """
    key = name.strip()
    if " [" in key and key.endswith("]"):
        key = key[: key.rindex(" [")]
    for suffix in CHECKPOINT_SUFFIXES:
        if key.endswith(suffix) and len(key) > len(suffix):
            return key[: -len(suffix)]
    return key


@dataclass(frozen=True)
class NamedCheckpoint:
    """A checkpoint a task asks for, and the request field that asks for it."""

    field: str
    name: str


def named_checkpoints(content: Any) -> tuple[NamedCheckpoint, ...]:
    """Every checkpoint the content names (A1111 fields or ComfyUI loader nodes), in request order."""
    found: list[NamedCheckpoint] = []
    scripts = getattr(content, "alwayson_scripts", None)
    if scripts is not None and scripts.sd_model_checkpoint:
        found.append(NamedCheckpoint("task.content.alwayson_scripts.sd_model_checkpoint", scripts.sd_model_checkpoint))
    extra = getattr(content, "model_extra", None) or {}
    override = extra.get("override_settings")
    if isinstance(override, dict) and isinstance(override.get("sd_model_checkpoint"), str):
        name = override["sd_model_checkpoint"]
        if name.strip():
            found.append(NamedCheckpoint("task.content.override_settings.sd_model_checkpoint", name))
    nodes = getattr(content, "root", None)
    if isinstance(nodes, dict):
        for node_id, node in nodes.items():
            name = node.inputs.get("ckpt_name")
            if isinstance(name, str) and name.strip():  # a link ([node, slot]) names no file
                found.append(NamedCheckpoint(f"task.content.{node_id}.inputs.ckpt_name", name))
    return tuple(found)


@dataclass(frozen=True)
class Route:
    """Where a task goes and the tasks-topic attributes that take it there."""

    runtime: str
    tasktype: str
    model: str | None = None
    """The declared checkpoint (as the config spells it) the task names, when it names one."""
    by_model: bool = False
    """SNS routes this task by ``model`` alone (no ``runtime`` attribute)."""

    def attributes(self) -> dict[str, str]:
        attributes = {TASKTYPE_ATTRIBUTE: self.tasktype}
        if not self.by_model:
            attributes[RUNTIME_ATTRIBUTE] = self.runtime
        if self.model is not None:
            attributes[MODEL_ATTRIBUTE] = self.model
        return attributes


def filter_policy(runtime: str, models: Sequence[str]) -> dict[str, Any]:
    """The tasks-topic subscription filter of a runtime's queue: its name, or its models when no runtime is named."""
    by_runtime: dict[str, Any] = {RUNTIME_ATTRIBUTE: [runtime]}
    if not models:
        return by_runtime
    by_model = {RUNTIME_ATTRIBUTE: [{"exists": False}], MODEL_ATTRIBUTE: list(models)}
    return {"$or": [by_runtime, by_model]}


def _declared(models: Sequence[str], key: str) -> str | None:
    return next((m for m in models if checkpoint_key(m) == key), None)


def resolve_route(
    runtime: str | None,
    tasktype: str,
    checkpoints: Sequence[NamedCheckpoint],
    runtimes: Mapping[str, str],
    models: Mapping[str, Sequence[str]],
) -> Route:
    """The runtime of a task, or a validation error typed with an :class:`ErrorCode`.

    ``runtimes`` is ``{name: runtime type}``, ``models`` ``{name: declared checkpoints}``.
    """
    keys = list(dict.fromkeys(checkpoint_key(c.name) for c in checkpoints))
    if runtime is not None:
        _check_runtime(runtime, tasktype, runtimes)
        model = _declared(models.get(runtime, ()), keys[0]) if len(keys) == 1 else None
        return Route(runtime, tasktype, model)
    if not checkpoints:
        raise routing_error(
            ErrorCode.UNKNOWN_RUNTIME,
            "the task names neither a runtime (metadata.runtime) nor a checkpoint; configured runtimes: "
            + ", ".join(sorted(runtimes)),
        )
    able = sorted(name for name, kind in runtimes.items() if tasktype in TASKTYPES_BY_RUNTIME_TYPE[kind])
    available = {name: list(models.get(name, ())) for name in able}
    candidates = [name for name in able if all(_declared(available[name], key) for key in keys)]
    named = ", ".join(repr(c.name) for c in checkpoints)
    field = checkpoints[0].field
    if not candidates:
        listing = "; ".join(f"{name}: {', '.join(ms) or 'none declared'}" for name, ms in available.items())
        raise routing_error(
            ErrorCode.UNKNOWN_MODEL,
            f"no runtime that serves {tasktype!r} declares checkpoint {named}; "
            f"checkpoints by runtime: {listing or 'no runtime serves this tasktype'}",
            field=field,
            available=available,
        )
    if len(candidates) > 1:
        raise routing_error(
            ErrorCode.AMBIGUOUS_MODEL,
            f"checkpoint {named} is served by runtimes {', '.join(candidates)}; name one in metadata.runtime",
            field=field,
            available={name: available[name] for name in candidates},
        )
    chosen = candidates[0]
    if len(keys) != 1:
        return Route(chosen, tasktype)
    model = _declared(available[chosen], keys[0])
    owners = [name for name in runtimes if _declared(models.get(name, ()), keys[0])]
    return Route(chosen, tasktype, model, by_model=owners == [chosen])


def _check_runtime(name: str, tasktype: str, runtimes: Mapping[str, str]) -> None:
    if name not in runtimes:
        raise routing_error(
            ErrorCode.UNKNOWN_RUNTIME,
            f"unknown runtime {name!r}; configured runtimes: {', '.join(sorted(runtimes))}",
        )
    allowed = TASKTYPES_BY_RUNTIME_TYPE[runtimes[name]]
    if tasktype not in allowed:
        raise routing_error(
            ErrorCode.UNSUPPORTED_TASKTYPE,
            f"runtime {name!r} is of type {runtimes[name]!r} and cannot serve tasktype "
            f"{tasktype!r}; it serves: {', '.join(allowed)}",
        )
