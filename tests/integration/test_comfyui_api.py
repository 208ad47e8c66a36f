"""ComfyUI API of sd_runtime, through one real server process (tiny model) per module."""

from __future__ import annotations

import base64
import copy
import io
import json
import time
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from PIL import Image

pytestmark = pytest.mark.slow

CKPT = "tiny-sd"


def default_workflow(seed: int = 42, steps: int = 3, size: int = 64, prefix: str = "ComfyUI") -> dict[str, Any]:
    """ComfyUI's default text-to-image graph as "Save (API format)" exports it (tiny model, 64x64)."""
    return {
        "3": {
            "class_type": "KSampler",
            "inputs": {
                "seed": seed,
                "steps": steps,
                "cfg": 8,
                "sampler_name": "euler",
                "scheduler": "normal",
                "denoise": 1,
                "model": ["4", 0],
                "positive": ["6", 0],
                "negative": ["7", 0],
                "latent_image": ["5", 0],
            },
            "_meta": {"title": "KSampler"},
        },
        "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": CKPT}},
        "5": {"class_type": "EmptyLatentImage", "inputs": {"width": size, "height": size, "batch_size": 1}},
        "6": {
            "class_type": "CLIPTextEncode",
            "inputs": {
                "text": "beautiful scenery nature glass bottle landscape, purple galaxy bottle,",
                "clip": ["4", 1],
            },
        },
        "7": {"class_type": "CLIPTextEncode", "inputs": {"text": "text, watermark", "clip": ["4", 1]}},
        "8": {"class_type": "VAEDecode", "inputs": {"samples": ["3", 0], "vae": ["4", 2]}},
        "9": {"class_type": "SaveImage", "inputs": {"filename_prefix": prefix, "images": ["8", 0]}},
    }


def img2img_workflow(image: str, seed: int = 7, denoise: float = 0.6) -> dict[str, Any]:
    wf = default_workflow(seed=seed)
    del wf["5"]
    wf["10"] = {"class_type": "LoadImage", "inputs": {"image": image, "upload": "image"}}
    wf["11"] = {"class_type": "VAEEncode", "inputs": {"pixels": ["10", 0], "vae": ["4", 2]}}
    wf["3"]["inputs"].update(latent_image=["11", 0], denoise=denoise, steps=4)
    return wf


