"""Validate and execute an API-format workflow, as ComfyUI's ``execution.py`` does.

Validation (on the event loop, before anything is queued) follows ComfyUI: every
node needs a known ``class_type``; the graph needs at least one output node
(SaveImage, PreviewImage); each output's inputs are checked recursively — required
inputs present, links ``[node_id, output_index]`` pointing at existing nodes and
outputs of the right type, constants converted and within ``min``/``max`` or in
the combo list — and only the nodes that feed a valid output are run. Errors have
ComfyUI's shape: ``{"error": {type, message, details, extra_info}, "node_errors":
{node_id: {"errors": [...], "dependent_outputs": [...], "class_type": ...}}}``.

Execution (on the engine's worker thread) runs the plan's nodes in topological
order, skipping those whose outputs the cache holds (:mod:`.cache`); outputs are passed
by reference, so nodes never modify their inputs.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sd_runtime.comfyui.cache import NodeCache, signatures
from sd_runtime.comfyui.nodes import NODES, Context, NodeDef


def _err(kind: str, message: str, details: str = "", **extra: Any) -> dict[str, Any]:
    return {"type": kind, "message": message, "details": details, "extra_info": extra}


class PromptError(Exception):
    """The workflow is rejected: HTTP 400 with ``body``."""

    def __init__(self, error: dict[str, Any], node_errors: dict[str, Any] | None = None):
        super().__init__(error["message"])
        self.body = {"error": error, "node_errors": node_errors or {}}


@dataclass
class Plan:
    """A validated workflow: the nodes to run, in order, with converted constant inputs."""

    prompt: dict[str, Any]
    outputs: list[str]
    order: list[str]
    inputs: dict[str, dict[str, Any]] = field(default_factory=dict)
    node_errors: dict[str, Any] = field(default_factory=dict)


def is_link(value: Any) -> bool:
    return isinstance(value, list)


def _convert(name: str, value: Any, spec: tuple[Any, dict[str, Any]], state: Any) -> tuple[Any, dict | None]:
    """A constant input converted to its type, or an error in ComfyUI's shape."""
    kind, opts = spec
    if callable(kind):
        kind = kind(state)
    if isinstance(kind, list):  # combo
        if value not in kind and not _combo_extra(name, value, state):
            shown = kind if len(kind) <= 50 else [*kind[:50], "…"]
            return None, _err(
                "value_not_in_list",
                "Value not in list",
                f"{name}: '{value}' not in {shown}",
                input_name=name,
                input_config=[shown],
                received_value=value,
            )
        return value, None
    try:
        if kind == "INT":
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise ValueError(value)
            converted: Any = int(value)
        elif kind == "FLOAT":
            converted = float(value)
            if not math.isfinite(converted):
                raise ValueError(value)
        elif kind == "STRING":
            if not isinstance(value, str | int | float):
                raise ValueError(value)
            converted = str(value)
        elif kind == "BOOLEAN":
            if not isinstance(value, bool):
                raise ValueError(value)
            converted = value
        else:  # a node type (MODEL, LATENT...) given as a constant
            return None, _err(
                "invalid_input_type",
                f"Input {name} must be a link to a {kind} output, not a constant",
                f"{name}: {str(value)[:100]!r}",
                input_name=name,
            )
    except (TypeError, ValueError, OverflowError):
        return None, _err(
            "invalid_input_type",
            f"Failed to convert an input value to a {kind} value",
            f"{name}, {str(value)[:100]}",
            input_name=name,
            received_value=str(value)[:100],
        )
    if "min" in opts and converted < opts["min"]:
        return None, _err(
            "value_smaller_than_min",
            f"Value {converted} smaller than min of {opts['min']}",
            f"{name}",
            input_name=name,
            received_value=converted,
        )
    if "max" in opts and converted > opts["max"]:
        return None, _err(
            "value_bigger_than_max",
            f"Value {converted} bigger than max of {opts['max']}",
            f"{name}",
            input_name=name,
            received_value=converted,
        )
    return converted, None


