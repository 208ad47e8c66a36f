"""Hardening at the agent, through the real agent process, the moto server and a runtime."""

from __future__ import annotations

import json
import time

import pytest

from tests.fixtures.agent import task_message

pytestmark = pytest.mark.slow


def _nested(depth: int) -> object:
    value: object = "x"
    for _ in range(depth):
        value = {"a": value}
    return value


def test_too_deep_message_fails_at_once_and_never_reaches_the_runtime(stack, fake_runtime, start_agent):
    """A message that bypassed the API's depth check (same limit) fails permanently, named, not retried."""
    start_agent(stack.resources, fake_runtime.url)
    msg = task_message({"prompt": "a cat", "steps": 2, "width": 64, "height": 64, "extension_args": _nested(60)})
    stack.send_raw(json.dumps(msg))
    (event,) = stack.wait_events(msg["id"])
    assert event["status"] == "failed" and "at most 32" in event["error"]
    assert fake_runtime.generation_calls() == []
    deadline = time.monotonic() + 10
    while stack.queue_counts() != (0, 0) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert stack.queue_counts() == (0, 0)
    assert stack.queue_counts(stack.queue.dlq_url) == (0, 0)


def test_timed_out_task_is_stopped_and_does_not_delay_the_next(stack, sd_runtime_url, start_agent):
    """The issue's freeze: a task over any sane budget (sent past the API) times out; the agent interrupts the
    runtime, which stops within seconds even mid-step, so the next task runs instead of behind the abandoned render."""
    start_agent(stack.resources, sd_runtime_url, task_timeout_s=8)
    huge = task_message({"prompt": "x", "steps": 150, "width": 2048, "height": 2048, "batch_size": 4})
    small = task_message({"prompt": "a cat", "steps": 2, "width": 64, "height": 64, "seed": 5})
    stack.publish(huge)
    time.sleep(1.0)
    submitted = time.monotonic()
    stack.publish(small)
    (event,) = stack.wait_events(small["id"], timeout=60)
    waited = time.monotonic() - submitted
    assert event["status"] == "succeeded"
    assert waited < 8 + 20, f"the small task waited {waited:.1f}s"


def test_unknown_checkpoint_event_does_not_list_the_servers_models(stack, sd_runtime_url, start_agent):
    start_agent(stack.resources, sd_runtime_url)
    content = {
        "prompt": "x",
        "steps": 2,
        "width": 64,
        "height": 64,
        "alwayson_scripts": {"sd_model_checkpoint": "nope"},
    }
    msg = task_message(content)
    stack.publish(msg)
    (event,) = stack.wait_events(msg["id"], timeout=60)
    assert event["status"] == "failed" and "'nope' not found" in event["error"]
    assert "tiny-sd" not in event["error"]
    path_msg = task_message({**content, "alwayson_scripts": {"sd_model_checkpoint": "/etc/passwd"}})
    stack.publish(path_msg)
    (event,) = stack.wait_events(path_msg["id"], timeout=60)
    assert event["status"] == "failed" and "not by path" in event["error"]


def test_only_modelled_fields_reach_the_runtime(stack, fake_runtime, start_agent):
    """The issue's examples: an extension's image URL at the metadata address and an output dir override."""
    start_agent(stack.resources, fake_runtime.url)
    content = {
        "prompt": "a cat",
        "steps": 2,
        "width": 64,
        "height": 64,
        "enable_hr": True,
        "override_settings": {"outdir_samples": "/etc"},
        "alwayson_scripts": {"controlnet": {"args": [{"image": "http://169.254.169.254/latest/meta-data/"}]}},
    }
    msg = task_message(content)
    stack.publish(msg)
    (event,) = stack.wait_events(msg["id"])
    assert event["status"] == "succeeded"
    [(path, body)] = fake_runtime.generation_calls()
    assert path == "/sdapi/v1/txt2img"
    assert {"override_settings", "alwayson_scripts"}.isdisjoint(body)
    assert body["enable_hr"] is True  # the contract names the hires fix as applied by the runtime
    assert "169.254" not in json.dumps(body) and "/etc" not in json.dumps(body)
    info_key = event["output_url"].split("/", 3)[3]
    info = json.loads(stack.s3.get_object(Bucket=stack.resources.output_bucket, Key=info_key)["Body"].read())
    assert info["ignored_fields"] == ["override_settings.outdir_samples", "alwayson_scripts.controlnet"]


NO_SUCH_NAME = '''
import socket

_getaddrinfo = socket.getaddrinfo


def getaddrinfo(host, *args, **kwargs):
    """A resolver without the test's name (no DNS traffic leaves 127.0.0.1)."""
    if isinstance(host, str) and host.endswith(".nxdomain.test"):
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
    return _getaddrinfo(host, *args, **kwargs)


socket.getaddrinfo = getaddrinfo
'''


def test_allowed_host_that_does_not_resolve_fails_at_once(stack, fake_runtime, start_agent, tmp_path):
    (tmp_path / "sitecustomize.py").write_text(NO_SUCH_NAME)
    start_agent(
        stack.resources,
        fake_runtime.url,
        extra_env={"PYTHONPATH": str(tmp_path), "SDEKS_ALLOWED_INPUT_HOSTS": "img.nxdomain.test"},
    )
    msg = task_message({"prompt": "x", "init_images": ["https://img.nxdomain.test/a.png"]}, tasktype="image-to-image")
    stack.publish(msg)
    (event,) = stack.wait_events(msg["id"], timeout=30)
    assert event["status"] == "failed" and event["attempt"] == 1
    assert "'img.nxdomain.test' does not resolve" in event["error"]
    assert fake_runtime.generation_calls() == []
    time.sleep(2.5)
    assert stack.queue_counts() == (0, 0) and stack.queue_counts(stack.queue.dlq_url) == (0, 0)


def test_workflow_with_a_url_input_never_reaches_the_runtime(stack, fake_runtime, start_agent):
    start_agent(stack.resources, fake_runtime.url, runtime_type="comfyui")
    workflow = {
        "1": {"class_type": "LoadImageFromUrl", "inputs": {"url": "http://169.254.169.254/latest/meta-data/"}},
        "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "x"}},
    }
    msg = task_message(workflow, tasktype="pipeline")
    stack.publish(msg)
    (event,) = stack.wait_events(msg["id"])
    assert event["status"] == "failed" and "workflow input 1.url is a URL" in event["error"]
    assert fake_runtime.generation_calls() == []
