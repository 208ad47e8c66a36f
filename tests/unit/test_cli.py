"""The CLI's own error paths: a clear message and a non-zero exit, never a traceback."""

from __future__ import annotations

import json

import pytest

from sdeks.cli.task_cmd import build_request
from tests.fixtures.aws import free_port
from tests.fixtures.cli import run


def test_submit_without_a_stack_says_how_to_get_one(in_tmp):
    result = run("submit", "--prompt", "x")
    assert result.exit_code == 1 and "sdeks local up" in result.output


def test_unreachable_api_is_a_clear_error(in_tmp):
    url = f"http://127.0.0.1:{free_port()}"
    result = run("status", "abc", "--api-url", url, "--api-key", "k")
    assert result.exit_code == 1 and "cannot reach the API" in result.output


@pytest.mark.parametrize(
    ("content", "message"),
    [(None, "cannot read"), ("{not json", "not valid JSON"), ("[1]", "must hold")],
)
def test_bad_task_files_are_explained(in_tmp, content, message):
    if content is not None:
        (in_tmp / "task.json").write_text(content)
    result = run("submit", "task.json", "--api-url", "http://127.0.0.1:1", "--api-key", "k")
    assert result.exit_code == 1 and message in result.output


def test_flags_override_the_task_file(in_tmp):
    task = in_tmp / "task.json"
    task.write_text(
        json.dumps({"task": {"metadata": {"runtime": "a", "tasktype": "text-to-image"}, "content": {"prompt": "p"}}})
    )
    body = build_request(task, None, "b", None, "s3://bucket/in.png", "my-id", 5, 128)
    assert body["task"]["metadata"] == {"runtime": "b", "tasktype": "image-to-image", "id": "my-id"}
    assert body["task"]["content"] == {
        "prompt": "p",
        "steps": 5,
        "width": 128,
        "height": 128,
        "init_images": ["s3://bucket/in.png"],
    }


def test_local_down_without_a_stack_is_harmless(in_tmp):
    result = run("local", "down")
    assert result.exit_code == 0 and "no local stack is running" in result.output


def test_local_up_with_a_bad_config_names_the_key(in_tmp):
    (in_tmp / "bad.yaml").write_text("runtimes: [{name: a, scaling: {max_replicas: 0}}]\n")
    result = run("local", "up", "--config", "bad.yaml")
    assert result.exit_code == 2 and "runtimes[0].scaling.max_replicas" in result.output
