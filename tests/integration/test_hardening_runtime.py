"""Hardening of the runtime, through a real ``python -m sd_runtime`` process (tiny model)."""

from __future__ import annotations

import json
import threading
import time

import httpx
import pytest

from sd_runtime.interrupt import DEFAULT_GRACE_S

pytestmark = pytest.mark.slow

HUGE = {"prompt": "x", "steps": 150, "width": 2048, "height": 2048, "batch_size": 4, "seed": 1}
"""One step of this takes minutes on a CPU: only a mid-step stop can end it in bounded time."""


def _wait_started(url: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while httpx.get(f"{url}/sdapi/v1/progress", timeout=5).json()["state"]["job"] != "txt2img":
        assert time.monotonic() < deadline, "the job never started"
        time.sleep(0.05)


def test_interrupt_stops_inside_a_step_within_bounded_time(sd_runtime_url: str) -> None:
    result: dict = {}

    def huge() -> None:
        result["response"] = httpx.post(f"{sd_runtime_url}/sdapi/v1/txt2img", json=HUGE, timeout=600)

    worker = threading.Thread(target=huge)
    worker.start()
    _wait_started(sd_runtime_url)
    time.sleep(0.5)  # inside step 1 now
    assert httpx.get(f"{sd_runtime_url}/sdapi/v1/progress", timeout=5).json()["state"]["sampling_step"] == 0
    t_interrupt = time.monotonic()
    assert httpx.post(f"{sd_runtime_url}/sdapi/v1/interrupt", timeout=5).status_code == 200
    worker.join(timeout=60)
    stopped_after = time.monotonic() - t_interrupt
    assert not worker.is_alive()
    assert stopped_after < DEFAULT_GRACE_S + 15, stopped_after
    response = result["response"]
    assert response.status_code == 200, response.text
    assert json.loads(response.json()["info"])["interrupted"] is True
    assert response.json()["images"] == []  # nothing was finished; the render was abandoned mid-step
    state = httpx.get(f"{sd_runtime_url}/sdapi/v1/progress", timeout=5).json()["state"]
    assert state["job"] == "", "the runtime is idle again"
    small = {"prompt": "x", "steps": 2, "width": 64, "height": 64, "seed": 3}
    ok = httpx.post(f"{sd_runtime_url}/sdapi/v1/txt2img", json=small, timeout=120).json()
    assert json.loads(ok["info"])["interrupted"] is False and len(ok["images"]) == 1


def test_checkpoint_paths_are_refused_and_errors_list_no_files(sd_runtime_url: str, tiny_model_dir) -> None:
    options = f"{sd_runtime_url}/sdapi/v1/options"
    before = httpx.get(f"{sd_runtime_url}/sdapi/v1/sd-models", timeout=5).json()
    real_file = str(tiny_model_dir / "tiny-sd.safetensors")  # exists: a path must be refused, not merely missing
    for spec in (real_file, "../models/tiny-sd", "/etc/passwd"):
        r = httpx.post(options, json={"sd_model_checkpoint": spec}, timeout=30)
        assert r.status_code == 422, r.text
        assert "sd_model_checkpoint" in r.json()["error"]["message"] and "not by path" in r.json()["error"]["message"]
    r = httpx.post(options, json={"sd_model_checkpoint": "nope.safetensors"}, timeout=30)
    assert r.status_code == 404 and "tiny-sd" not in r.json()["error"]["message"]
    assert httpx.get(options, timeout=5).json()["sd_model_checkpoint"] == "tiny-sd"
    assert httpx.get(f"{sd_runtime_url}/sdapi/v1/sd-models", timeout=5).json() == before


def test_comfyui_prompt_cannot_load_another_prompts_output(sd_runtime_url: str) -> None:
    from tests.integration.test_comfyui_api import default_workflow, img2img_workflow, run

    with httpx.Client(base_url=sd_runtime_url, timeout=60) as client:
        _, entry = run(client, default_workflow(seed=11))
        [ref] = entry["outputs"]["9"]["images"]
        assert ref["type"] == "output"
        name = f"{ref['subfolder']}/{ref['filename']}" if ref["subfolder"] else ref["filename"]
        resp = client.post("/prompt", json={"prompt": img2img_workflow(f"{name} [output]"), "client_id": "other"})
        assert resp.status_code == 400, resp.text
        assert "10" in resp.json()["node_errors"]  # the LoadImage node, named
        # the file is still there for its own client (the agent) to fetch
        view = client.get(
            "/view", params={"filename": ref["filename"], "subfolder": ref["subfolder"], "type": "output"}
        )
        assert view.status_code == 200


def test_chart_probe_reaches_the_loopback_runtime(sd_runtime_url: str, helm_template) -> None:
    """The chart binds the runtime to 127.0.0.1 and probes it from inside the container: the rendered
    exec probe succeeds against a real runtime on loopback and fails when nothing listens."""
    import subprocess
    import sys

    from tests.helm.test_chart import container, env, pod_spec

    port = int(sd_runtime_url.rsplit(":", 1)[1])
    runtime = container(pod_spec(helm_template({"runtime": {"port": port}})), "runtime")
    assert env(runtime)["SD_HOST"] == "127.0.0.1"
    command = runtime["startupProbe"]["exec"]["command"]
    assert command[0] == "python"
    assert subprocess.run([sys.executable, *command[1:]], timeout=30).returncode == 0
    from tests.fixtures.aws import free_port

    closed = container(pod_spec(helm_template({"runtime": {"port": free_port()}})), "runtime")
    probe = closed["livenessProbe"]["exec"]["command"]
    assert subprocess.run([sys.executable, *probe[1:]], capture_output=True, timeout=30).returncode != 0