def _combo_extra(name: str, value: Any, state: Any) -> bool:
    """Combo values accepted beyond the listed ones: inline base64 images and annotated input names."""
    if name == "image" and isinstance(value, str):
        return state.files.load_input(value) is not None
    if name == "ckpt_name" and isinstance(value, str):
        from sd_runtime.comfyui.nodes import find_checkpoint

        return find_checkpoint(state.engine, value) is not None
    if name == "lora_name" and isinstance(value, str):  # the stem, as A1111 names it, as well as the file
        return any(value == ref.name for ref in state.engine.loras())
    if name == "vae_name" and isinstance(value, str):
        return any(value == f.name for f in state.engine.vaes())
    return False


def _check_nodes(prompt: Any) -> None:
    """Every node is an object with a known ``class_type``; unknown types are all listed at once."""
    if not isinstance(prompt, dict) or not prompt:
        raise PromptError(_err("invalid_prompt", "Prompt must be a non-empty object of node id → node", ""))
    unknown: dict[str, Any] = {}
    for node_id, node in prompt.items():
        if not isinstance(node, dict) or "class_type" not in node:
            raise PromptError(
                _err(
                    "invalid_prompt",
                    "Cannot execute because a node is missing the class_type property.",
                    f"Node ID '#{node_id}'",
                )
            )
        if not isinstance(node.get("inputs", {}), dict):
            raise PromptError(_err("invalid_prompt", "Node inputs must be an object.", f"Node ID '#{node_id}'"))
        class_type = node["class_type"]
        if not isinstance(class_type, str) or class_type not in NODES:
            unknown[str(node_id)] = {
                "errors": [
                    _err(
                        "invalid_node_type",
                        f"Node type {class_type!r} is not supported by this runtime",
                        f"supported: {', '.join(sorted(NODES))}",
                        supported=sorted(NODES),
                    )
                ],
                "dependent_outputs": [],
                "class_type": class_type,
            }
    if unknown:
        first_id, first = next(iter(unknown.items()))
        raise PromptError(
            _err(
                "invalid_prompt",
                f"Cannot execute because node {first['class_type']} does not exist.",
                f"Node ID '#{first_id}'",
                supported=sorted(NODES),
            ),
            unknown,
        )


def _link_error(name: str, value: list[Any], prompt: dict[str, Any], want: Any) -> dict[str, Any] | None:
    """Why the link ``value`` cannot feed input ``name`` (of type ``want``), or None when it can."""
    if len(value) != 2 or not isinstance(value[1], int) or isinstance(value[1], bool):
        return _err(
            "bad_linked_input",
            "Bad linked input, must be a length-2 list of [node_id, slot_index]",
            f"{name}",
            input_name=name,
            received_value=str(value)[:100],
        )
    src, slot = str(value[0]), value[1]
    if src not in prompt:
        return _err(
            "bad_linked_input",
            f"Input {name} links to node '#{src}', which does not exist",
            f"{name}: [{value[0]!r}, {slot}]",
            input_name=name,
            linked_node=src,
        )
    src_def = NODES[prompt[src]["class_type"]]
    if not 0 <= slot < len(src_def.outputs):
        return _err(
            "bad_linked_input",
            f"Input {name} links to output {slot} of node '#{src}' ({src_def.name}), "
            f"which has {len(src_def.outputs)} output(s) {list(src_def.outputs)}",
            f"{name}: [{value[0]!r}, {slot}]",
            input_name=name,
            linked_node=src,
        )
    got = src_def.outputs[slot]
    if isinstance(want, str) and want != got:
        return _err(
            "return_type_mismatch",
            "Return type mismatch between linked nodes",
            f"{name}, received_type({got}) mismatch input_type({want})",
            input_name=name,
            received_type=got,
            linked_node=src,
        )
    return None