def png_bytes(color: str, size: tuple[int, int] = (64, 64)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def client(sd_runtime_url: str):
    with httpx.Client(base_url=sd_runtime_url, timeout=60) as c:
        yield c


def run(client: httpx.Client, prompt: dict[str, Any], timeout: float = 60, **extra: Any) -> tuple[str, dict]:
    resp = client.post("/prompt", json={"prompt": prompt, "client_id": "tests", **extra})
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert set(body) == {"prompt_id", "number", "node_errors"} and body["node_errors"] == {}
    pid = body["prompt_id"]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        history = client.get(f"/history/{pid}").json()
        if pid in history:
            return pid, history[pid]
        time.sleep(0.05)
    raise AssertionError(f"prompt {pid} did not finish in {timeout}s")


def saved_images(client: httpx.Client, entry: dict, node: str = "9") -> list[bytes]:
    refs = entry["outputs"][node]["images"]
    out = []
    for ref in refs:
        assert ref["type"] == "output"
        resp = client.get("/view", params=ref)
        assert resp.status_code == 200 and resp.headers["content-type"] == "image/png"
        out.append(resp.content)
    return out


def test_default_workflow_renders_and_is_deterministic(client):
    pid, entry = run(client, default_workflow(seed=42))
    assert entry["status"]["status_str"] == "success" and entry["status"]["completed"] is True
    kinds = [m[0] for m in entry["status"]["messages"]]
    assert kinds[0] == "execution_start" and kinds[-1] == "execution_success"
    assert entry["prompt"][1] == pid and entry["prompt"][4] == ["9"]
    (ref,) = entry["outputs"]["9"]["images"]
    assert ref["filename"].startswith("ComfyUI_") and ref["filename"].endswith("_.png") and ref["subfolder"] == ""
    (first,) = saved_images(client, entry)
    img = Image.open(io.BytesIO(first))
    assert img.size == (64, 64) and img.mode == "RGB"
    assert json.loads(img.info["prompt"])["3"]["class_type"] == "KSampler"  # ComfyUI's PNG metadata

    _, again = run(client, default_workflow(seed=42))
    _, other = run(client, default_workflow(seed=43))
    (second,) = saved_images(client, again)
    (third,) = saved_images(client, other)
    assert again["outputs"]["9"]["images"][0]["filename"] != ref["filename"]  # counter advances
    pixels = [Image.open(io.BytesIO(b)).tobytes() for b in (first, second, third)]
    assert pixels[0] == pixels[1]
    assert pixels[0] != pixels[2]
    assert pid in client.get("/history", params={"max_items": 10}).json()


def test_batch_size_subfolder_and_api_prefix(client):
    wf = default_workflow(prefix="runs/batch")
    wf["5"]["inputs"]["batch_size"] = 2
    resp = client.post("/api/prompt", json={"prompt": wf})
    assert resp.status_code == 200, resp.text
    pid = resp.json()["prompt_id"]
    for _ in range(600):
        entry = client.get(f"/api/history/{pid}").json().get(pid)
        if entry:
            break
        time.sleep(0.05)
    refs = entry["outputs"]["9"]["images"]
    assert [r["subfolder"] for r in refs] == ["runs", "runs"]
    assert len({r["filename"] for r in refs}) == 2
    images = saved_images(client, entry)
    assert images[0] != images[1]  # one noise batch, two different images


def test_img2img_from_uploaded_image_and_base64(client):
    resp = client.post(
        "/upload/image",
        files={"image": ("red square.png", png_bytes("red"), "image/png")},
        data={"overwrite": "true"},
    )
    assert resp.status_code == 200, resp.text
    assert resp.json() == {"name": "red square.png", "subfolder": "", "type": "input"}
    assert "red square.png" in client.get("/object_info/LoadImage").json()["LoadImage"]["input"]["required"]["image"][0]

    _, entry = run(client, img2img_workflow("red square.png"))
    assert entry["status"]["status_str"] == "success", entry["status"]
    (out,) = saved_images(client, entry)
    assert Image.open(io.BytesIO(out)).size == (64, 64)

    inline = "data:image/png;base64," + base64.b64encode(png_bytes("red")).decode()
    _, entry2 = run(client, img2img_workflow(inline))
    (out2,) = saved_images(client, entry2)
    assert Image.open(io.BytesIO(out2)).tobytes() == Image.open(io.BytesIO(out)).tobytes()

    # a second upload under the same name without overwrite is renamed, as ComfyUI does
    again = client.post("/upload/image", files={"image": ("red square.png", png_bytes("blue"), "image/png")})
    assert again.json()["name"] == "red square (1).png"


def test_upscale_nodes_change_the_size(client):
    wf = default_workflow()
    wf["20"] = {
        "class_type": "LatentUpscale",
        "inputs": {
            "samples": ["3", 0],
            "upscale_method": "nearest-exact",
            "width": 96,
            "height": 64,
            "crop": "disabled",
        },
    }
    wf["8"]["inputs"]["samples"] = ["20", 0]
    wf["21"] = {
        "class_type": "ImageScale",
        "inputs": {"image": ["8", 0], "upscale_method": "lanczos", "width": 48, "height": 0, "crop": "disabled"},
    }
    wf["9"]["inputs"]["images"] = ["21", 0]
    _, entry = run(client, wf)
    (out,) = saved_images(client, entry)
    assert Image.open(io.BytesIO(out)).size == (48, 32)


def test_unknown_node_is_a_clear_node_error(client):
    wf = default_workflow()
    wf["12"] = {"class_type": "FancyUpscaler", "inputs": {"image": ["8", 0]}}
    resp = client.post("/prompt", json={"prompt": wf})
    assert resp.status_code == 400
    body = resp.json()
    assert body["error"]["type"] == "invalid_prompt"
    assert "FancyUpscaler" in body["error"]["message"]
    err = body["node_errors"]["12"]
    assert err["class_type"] == "FancyUpscaler"
    assert "KSampler" in err["errors"][0]["details"] and "SaveImage" in err["errors"][0]["extra_info"]["supported"]


@pytest.mark.parametrize(
    ("mutate", "node", "kind", "needle"),
    [
        (lambda wf: wf["8"]["inputs"].update(samples=["99", 0]), "8", "bad_linked_input", "'#99'"),
        (lambda wf: wf["8"]["inputs"].update(vae=["4", 5]), "8", "bad_linked_input", "output 5"),
        (lambda wf: wf["8"]["inputs"].update(vae=["4", 1]), "8", "return_type_mismatch", "CLIP"),
        (lambda wf: wf["3"]["inputs"].pop("seed"), "3", "required_input_missing", "seed"),
        (lambda wf: wf["3"]["inputs"].update(sampler_name="euler_z"), "3", "value_not_in_list", "euler_z"),
        (lambda wf: wf["3"]["inputs"].update(steps=0), "3", "value_smaller_than_min", "steps"),
        (lambda wf: wf["3"]["inputs"].update(cfg="lots"), "3", "invalid_input_type", "cfg"),
        (lambda wf: wf["4"]["inputs"].update(ckpt_name="sdxl.safetensors"), "4", "value_not_in_list", CKPT),
    ],
)
def test_invalid_inputs_give_node_errors(client, mutate, node, kind, needle):
    wf = copy.deepcopy(default_workflow())
    mutate(wf)
    resp = client.post("/prompt", json={"prompt": wf})
    assert resp.status_code == 400, resp.text
    body = resp.json()
    assert body["error"]["type"] == "prompt_outputs_failed_validation"
    errors = body["node_errors"][node]["errors"]
    assert errors[0]["type"] == kind
    assert needle in errors[0]["message"] + errors[0]["details"]
    assert body["node_errors"][node]["dependent_outputs"] == ["9"]
    assert f"#{node} " in body["error"]["details"]  # the summary names the node for clients reading only "error"


def test_prompt_without_outputs_or_body(client):
    wf = default_workflow()
    del wf["9"]
    assert client.post("/prompt", json={"prompt": wf}).json()["error"]["type"] == "prompt_no_outputs"
    assert client.post("/prompt", json={}).json()["error"]["type"] == "no_prompt"
    assert client.post("/prompt", content=b"{oops").status_code == 400
    # a field ComfyUI clients may send but this runtime does not implement is refused, naming it
    resp = client.post("/prompt", json={"prompt": default_workflow(), "partial_execution_targets": ["9"]})
    assert resp.status_code == 400 and "partial_execution_targets" in resp.json()["error"]["message"]
    resp = client.post("/prompt", json={"prompt": default_workflow(), "number": "first"})
    assert resp.status_code == 400 and "number" in resp.json()["error"]["message"]


def test_websocket_progress_messages_arrive_in_order(sd_runtime_url, client):
    from websockets.sync.client import connect

    ws_url = sd_runtime_url.replace("http://", "ws://") + "/ws?clientId=ws-test"
    assert client.post("/free", json={"free_memory": True}).status_code == 200  # every node runs, none cached
    with connect(ws_url, open_timeout=10) as ws:
        hello = json.loads(ws.recv(timeout=10))
        assert hello["type"] == "status" and hello["data"]["sid"] == "ws-test"
        resp = client.post("/prompt", json={"prompt": default_workflow(steps=3), "client_id": "ws-test"})
        pid = resp.json()["prompt_id"]
        events: list[tuple[str, dict]] = []
        while True:
            msg = json.loads(ws.recv(timeout=60))
            if msg["data"].get("prompt_id") == pid or msg["type"] == "status":
                events.append((msg["type"], msg["data"]))
            if msg["type"] == "executing" and msg["data"]["node"] is None:
                break
    kinds = [k for k, _ in events if k != "status"]
    assert kinds[:2] == ["execution_start", "execution_cached"]
    assert kinds[-2:] == ["execution_success", "executing"]
    executing = [d["node"] for k, d in events if k == "executing" and d["node"]]
    assert executing.index("4") < executing.index("6") < executing.index("3") < executing.index("8")
    assert executing[-1] == "9"
    progress = [(d["value"], d["max"]) for k, d in events if k == "progress" and d["value"] > 0]
    assert progress == [(1, 3), (2, 3), (3, 3)]
    (executed,) = [d for k, d in events if k == "executed"]
    assert executed["node"] == "9" and executed["output"]["images"][0]["type"] == "output"
    assert pid in client.get(f"/history/{pid}").json()  # already there when "executing: null" arrives


def test_object_info_queue_system_stats(client):
    info = client.get("/object_info").json()
    for name in ("CheckpointLoaderSimple", "CLIPTextEncode", "EmptyLatentImage", "KSampler", "VAEDecode",
                 "VAEEncode", "LoadImage", "SaveImage", "LatentUpscale", "ImageScale"):  # fmt: skip
        assert name in info
    ks = info["KSampler"]
    assert ks["output"] == ["LATENT"] and ks["category"] == "sampling"
    assert "dpmpp_2m" in ks["input"]["required"]["sampler_name"][0]
    assert "karras" in ks["input"]["required"]["scheduler"][0]
    assert ks["input"]["required"]["steps"] == ["INT", {"default": 20, "min": 1, "max": 10000}]
    assert CKPT in info["CheckpointLoaderSimple"]["input"]["required"]["ckpt_name"][0]
    assert info["SaveImage"]["output_node"] is True
    assert client.get("/object_info/Nope").json() == {}

    queue = client.get("/queue").json()
    assert set(queue) == {"queue_running", "queue_pending"}
    stats = client.get("/system_stats")
    assert stats.status_code == 200
    assert {"system", "devices"} <= set(stats.json()) and stats.json()["devices"][0]["type"] == "cpu"


def lora_workflow(loader: str, name: str = "tiny-lora.safetensors", strength: float = 1.0) -> dict[str, Any]:
    """The default graph with a LoRA loader between the checkpoint and its users."""
    wf = default_workflow()
    if loader == "LoraLoader":
        inputs = {"model": ["4", 0], "clip": ["4", 1], "strength_model": strength, "strength_clip": strength}
        for node in ("6", "7"):
            wf[node]["inputs"]["clip"] = ["20", 1]
    else:
        inputs = {"model": ["4", 0], "strength_model": strength}
    wf["20"] = {"class_type": loader, "inputs": {**inputs, "lora_name": name}}
    wf["3"]["inputs"]["model"] = ["20", 0]
    return wf


def pixels_of(client: httpx.Client, wf: dict[str, Any]) -> bytes:
    _, entry = run(client, wf)
    assert entry["status"]["status_str"] == "success", entry["status"]
    (png,) = saved_images(client, entry)
    return Image.open(io.BytesIO(png)).tobytes()


def test_lora_loaders_change_the_image_for_that_prompt_only(client):
    assert (
        "tiny-lora.safetensors"
        in client.get("/object_info/LoraLoader").json()["LoraLoader"]["input"]["required"]["lora_name"][0]
    )
    plain = pixels_of(client, default_workflow())
    full = pixels_of(client, lora_workflow("LoraLoader"))
    model_only = pixels_of(client, lora_workflow("LoraLoaderModelOnly", name="tiny-lora"))  # A1111's name works too
    assert len({plain, full, model_only}) == 3
    assert pixels_of(client, lora_workflow("LoraLoader", strength=0.0)) == plain
    assert pixels_of(client, default_workflow()) == plain  # the next prompt is unaffected


@pytest.mark.parametrize("name", ["nope.safetensors", "../tiny-sd.safetensors", "/etc/passwd"])
def test_unknown_lora_is_a_node_error_naming_it(client, name):
    resp = client.post("/prompt", json={"prompt": lora_workflow("LoraLoader", name=name)})
    assert resp.status_code == 400, resp.text
    (error,) = resp.json()["node_errors"]["20"]["errors"]
    assert error["type"] == "value_not_in_list" and name in error["details"]


def test_clip_set_last_layer_changes_the_encoding(client):
    """CLIPSetLastLayer -2 (clip skip 1) runs with transformers 5 and changes the image; -1 is no skip."""

    def with_stop(stop: int) -> dict[str, Any]:
        wf = default_workflow()
        wf["30"] = {"class_type": "CLIPSetLastLayer", "inputs": {"clip": ["4", 1], "stop_at_clip_layer": stop}}
        for node in ("6", "7"):
            wf[node]["inputs"]["clip"] = ["30", 0]
        return wf

    plain = pixels_of(client, default_workflow())
    assert pixels_of(client, with_stop(-1)) == plain
    assert pixels_of(client, with_stop(-2)) != plain


def test_view_serves_only_stored_images(client):
    _, entry = run(client, default_workflow())
    ref = entry["outputs"]["9"]["images"][0]
    assert client.get("/view", params=ref).status_code == 200
    for params in (
        {**ref, "type": "input"},
        {"filename": "../../etc/passwd", "type": "output"},
        {"filename": "passwd", "subfolder": "../../../etc", "type": "output"},
        {"filename": ref["filename"], "subfolder": "/", "type": "output"},
        {},
    ):
        assert client.get("/view", params=params).status_code == 404


def test_interrupt_stops_the_running_prompt(client):
    resp = client.post("/prompt", json={"prompt": default_workflow(steps=400, size=128)})
    pid = resp.json()["prompt_id"]
    for _ in range(400):
        if client.get("/queue").json()["queue_running"]:
            break
        time.sleep(0.02)
    time.sleep(0.3)
    assert client.post("/interrupt").status_code == 200
    entry = None
    for _ in range(600):
        entry = client.get(f"/history/{pid}").json().get(pid)
        if entry:
            break
        time.sleep(0.05)
    assert entry is not None
    assert entry["status"]["status_str"] == "error"
    assert entry["status"]["messages"][-1][0] == "execution_interrupted"
    # the next prompt is not affected by the interrupt
    _, after = run(client, default_workflow())
    assert after["status"]["status_str"] == "success"


def test_partly_invalid_graph_runs_its_valid_outputs(client):
    wf = default_workflow()
    wf["10"] = {"class_type": "LoadImage", "inputs": {"image": "never-uploaded.png"}}
    wf["11"] = {"class_type": "SaveImage", "inputs": {"images": ["10", 0], "filename_prefix": "x"}}
    resp = client.post("/prompt", json={"prompt": wf})
    # ComfyUI runs the valid outputs and reports the invalid ones in node_errors
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["node_errors"]["10"]["errors"][0]["type"] == "value_not_in_list"
    assert body["node_errors"]["10"]["dependent_outputs"] == ["11"]


def test_queue_agent_comfyui_adapter_against_the_server(sd_runtime_url):
    from queue_agent.adapters.comfyui import ComfyUIAdapter
    from queue_agent.messages import Job
    from sdeks.contract import Task

    task = Task.model_validate(
        {"metadata": {"id": "cf-1", "runtime": "comfy", "tasktype": "pipeline"}, "content": default_workflow(seed=5)}
    )
    job = Job(task_id="cf-1", runtime="comfy", submitted_at=datetime.now(UTC), task=task)
    adapter = ComfyUIAdapter(sd_runtime_url, timeout_s=60)
    try:
        assert adapter.health().ready
        adapter.prepare(job, None)  # type: ignore[arg-type]  (pipeline tasks fetch nothing)
        result = adapter.run(job)
        assert len(result.images) == 1
        assert Image.open(io.BytesIO(result.images[0])).size == (64, 64)
        assert result.info["status"]["status_str"] == "success"

        bad = default_workflow()
        bad["3"]["inputs"]["sampler_name"] = "nope"
        job.task = Task.model_validate(
            {"metadata": {"id": "cf-2", "runtime": "comfy", "tasktype": "pipeline"}, "content": bad}
        )
        adapter.prepare(job, None)  # type: ignore[arg-type]
        from queue_agent.errors import PermanentError

        with pytest.raises(PermanentError, match="rejected"):
            adapter.run(job)
    finally:
        adapter.close()


def test_oversized_latent_is_an_execution_error_not_a_crash(client):
    wf = default_workflow()
    wf["5"]["inputs"].update(width=8192, height=8192)
    resp = client.post("/prompt", json={"prompt": wf})
    pid = resp.json()["prompt_id"]
    for _ in range(600):
        entry = client.get(f"/history/{pid}").json().get(pid)
        if entry:
            break
        time.sleep(0.05)
    assert entry["status"]["status_str"] == "error"
    event, data = entry["status"]["messages"][-1]
    assert event == "execution_error"
    assert (data["node_id"], data["node_type"]) == ("5", "EmptyLatentImage")
    assert "exceeds" in data["exception_message"]
    assert client.get("/system_stats").status_code == 200


def test_clip_text_encode_reads_weights_and_long_prompts(client):
    """ComfyUI's (word:1.2) weights and > 77-token prompts (chunked) change the image; weight 1 does not."""

    def with_text(text: str) -> dict[str, Any]:
        wf = default_workflow()
        wf["6"]["inputs"]["text"] = text
        return wf

    plain = pixels_of(client, with_text("a lighthouse, fog"))
    assert pixels_of(client, with_text("a (lighthouse:1.0), fog")) == plain
    assert pixels_of(client, with_text("a (lighthouse:1.3), fog")) != plain
    emphasis = pixels_of(client, with_text("a (lighthouse), fog"))
    assert emphasis == pixels_of(client, with_text("a (lighthouse:1.1), fog"))
    long = "a lighthouse on a cliff, " * 6
    assert pixels_of(client, with_text(long + "red sky")) != pixels_of(client, with_text(long + "blue sea"))
    # ComfyUI's embedding:name is the textual inversion A1111 names bare (embeddings/ of the models dir)
    assert {"tiny-embed", "tiny-embed-xl"} <= set(client.get("/embeddings").json())  # listed as ComfyUI does
    named = pixels_of(client, with_text("a tiny-embed lighthouse, fog"))
    assert pixels_of(client, with_text("a embedding:tiny-embed.safetensors lighthouse, fog")) == named != plain
