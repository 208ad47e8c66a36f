"""In-process tests of the agent's pieces: backoff, message parsing, adapters, settings."""

from __future__ import annotations

import json

import pytest

from queue_agent.adapters import Health
from queue_agent.adapters.comfyui import ComfyUIAdapter
from queue_agent.adapters.sdwebui import SdWebUIAdapter, build_payload
from queue_agent.errors import PermanentError, RuntimeUnavailable, TransientError
from queue_agent.fetch import InputFetcher
from queue_agent.finish import backoff_s
from queue_agent.messages import Rejected, Routing, Unparseable, identify, parse
from queue_agent.settings import Settings
from sdeks.local.agent_env import agent_env
from tests.fixtures.agent import PNG_B64, PNG_1x1, task_message

SDWEBUI = Routing("sdruntime", "sdwebui")


def test_backoff_doubles_and_caps():
    assert [backoff_s(n, 5, 300) for n in (1, 2, 3, 4, 7, 8, 50)] == [5, 10, 20, 40, 300, 300, 300]
    assert backoff_s(3, 0, 300) == 0
    assert backoff_s(1, 0.3, 10) == 1


def test_identify_and_parse():
    with pytest.raises(Unparseable):
        identify("not json")
    with pytest.raises(Unparseable):
        identify(json.dumps({"id": "../../etc"}))
    msg = task_message(context={"user": "u1"})
    job = parse(json.dumps(msg), SDWEBUI)
    assert job.task_id == msg["id"] and job.tasktype == "text-to-image"
    assert job.identity.context == {"user": "u1"}
    bad = task_message({"prompt": "x", "steps": 0}, context="c")
    with pytest.raises(Rejected, match="steps") as rejected:
        parse(json.dumps(bad), SDWEBUI)
    assert isinstance(rejected.value.error, PermanentError)
    assert rejected.value.identity.task_id == bad["id"] and rejected.value.identity.context == "c"
    with pytest.raises(Rejected, match="cannot serve") as rejected:
        parse(json.dumps(msg), Routing("sdruntime", "comfyui"))
    assert isinstance(rejected.value.error, PermanentError)
    with pytest.raises(Rejected, match="delivered to runtime") as rejected:
        parse(json.dumps(msg), Routing("other", "sdwebui"))
    assert isinstance(rejected.value.error, PermanentError)
    with pytest.raises(Unparseable):
        parse("not json", SDWEBUI)


class _NoFetch(InputFetcher):
    def fetch(self, ref, what="input"):  # pragma: no cover - must not be called for base64
        if ref.startswith("s3://"):
            return PNG_B64
        raise AssertionError(ref)


def _job(content, tasktype):
    return parse(json.dumps(task_message(content, tasktype=tasktype)), SDWEBUI)


def test_payload_replaces_only_known_image_fields_and_forwards_only_modelled_fields():
    fetcher = _NoFetch(s3=None, allowed_buckets=frozenset({"bkt"}), allowed_hosts=())
    job = _job(
        {
            "prompt": "s3://bkt/not-an-image-field",
            "alwayson_scripts": {
                "image_link": "s3://bkt/in.png",
                "sd_model_checkpoint": "m",
                "controlnet": {"args": []},
            },
            "mask": "s3://bkt/mask.png",
        },
        "image-to-image",
    )
    payload = build_payload(job, fetcher)
    assert payload["init_images"] == [PNG_B64] and payload["mask"] == PNG_B64
    assert payload["prompt"] == "s3://bkt/not-an-image-field"
    assert "alwayson_scripts" not in payload  # consumed, and unmodelled scripts are not forwarded (issue 20)
    assert job.ignored == ["alwayson_scripts.controlnet"]
    assert job.inputs == {"alwayson_scripts.image_link": "s3://bkt/in.png", "mask": "s3://bkt/mask.png"}
    batch = _job({"imageList": [{"data": "s3://bkt/1.png", "name": "one"}, {"data": PNG_B64}]}, "extra-batch-images")
    assert [i["data"] for i in build_payload(batch, fetcher)["imageList"]] == [PNG_B64, PNG_B64]
    single = _job({"image": "s3://bkt/1.png"}, "extra-single-image")
    assert build_payload(single, fetcher)["image"] == PNG_B64