class _Checker:
    """ComfyUI's recursive input check from each output node: errors per node, converted inputs per node."""

    def __init__(self, prompt: dict[str, Any], state: Any):
        self.prompt, self.state = prompt, state
        self.errors: dict[str, list[dict[str, Any]]] = {}
        self.converted: dict[str, dict[str, Any]] = {}
        self.valid: dict[str, bool] = {}
        self.visiting: set[str] = set()

    def check(self, nid: str) -> bool:
        """Whether node ``nid`` and everything it depends on is valid (memoized)."""
        if nid in self.valid:
            return self.valid[nid]
        if nid in self.visiting:
            self.errors.setdefault(nid, []).append(
                _err("dependency_cycle", "Dependency cycle detected", f"node #{nid} depends on itself")
            )
            return False
        self.visiting.add(nid)
        mine, values, ok = self._check_inputs(nid)
        self.visiting.discard(nid)
        if mine:
            self.errors.setdefault(nid, []).extend(mine)
            ok = False
        self.converted[nid] = values
        self.valid[nid] = ok
        return ok

    def _check_inputs(self, nid: str) -> tuple[list[dict[str, Any]], dict[str, Any], bool]:
        """(this node's own errors, its converted inputs, whether its upstream nodes are valid)."""
        ndef: NodeDef = NODES[self.prompt[nid]["class_type"]]
        inputs = self.prompt[nid].get("inputs") or {}
        mine: list[dict[str, Any]] = []
        values: dict[str, Any] = {}
        upstream_ok = True
        for name in [*ndef.required, *(k for k in ndef.optional if k in inputs)]:
            spec = ndef.input_spec(name)
            assert spec is not None
            if name not in inputs:
                mine.append(_err("required_input_missing", "Required input is missing", f"{name}", input_name=name))
                continue
            value = inputs[name]
            if is_link(value):
                error = _link_error(name, value, self.prompt, spec[0])
                if error is None:
                    upstream_ok = self.check(str(value[0])) and upstream_ok
                    values[name] = (str(value[0]), value[1])
            else:
                values[name], error = _convert(name, value, spec, self.state)
            if error:
                mine.append(error)
                values.pop(name, None)
        if ndef.validate_inputs is not None and not mine:
            for name, reason in ndef.validate_inputs(values):
                mine.append(_err("custom_validation_failed", reason, name, input_name=name))
        return mine, values, upstream_ok


def _run_order(good: list[str], converted: dict[str, dict[str, Any]]) -> list[str]:
    """The nodes feeding ``good`` outputs, each after the nodes it links to (depth-first topological order)."""
    order: list[str] = []
    seen: set[str] = set()

    def visit(nid: str) -> None:
        if nid in seen:
            return
        seen.add(nid)
        for value in converted[nid].values():
            if isinstance(value, tuple):
                visit(value[0])
        order.append(nid)

    for out in good:
        visit(out)
    return order


def validate(prompt: Any, state: Any) -> Plan:
    """A :class:`Plan` for ``prompt`` or :class:`PromptError` (ComfyUI's ``validate_prompt``)."""
    _check_nodes(prompt)
    outputs = [nid for nid, node in prompt.items() if NODES[node["class_type"]].output_node]
    if not outputs:
        raise PromptError(_err("prompt_no_outputs", "Prompt has no outputs", ""))
    checker = _Checker(prompt, state)
    good: list[str] = []
    dependents: dict[str, list[str]] = {}
    for out in outputs:
        if checker.check(out):
            good.append(out)
        # every failing node in this output's subtree lists the output as dependent
        for nid in _ancestors(out, prompt):
            if nid in checker.errors:
                dependents.setdefault(nid, []).append(out)
    node_errors = {
        nid: {"errors": errs, "dependent_outputs": dependents.get(nid, []), "class_type": prompt[nid]["class_type"]}
        for nid, errs in checker.errors.items()
    }
    if not good:
        raise PromptError(
            _err("prompt_outputs_failed_validation", "Prompt outputs failed validation", _summary(node_errors)),
            node_errors,
        )
    order = _run_order(good, checker.converted)
    return Plan(prompt=prompt, outputs=good, order=order, inputs=checker.converted, node_errors=node_errors)


