"""The API's configuration contract: one function builds the environment, one model reads it back."""

from __future__ import annotations

import os
from datetime import UTC, datetime

import pytest

from sdeks.api.environment import api_environment
from sdeks.api.settings import ENV_PREFIX, ApiSettings, ConfigurationError
from sdeks.contract import TASK_TABLE_TTL_ATTRIBUTE
from sdeks.tasks_table import TaskTable
from tests.fixtures.api import txt2img
from tests.fixtures.aws import stack_config

RESOURCES = {"tasks_topic_arn": "arn:aws:sns:us-east-1:123456789012:p-tasks", "task_table": "p-tasks"}


def _settings_from(env: dict[str, str], monkeypatch) -> ApiSettings:
    for name in list(os.environ):
        if name.startswith(ENV_PREFIX):
            monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return ApiSettings.from_env()


def test_environment_reads_back_as_the_config_says(monkeypatch):
    config = stack_config(
        [{"name": "sda", "type": "sdwebui", "max_work": 120.5}, {"name": "comfy", "type": "comfyui"}],
        output={"expire_days": 7},
    )
    env = api_environment(
        config,
        **RESOURCES,
        output_bucket="out",
        public_base_url="https://api.example.com/sd/",
        presign_images=True,
        presign_expires_s=600,
        queue_urls={"sda": "https://sqs.us-east-1.amazonaws.com/123456789012/p-sda"},
    )
    settings = _settings_from(env, monkeypatch)
    assert settings.queue_urls == {"sda": "https://sqs.us-east-1.amazonaws.com/123456789012/p-sda"}
    assert settings.runtimes == {"sda": "sdwebui", "comfy": "comfyui"}
    assert settings.tasks_topic_arn == RESOURCES["tasks_topic_arn"] and settings.task_table == "p-tasks"
    assert settings.output_bucket == "out"
    assert settings.status_ttl_days == 7
    assert settings.public_base_url == "https://api.example.com/sd"
    assert settings.max_work == {"sda": 120.5, "comfy": 800}
    assert settings.presign_images is True and env["SDEKS_PRESIGN_IMAGES"] == "1"
    assert settings.presign_expires_s == 600
    # every setting the handler reads is set by the one function
    assert set(env) == {ENV_PREFIX + name.upper() for name in ApiSettings.model_fields}


def test_the_callers_own_environment_does_not_leak_in(monkeypatch):
    monkeypatch.setenv("SDEKS_PRESIGN_EXPIRES_S", "5")
    monkeypatch.setenv("SDEKS_STATUS_TTL_DAYS", "1")
    env = api_environment(stack_config(), **RESOURCES, output_bucket="out")
    assert env["SDEKS_PRESIGN_EXPIRES_S"] == "3600" and env["SDEKS_STATUS_TTL_DAYS"] == "30"


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"SDEKS_RUNTIMES": "{not json"}, "runtimes"),
        ({"SDEKS_RUNTIMES": '{"a": "nope"}'}, "runtimes.a"),
        ({"SDEKS_RUNTIMES": "{}"}, "runtimes"),
        ({"SDEKS_TASK_TABLE": ""}, "task_table"),
        ({"SDEKS_PRESIGN_EXPIRES_S": "0"}, "presign_expires_s"),
        ({"SDEKS_PRESIGN_EXPIRES_S": str(8 * 24 * 3600)}, "presign_expires_s"),
        ({"SDEKS_STATUS_TTL_DAYS": "x"}, "status_ttl_days"),
        ({"SDEKS_QUEUE_URLS": '{"other": "https://sqs/q"}'}, "queue URLs of runtimes that are not configured: other"),
    ],
)
def test_a_broken_environment_names_the_setting(monkeypatch, change, named):
    env = {**api_environment(stack_config(), **RESOURCES, output_bucket="out"), **change}
    with pytest.raises(ConfigurationError, match=named):
        _settings_from(env, monkeypatch)


def test_status_row_expires_with_the_outputs(api, monkeypatch):
    """The row's TTL follows the configured output expiry (SDEKS_STATUS_TTL_DAYS), not a constant."""
    monkeypatch.setenv("SDEKS_STATUS_TTL_DAYS", "3")
    before = datetime.now(UTC).timestamp()
    assert api.submit(txt2img(task_id="ttl")).status == 202
    row = TaskTable.from_name(api.res.task_table, endpoint_url=api.res.aws_endpoint_url).get_item("ttl")
    assert before + 3 * 86400 - 5 <= int(row[TASK_TABLE_TTL_ATTRIBUTE]) <= datetime.now(UTC).timestamp() + 3 * 86400 + 5


def test_presigned_urls_follow_the_config():
    config = stack_config(
        [{"name": "sda", "type": "sdwebui"}], output={"presign_images": True, "presign_expires_s": 120}
    )
    env = api_environment(config, **RESOURCES, output_bucket="out")
    assert env["SDEKS_PRESIGN_IMAGES"] == "1" and env["SDEKS_PRESIGN_EXPIRES_S"] == "120"
    default = api_environment(stack_config([{"name": "sda", "type": "sdwebui"}]), **RESOURCES, output_bucket="out")
    assert default["SDEKS_PRESIGN_IMAGES"] == "0" and default["SDEKS_PRESIGN_EXPIRES_S"] == "3600"
