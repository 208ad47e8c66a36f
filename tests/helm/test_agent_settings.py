"""The chart sets exactly the agent's settings: every name it sets is read, every setting can be set.

Names come from the settings model itself (env prefix + field name, or the field's aliases), so a
setting added to queue_agent/settings.py without a chart value, or a chart variable the agent
no longer reads, fails here. Rendered with real helm.
"""

from __future__ import annotations

import json

import pytest
from pydantic import AliasChoices

from queue_agent import emf
from queue_agent.settings import Settings
from sdeks.config.helm_values import CHART_DIR
from tests.helm.bounds import bounds

PROCESS_ENV = {"HOME": "not a setting: the read-only root file system leaves /tmp as the home directory"}

AGENT_TUNING = {
    "agent.waitTimeSeconds": "wait_time_s",
    "agent.visibilitySeconds": "visibility_s",
    "agent.backoffBaseSeconds": "backoff_base_s",
    "agent.backoffMaxSeconds": "backoff_max_s",
    "agent.claimCheckMaxBytes": "claim_check_max_bytes",
}
"""Chart values that exist only to pass a setting through (unset = the agent's default)."""

EVERY_OPTIONAL_VALUE = {
    "runtime": {"healthPath": "/ready"},
    "agent": {
        "logLevel": "DEBUG",
        "waitTimeSeconds": 0,
        "visibilitySeconds": 90,
        "backoffBaseSeconds": 2.5,
        "backoffMaxSeconds": 600,
        "claimCheckMaxBytes": 16777216,
        "statusTtlDays": 7,
        "presignImages": True,
        "presignExpiresSeconds": 600,
    },
}


def settings_env_names() -> dict[str, set[str]]:
    """field → the environment names that set it (pydantic-settings matches them case-insensitively)."""
    prefix = Settings.model_config["env_prefix"]
    names: dict[str, set[str]] = {}
    for field_name, field in Settings.model_fields.items():
        alias = field.validation_alias
        if isinstance(alias, AliasChoices):
            names[field_name] = {c.upper() for c in alias.choices if isinstance(c, str)}
        elif isinstance(alias, str):
            names[field_name] = {alias.upper()}
        else:
            names[field_name] = {f"{prefix}{field_name}".upper()}
    return names


def agent_env(result) -> dict[str, str]:
    spec = result.one("Deployment")["spec"]["template"]["spec"]
    agent = next(c for c in spec["containers"] if c["name"] == "agent")
    return {e["name"]: e["value"] for e in agent["env"]}


def test_chart_sets_exactly_the_agents_settings(helm_template, monkeypatch):
    env = agent_env(helm_template(EVERY_OPTIONAL_VALUE))
    names = settings_env_names()
    read = set().union(*names.values())
    unread = set(env) - read - set(PROCESS_ENV)
    assert not unread, f"the chart sets variables the agent does not read: {sorted(unread)}"
    unset = sorted(field for field, aliases in names.items() if not aliases & set(env))
    assert not unset, f"settings the chart cannot set: {unset}"

    # What the chart renders is what the agent parses.
    for name in read:
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    settings = Settings()
    assert settings.runtime_health_path == "/ready"
    assert (settings.log_level, settings.wait_time_s, settings.visibility_s) == ("DEBUG", 0, 90)
    assert (settings.backoff_base_s, settings.backoff_max_s, settings.claim_check_max_bytes) == (2.5, 600, 16777216)
    assert (settings.agent_host, settings.agent_port, settings.aws_region) == ("0.0.0.0", 9095, "us-west-2")
    assert settings.status_ttl_days == 7


def test_task_metric_records_go_to_the_cloudwatch_agent_under_the_project(helm_template):
    env = agent_env(helm_template())
    assert env["SDEKS_EMF_ENDPOINT"] == emf.DEFAULT_AGENT_ENDPOINT
    assert env["SDEKS_PROJECT"] == "sdeks"  # the release namespace when no project is given
    env = agent_env(helm_template({"agent": {"project": "shop", "emfEndpoint": ""}}))
    assert env["SDEKS_PROJECT"] == "shop" and "SDEKS_EMF_ENDPOINT" not in env


def test_required_settings_are_set_by_default(helm_template):
    env = agent_env(helm_template())
    names = settings_env_names()
    required = [f for f, field in Settings.model_fields.items() if field.is_required()]
    assert required, "the agent has required settings"
    for field in required:
        assert names[field] & set(env), f"{field} has no default and the chart does not set it"


def test_tuning_values_are_left_to_the_agent_unless_given(helm_template):
    env = agent_env(helm_template())
    names = settings_env_names()
    for field in [*AGENT_TUNING.values(), "log_level"]:
        assert not names[field] & set(env), f"{field} is set although no value was given"


@pytest.mark.parametrize("chart_path", sorted(AGENT_TUNING))
def test_tuning_bounds_equal_the_agents(chart_path):
    schema = json.loads((CHART_DIR / "values.schema.json").read_text())
    node = schema
    for part in chart_path.split("."):
        node = node["properties"][part]
    field_schema = Settings.model_json_schema()["properties"][AGENT_TUNING[chart_path]]
    assert bounds(node) == bounds(field_schema), chart_path