def _summary(node_errors: dict[str, Any]) -> str:
    """One line naming each failing node and its first error: clients that only read ``error`` see the cause."""
    parts = []
    for nid, entry in node_errors.items():
        first = entry["errors"][0]
        detail = first["details"] if len(first["details"]) <= 80 else first["details"][:80] + "…"
        parts.append(f"#{nid} {entry['class_type']}: {first['message']}" + (f" ({detail})" if detail else ""))
    return "; ".join(parts)


def _ancestors(nid: str, prompt: dict[str, Any]) -> set[str]:
    seen: set[str] = set()
    stack = [nid]
    while stack:
        cur = stack.pop()
        if cur in seen or cur not in prompt:
            continue
        seen.add(cur)
        for value in (prompt[cur].get("inputs") or {}).values():
            if is_link(value) and len(value) == 2:
                stack.append(str(value[0]))
    return seen


class NodeFailed(Exception):  # noqa: N818
    def __init__(self, node_id: str, node_type: str, exc: BaseException, executed: list[str]):
        super().__init__(str(exc))
        self.node_id, self.node_type, self.exc, self.executed = node_id, node_type, exc, executed


def execute(
    plan: Plan,
    ctx: Context,
    on_executing: Callable[[str], None],
    on_executed: Callable[[str, dict[str, Any]], None],
    on_cached: Callable[[list[str]], None],
    cache: NodeCache,
) -> dict[str, dict[str, Any]]:
    """Run the plan on the calling (worker) thread; return ``{node_id: ui output}`` of the output nodes.

    Nodes whose outputs ``cache`` holds are not run (``on_cached`` lists them first), nor is
    anything only they need; afterwards the cache holds this prompt's outputs. A failing
    node raises :class:`NodeFailed` (with the nodes executed before it).
    """
    sigs = signatures(plan.prompt, plan.order, plan.inputs, ctx)
    results: dict[str, tuple] = {}
    for nid in plan.order:
        hit = None if NODES[plan.prompt[nid]["class_type"]].output_node else cache.get(sigs[nid])
        if hit is not None:
            results[nid] = hit
    on_cached([nid for nid in plan.order if nid in results])
    needed: set[str] = set()
    stack = list(plan.outputs)
    while stack:
        nid = stack.pop()
        if nid in needed or nid in results:
            continue
        needed.add(nid)
        stack.extend(v[0] for v in plan.inputs[nid].values() if isinstance(v, tuple))
    ui: dict[str, dict[str, Any]] = {}
    executed: list[str] = []
    try:
        for nid in plan.order:
            if nid not in needed:
                continue
            node_type = plan.prompt[nid]["class_type"]
            ndef = NODES[node_type]
            ctx.node_id = nid
            on_executing(nid)
            kwargs = {n: (results[v[0]][v[1]] if isinstance(v, tuple) else v) for n, v in plan.inputs[nid].items()}
            try:
                ctx.check_interrupt()
                out = ndef.fn(ctx, **kwargs)
            except Exception as exc:
                raise NodeFailed(nid, node_type, exc, executed) from exc
            results[nid] = out
            executed.append(nid)
            if ndef.output_node and out and isinstance(out[0], dict) and "ui" in out[0]:
                ui[nid] = out[0]["ui"]
                on_executed(nid, out[0]["ui"])
    finally:
        kept = [nid for nid in plan.order if nid in results and not NODES[plan.prompt[nid]["class_type"]].output_node]
        cache.replace({sigs[nid]: results[nid] for nid in kept})
    return ui
