"""Deployment configuration: the shipped files load, bad files fail naming key and reason."""

from __future__ import annotations

from pathlib import Path

import pytest

from sdeks.config import ConfigError, load_config, parse_config, resource_layout

ROOT = Path(__file__).resolve().parents[2]


def test_default_config_loads():
    config = load_config(ROOT / "config" / "default.yaml", environ={})
    assert config.runtime_types == {"sdruntime": "sdwebui"}
    assert config.runtimes[0].scaling.min_replicas == 0


def test_two_runtime_example_loads_with_its_layout():
    config = load_config(ROOT / "config" / "two-runtimes.yaml", environ={})
    layout = resource_layout(config)
    assert [q.queue_name for q in layout.runtimes] == ["sdeks-sd15", "sdeks-comfy"]
    assert layout.queues_for("comfy").filter_policy == {
        "$or": [
            {"runtime": ["comfy"]},
            {"runtime": [{"exists": False}], "model": ["v1-5-pruned-emaonly.safetensors"]},
        ]
    }
    assert layout.queues_for("comfy").max_receive_count == 2


def test_environment_overrides_per_deployment_values():
    config = load_config(
        ROOT / "config" / "default.yaml", environ={"SDEKS_PROJECT": "team-a", "SDEKS_REGION": "eu-west-1"}
    )
    assert (config.project, config.region) == ("team-a", "eu-west-1")
    assert resource_layout(config).tasks_topic_name == "team-a-tasks"


@pytest.mark.parametrize(
    ("data", "key", "reason"),
    [
        ({}, "runtimes", "Field required"),
        ({"runtimes": []}, "runtimes", "at least 1"),
        ({"runtimes": [{"name": "A_B"}]}, "runtimes[0].name", "pattern"),
        ({"runtimes": [{"name": "a", "type": "invokeai"}]}, "runtimes[0].type", "sdwebui"),
        ({"runtimes": [{"name": "a"}, {"name": "a"}]}, "runtimes", "repeated: a"),
        (
            {"runtimes": [{"name": "a", "scaling": {"min_replicas": 3, "max_replicas": 1}}]},
            "runtimes[0].scaling",
            "max_replicas (1) must be >= min_replicas (3)",
        ),
        ({"runtimes": [{"name": "a", "max_recieve_count": 3}]}, "runtimes[0].max_recieve_count", "not permitted"),
        (
            {"runtimes": [{"name": "a", "gpu": {"instance_families": ["m5"]}}]},
            "runtimes[0].gpu.instance_families",
            "not a GPU instance family",
        ),
        (
            {"runtimes": [{"name": "a", "gpu": {"capacity_types": ["reserved"]}}]},
            "runtimes[0].gpu.capacity_types[0]",
            "spot",
        ),
        (
            {"runtimes": [{"name": "a"}], "api": {"throttle": {"rate_limit": 0}}},
            "api.throttle.rate_limit",
            "greater than 0",
        ),
        (
            {"runtimes": [{"name": "a"}], "inputs": {"allowed_hosts": ["10.0.0.1"]}},
            "inputs.allowed_hosts",
            "IP addresses are never allowed",
        ),
        ({"runtimes": [{"name": "a"}], "output": {"bucket": "Bad_Bucket"}}, "output.bucket", "pattern"),
        (
            {"runtimes": [{"name": "a", "gpu": {"instance_families": ["g5", "g5"]}}]},
            "runtimes[0].gpu.instance_families",
            "repeated: g5",
        ),
        (
            {"runtimes": [{"name": "a"}], "tags": {"karpenter.sh/nodepool": "x"}},
            "tags",
            "reserved for the nodes' own tags",
        ),
        ({"runtimes": [{"name": "a"}], "tags": {"team": ""}}, "tags.team", "at least 1 character"),
        (
            {"runtimes": [{"name": "a"}], "inputs": {"allowed_hosts": ["*.example.1"]}},
            "inputs.allowed_hosts",
            "IP addresses are never allowed",
        ),
    ],
)
def test_bad_config_names_key_and_reason(data, key, reason):
    with pytest.raises(ConfigError) as info:
        parse_config(data, "test.yaml", environ={})
    message = str(info.value)
    assert message.startswith("test.yaml: invalid configuration")
    assert f"  {key}: " in message and reason in message, message


def test_unreadable_and_non_yaml_files_fail_clearly(tmp_path):
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("runtimes: [\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
    scalar = tmp_path / "scalar.yaml"
    scalar.write_text("42\n")
    with pytest.raises(ConfigError, match="must be a mapping"):
        load_config(scalar)


def test_layout_names_every_cluster_resource_once():
    config = load_config(ROOT / "config" / "two-runtimes.yaml", environ={"SDEKS_PROJECT": "team-a"})
    layout = resource_layout(config)
    assert (layout.cluster_name, layout.namespace) == ("team-a", "team-a")
    assert layout.interruption_queue_name == "team-a-karpenter"
    assert layout.system_nodegroup_name == "team-a-system"
    assert [r.release_name for r in layout.releases] == ["team-a-sd15", "team-a-comfy"]
    assert layout.release_for("comfy").service_account == "team-a-comfy"
    assert layout.local_output_bucket == "team-a-output"
    with pytest.raises(KeyError):
        layout.release_for("nope")