def test_sdwebui_adapter_against_fake_runtime(fake_runtime):
    adapter = SdWebUIAdapter(fake_runtime.url, timeout_s=5)
    fetcher = _NoFetch(s3=None, allowed_buckets=frozenset(), allowed_hosts=())
    assert adapter.health().ready
    job = _job(
        {"prompt": "x", "batch_size": 3, "alwayson_scripts": {"sd_model_checkpoint": "tiny-sd"}}, "text-to-image"
    )
    adapter.prepare(job, fetcher)
    result = adapter.run(job)
    assert result.images == [PNG_1x1] * 3 and result.info["info"]["seed"] == 1234
    assert not [r for r in fake_runtime.requests if r[0] == "POST" and r[1] == "/sdapi/v1/options"]  # same model
    single = _job({"image": PNG_B64}, "extra-single-image")
    adapter.prepare(single, fetcher)
    assert adapter.run(single).images == [PNG_1x1]
    fake_runtime.fail_next(400, body={"detail": "bad"})
    with pytest.raises(PermanentError, match="400"):
        adapter.run(job)
    fake_runtime.fail_next(503)
    with pytest.raises(TransientError, match="503"):
        adapter.run(job)
    fake_runtime.delay_s = 2
    slow = SdWebUIAdapter(fake_runtime.url, timeout_s=0.5)
    with pytest.raises(TransientError, match="timed out"):
        slow.run(job)
    from tests.fixtures.aws import free_port

    down = SdWebUIAdapter(f"http://127.0.0.1:{free_port()}", timeout_s=5)
    with pytest.raises(RuntimeUnavailable):
        down.run(job)
    assert down.health() == Health(ready=False)


def _pipeline_job(graph):
    msg = task_message(graph, tasktype="pipeline", runtime="comfy")
    return parse(json.dumps(msg), Routing("comfy", "comfyui"))


GRAPH = {
    "3": {"class_type": "KSampler", "inputs": {"seed": 1}},
    "9": {"class_type": "SaveImage", "inputs": {"images": ["8", 0]}},
}


def test_comfyui_adapter(fake_runtime):
    adapter = ComfyUIAdapter(fake_runtime.url, timeout_s=5)
    assert adapter.health().ready
    fake_runtime.delay_s = 0.3
    job = _pipeline_job(GRAPH)
    adapter.prepare(job, None)
    result = adapter.run(job)
    assert result.images == [PNG_1x1] and result.info["status"]["status_str"] == "success"
    posted = [b for m, p, b in fake_runtime.requests if p == "/prompt"]
    assert posted[0]["prompt"] == job.task.content.model_dump(mode="json") and posted[0]["client_id"]
    bad = _pipeline_job({**GRAPH, "5": {"class_type": "DoesNotExist", "inputs": {}}})
    adapter.prepare(bad, None)
    with pytest.raises(PermanentError, match=r"node_errors|rejected"):
        adapter.run(bad)
    fake_runtime.comfy_result = "error"
    with pytest.raises(PermanentError, match="boom"):
        adapter.run(job)


def test_settings_from_agent_env(monkeypatch):
    class Q:
        url = "http://q"

    class R:
        queues = {"rt": Q()}  # noqa: RUF012
        output_bucket = "out"
        results_topic_arn = "arn:results"
        task_table = "tbl"
        aws_endpoint_url = "http://127.0.0.1:5000"
        region = "eu-west-1"

    env = agent_env(
        R(),
        "rt",
        "http://127.0.0.1:7860",
        status_ttl_days=9,
        allowed_input_hosts=["a.example.com", "*.b.com"],
        prefetch=2,
    )
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    settings = Settings()
    assert settings.queue_url == "http://q" and settings.prefetch == 2 and settings.status_ttl_days == 9
    assert settings.allowed_input_hosts == ["a.example.com", "*.b.com"]
    assert settings.input_buckets == frozenset({"out"}) and settings.aws_region == "eu-west-1"
    assert settings.health_path == "/healthz"
    names = {f"SDEKS_{name.upper()}" for name in Settings.model_fields}
    assert {key for key in env if key.startswith("SDEKS_")} <= names, "local mode sets a name the agent ignores"


