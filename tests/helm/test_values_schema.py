"""The chart's values.schema.json bounds what it takes from the config exactly as the config schema does.

Both directions: a config that validates renders (no helm failure in the middle of ``cdk deploy``), and
a chart value a user sets by hand is held to the same rules the config would apply. The comparison is
by JSON Schema keyword, for every chart value that :data:`CONFIG_SOURCES` says is copied from the
config; a further test makes sure no value of :func:`helm_values` escapes that table.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from sdeks.config import Config, load_config, resource_layout
from sdeks.config.helm_values import CHART_DIR, CONFIG_SOURCES, RESOURCE_VALUES, helm_values
from sdeks.contract.task import RUNTIME_NAME_PATTERN
from tests.fixtures.helm import REPO
from tests.helm.bounds import bounds

CHART_SCHEMA = json.loads((CHART_DIR / "values.schema.json").read_text())
CONFIG_SCHEMA = Config.model_json_schema()

FIXED_VALUES = {
    "fullnameOverride": "the release name, from resource_layout()",
    "serviceAccount.name": "from resource_layout(); the Pod Identity association targets it",
    "serviceAccount.create": "the chart creates the ServiceAccount",
    "runtime.port": "the runtime's port inside the pod",
    "agent.metricsPort": "the agent's metrics port inside the pod",
    "models.source": "the cloud always mounts the model bucket",
    "scaling.enabled": "KEDA is installed by the stack",
    "nodePool.enabled": "Karpenter is installed by the stack",
}
"""Chart values that are neither copied from the config nor resource names."""


def _deref(node: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in node:
        node = CONFIG_SCHEMA["$defs"][node["$ref"].rsplit("/", 1)[-1]]
    return node


def config_field_schema(path: str) -> dict[str, Any]:
    """JSON Schema of a config field: ``runtimes[].scaling.min_replicas`` → the field of one runtime."""
    node = CONFIG_SCHEMA
    for part in path.split("."):
        node = _deref(_deref(node)["properties"][part.removesuffix("[]")])
        if part.endswith("[]"):
            node = _deref(node["items"])
    return node


def chart_value_schema(path: str) -> dict[str, Any]:
    node = CHART_SCHEMA
    for part in path.split("."):
        node = node["properties"][part]
    return node


@pytest.mark.parametrize("chart_path", sorted(CONFIG_SOURCES))
def test_chart_bounds_equal_config_bounds(chart_path):
    config_path = CONFIG_SOURCES[chart_path]
    chart = bounds(chart_value_schema(chart_path))
    config = bounds(config_field_schema(config_path), CONFIG_SCHEMA["$defs"])
    assert chart == config, f"{chart_path} (chart) vs {config_path} (config)"
    assert chart, f"{chart_path}: no bounds at all"


def test_runtime_name_pattern_is_the_contracts():
    assert chart_value_schema("runtime.name")["pattern"] == RUNTIME_NAME_PATTERN


def _leaves(node: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in node.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict) and value and path not in CONFIG_SOURCES:
            out |= _leaves(value, f"{path}.")
        else:
            out[path] = value
    return out


def _config_value(config: Config, runtime_name: str, path: str) -> Any:
    node: Any = config
    for part in path.split("."):
        node = config.runtime(runtime_name) if part == "runtimes[]" else getattr(node, part)
    return node


@pytest.mark.parametrize("config_file", sorted(p.name for p in (REPO / "config").glob("*.yaml")))
def test_every_chart_value_is_accounted_for_and_copied_as_declared(config_file):
    config = load_config(REPO / "config" / config_file, environ={})
    resources = {arg: f"<{arg}>" for arg in set(RESOURCE_VALUES.values())}
    for runtime in config.runtimes:
        leaves = _leaves(helm_values(config, runtime, **resources))
        declared = set(CONFIG_SOURCES) | set(RESOURCE_VALUES) | set(FIXED_VALUES)
        assert set(leaves) == declared, f"undeclared {set(leaves) - declared}, stale {declared - set(leaves)}"
        for chart_path, config_path in CONFIG_SOURCES.items():
            want = _config_value(config, runtime.name, config_path)
            got = leaves[chart_path]
            if isinstance(want, dict):  # tags: the project's tag is added
                assert want.items() <= got.items(), chart_path
            else:
                assert got == ("" if want is None else want), chart_path
        for chart_path, argument in RESOURCE_VALUES.items():
            assert leaves[chart_path] == f"<{argument}>", chart_path
        release = resource_layout(config).release_for(runtime.name)
        assert leaves["fullnameOverride"] == release.release_name
        assert leaves["serviceAccount.name"] == release.service_account


def _set(data: dict[str, Any], path: str, value: Any) -> None:
    *parents, last = path.replace("runtimes[].", "runtimes.0.").split(".")
    for part in parents:
        data = data[int(part)] if part.isdigit() else data.setdefault(part, {})
    data[last] = value


@pytest.mark.parametrize("edge", ["minimum", "maximum"])
def test_config_at_its_numeric_bounds_renders(edge, helm_template):
    """Every numeric field the chart takes, at the config's own bound, passes the chart (real helm)."""
    data: dict[str, Any] = {"runtimes": [{"name": "edge"}]}
    for config_path in CONFIG_SOURCES.values():
        field = config_field_schema(config_path)
        if edge in field:
            _set(data, config_path, field[edge])
    config = Config.model_validate(data)
    values = helm_values(
        config,
        config.runtimes[0],
        queue_url="https://sqs.us-west-2.amazonaws.com/123456789012/sdeks-edge",
        output_bucket="sdeks-output-123456789012",
        results_topic_arn="arn:aws:sns:us-west-2:123456789012:sdeks-results",
        task_table="sdeks-tasks",
        region="us-west-2",
        model_bucket="sdeks-models-123456789012",
        cluster_name="sdeks",
        node_role="sdeks-gpu-node",
        agent_image="123456789012.dkr.ecr.us-west-2.amazonaws.com/queue-agent:1.0",
        runtime_image="123456789012.dkr.ecr.us-west-2.amazonaws.com/sd-runtime:1.0",
    )
    result = helm_template(values, base=False)
    assert result.one("ScaledObject")["spec"]["maxReplicaCount"] == config.runtimes[0].scaling.max_replicas