def test_adapters_cover_exactly_the_contracts_runtime_and_task_types():
    from queue_agent.adapters import make_adapter
    from queue_agent.adapters.sdwebui import ENDPOINTS
    from sdeks.contract import RUNTIME_TYPES, TASKTYPES_BY_RUNTIME_TYPE

    assert set(ENDPOINTS) == set(TASKTYPES_BY_RUNTIME_TYPE["sdwebui"])
    kinds = {
        runtime_type: type(make_adapter(runtime_type, "http://127.0.0.1:9", 1, "/h")) for runtime_type in RUNTIME_TYPES
    }
    assert kinds == {"sdwebui": SdWebUIAdapter, "comfyui": ComfyUIAdapter}


def test_payload_forwards_the_a1111_fields_the_runtime_applies_and_reports_the_rest():
    fetcher = _NoFetch(s3=None, allowed_buckets=frozenset({"bkt"}), allowed_hosts=())
    job = _job(
        {
            "prompt": "p",
            "enable_hr": True,
            "hr_scale": 2,
            "hr_upscaler": "Latent",
            "override_settings": {"sd_vae": "tiny-vae", "outdir_samples": "/etc", "CLIP_stop_at_last_layers": 2},
            "override_settings_restore_afterwards": True,
            "script_name": "x",
        },
        "text-to-image",
    )
    payload = build_payload(job, fetcher)
    assert payload["enable_hr"] is True and payload["hr_scale"] == 2 and payload["hr_upscaler"] == "Latent"
    assert payload["override_settings"] == {"sd_vae": "tiny-vae", "CLIP_stop_at_last_layers": 2}
    assert payload["override_settings_restore_afterwards"] is True
    assert "script_name" not in payload
    assert job.ignored == ["override_settings.outdir_samples", "script_name"]


def test_comfyui_progress_listener_keeps_each_prompts_last_report_until_it_ends():
    """Against a real websocket server speaking ComfyUI's messages (binary preview frames, other message types
    and garbage included)."""
    import threading
    import time

    from websockets.sync.server import serve

    from queue_agent.adapters.comfyui_progress import ProgressListener

    go_on, seen_path = threading.Event(), []

    def comfyui(connection) -> None:
        seen_path.append(connection.request.path)
        connection.send(b"\x00\x00\x00\x01preview")
        for value in (1, 2, 3):
            connection.send(
                json.dumps({"type": "progress", "data": {"value": value, "max": 8, "prompt_id": "p1", "node": 3}})
            )
        connection.send(
            json.dumps({"type": "progress", "data": {"value": 5, "max": 9, "prompt_id": "p2", "node": "7"}})
        )
        connection.send(json.dumps({"type": "status", "data": {"status": {}}}))
        connection.send("not json")
        go_on.wait(5)
        connection.send(json.dumps({"type": "executing", "data": {"node": None, "prompt_id": "p1"}}))
        go_on.wait(5)

    with serve(comfyui, "127.0.0.1", 0) as server:
        port = server.socket.getsockname()[1]
        threading.Thread(target=server.serve_forever, daemon=True).start()
        listener = ProgressListener(f"http://127.0.0.1:{port}", "agent-1")
        try:
            deadline = time.monotonic() + 10
            while listener.latest("p2") is None and time.monotonic() < deadline:
                time.sleep(0.02)
            assert seen_path == ["/ws?clientId=agent-1"]
            assert (listener.latest("p1").value, listener.latest("p1").max, listener.latest("p1").node) == (3, 8, "3")
            assert listener.latest("p2").node == "7" and listener.latest("nope") is None
            go_on.set()
            while listener.latest("p1") is not None and time.monotonic() < deadline:
                time.sleep(0.02)
            assert listener.latest("p1") is None, "an ended prompt is forgotten"
            assert listener.latest("p2") is not None
        finally:
            listener.close()
            server.shutdown()
