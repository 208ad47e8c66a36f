"""Benchmark the sd_runtime with the tiny model over real HTTP; prints JSON.

    .venv/bin/python bench/runtime.py [--steps 20] [--repeats 3] [--model-dir DIR]

For each size (64², 256²) and batch size (1, 4): median request latency and
images/s. "concurrent4x1" sends four batch-1 requests at once, which the runtime
serializes; comparing it with batch 4 is the measurement behind the decision
whether to merge waiting requests into one pipeline call (docs/performance.md).
The SDXL rows run the tiny random-weight SDXL (``python -m sd_runtime.tiny --sdxl``)
at batch 1; ``device`` is what the runtime reports (CUDA when one is present).
The ``upscale`` rows run ``R-ESRGAN 4x+`` (the tiny RRDBNet the tiny build writes in the real
file's layout) over a 512² image through ``/sdapi/v1/extra-single-image``, untiled and at two
``ESRGAN_tile`` sizes: the tiled/untiled latency ratio is what tiling costs for its bounded memory.
The ``comfyui`` rows run ComfyUI's default text-to-image workflow through ``POST /prompt``
(256², the same steps): first run, an identical rerun (the node cache: only ``SaveImage`` runs),
a new seed (checkpoint and encodings reused), and a run after ``POST /free`` (cache dropped).
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import io
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
from PIL import Image

REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def runtime(model_dir: Path, model: str = "tiny-sd"):
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "sd_runtime", "--model", str(model_dir / model), "--port", str(port)],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "SD_LOG_LEVEL": "warning"},
    )
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(600):
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{url}/healthz").status_code == 200:
                    break
            time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        proc.wait(10)


def txt2img(url: str, size: int, batch: int, steps: int, seed: int) -> float:
    body = {"prompt": "bench", "steps": steps, "width": size, "height": size, "batch_size": batch, "seed": seed}
    t0 = time.perf_counter()
    r = httpx.post(f"{url}/sdapi/v1/txt2img", json=body, timeout=600)
    r.raise_for_status()
    return time.perf_counter() - t0


def upscale(url: str, image_b64: str, tile: int) -> float:
    httpx.post(f"{url}/sdapi/v1/options", json={"ESRGAN_tile": tile}, timeout=30).raise_for_status()
    body = {"image": image_b64, "upscaler_1": "R-ESRGAN 4x+", "upscaling_resize": 4}
    t0 = time.perf_counter()
    r = httpx.post(f"{url}/sdapi/v1/extra-single-image", json=body, timeout=600)
    r.raise_for_status()
    return time.perf_counter() - t0


def upscale_rows(url: str, repeats: int) -> list[dict]:
    buf = io.BytesIO()
    Image.effect_noise((512, 512), 64).convert("RGB").save(buf, format="PNG")
    image_b64 = base64.b64encode(buf.getvalue()).decode()
    upscale(url, image_b64, 0)  # warm-up: loads the model
    rows = []
    for tile in (0, 192, 128):
        med = statistics.median(upscale(url, image_b64, tile) for _ in range(repeats))
        rows.append({"model": "R-ESRGAN 4x+ (tiny)", "size": "512->2048", "tile": tile, "latency_s": round(med, 3)})
    for row in rows:
        row["vs_untiled"] = round(row["latency_s"] / rows[0]["latency_s"], 2)
    return rows


def workflow(seed: int, steps: int) -> dict:
    """ComfyUI's default text-to-image graph (API format) on the tiny model, 256²."""
    return {
        "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "tiny-sd"}},
        "5": {"class_type": "EmptyLatentImage", "inputs": {"width": 256, "height": 256, "batch_size": 1}},
        "6": {"class_type": "CLIPTextEncode", "inputs": {"text": "a lighthouse, fog", "clip": ["4", 1]}},
        "7": {"class_type": "CLIPTextEncode", "inputs": {"text": "text, watermark", "clip": ["4", 1]}},
        "3": {
            "class_type": "KSampler",
            "inputs": {
                **{"seed": seed, "steps": steps, "cfg": 8, "sampler_name": "euler", "scheduler": "normal"},
                **{"denoise": 1, "model": ["4", 0], "positive": ["6", 0], "negative": ["7", 0]},
                "latent_image": ["5", 0],
            },
        },
        "8": {"class_type": "VAEDecode", "inputs": {"samples": ["3", 0], "vae": ["4", 2]}},
        "9": {"class_type": "SaveImage", "inputs": {"filename_prefix": "bench", "images": ["8", 0]}},
    }


def comfy_run(url: str, seed: int, steps: int) -> float:
    """Seconds from ``POST /prompt`` until its history entry says success."""
    t0 = time.perf_counter()
    r = httpx.post(f"{url}/prompt", json={"prompt": workflow(seed, steps)}, timeout=30)
    r.raise_for_status()
    pid = r.json()["prompt_id"]
    while True:
        entry = httpx.get(f"{url}/history/{pid}", timeout=30).json().get(pid)
        if entry:
            assert entry["status"]["status_str"] == "success", entry["status"]
            return time.perf_counter() - t0
        time.sleep(0.005)


def comfy_rows(url: str, steps: int) -> list[dict]:
    httpx.post(f"{url}/free", json={"free_memory": True}, timeout=30).raise_for_status()
    runs = {"first": comfy_run(url, 1, steps), "identical rerun": comfy_run(url, 1, steps)}
    runs["new seed"] = comfy_run(url, 2, steps)
    httpx.post(f"{url}/free", json={"free_memory": True}, timeout=30).raise_for_status()
    runs["after /free"] = comfy_run(url, 2, steps)
    return [{"model": "tiny-sd", "comfyui": name, "size": 256, "latency_s": round(t, 3)} for name, t in runs.items()]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--model-dir", default=None, help="reuse a tiny model dir (built when missing)")
    args = parser.parse_args()
    model_dir = Path(args.model_dir or tempfile.mkdtemp(prefix="sdeks-bench-"))
    for extra in ([], ["--sdxl"]):
        cmd = [sys.executable, "-m", "sd_runtime.tiny", *extra, str(model_dir)]
        subprocess.run(cmd, cwd=REPO, check=True, capture_output=True)
    results = []
    with runtime(model_dir) as url:
        device = httpx.get(f"{url}/healthz").json()["device"]
        for size in (64, 256):
            txt2img(url, size, 1, args.steps, 0)  # warm-up (first call allocates)
            for batch in (1, 4):
                lat = [txt2img(url, size, batch, args.steps, i) for i in range(args.repeats)]
                med = statistics.median(lat)
                results.append(
                    {
                        "model": "tiny-sd",
                        "size": size,
                        "batch": batch,
                        "latency_s": round(med, 3),
                        "images_per_s": round(batch / med, 2),
                    }
                )
            with ThreadPoolExecutor(4) as pool:
                t0 = time.perf_counter()
                list(pool.map(lambda i, s=size: txt2img(url, s, 1, args.steps, i), range(4)))
                wall = time.perf_counter() - t0
            results.append(
                {
                    "model": "tiny-sd",
                    "size": size,
                    "batch": "concurrent4x1",
                    "latency_s": round(wall, 3),
                    "images_per_s": round(4 / wall, 2),
                }
            )
        results.extend(upscale_rows(url, args.repeats))
        results.extend(comfy_rows(url, args.steps))
    with runtime(model_dir, "tiny-sdxl") as url:
        for size in (64, 256):
            txt2img(url, size, 1, args.steps, 0)  # warm-up
            med = statistics.median(txt2img(url, size, 1, args.steps, i) for i in range(args.repeats))
            row = {"model": "tiny-sdxl", "size": size, "batch": 1, "latency_s": round(med, 3)}
            results.append(row | {"images_per_s": round(1 / med, 2)})
    print(
        json.dumps(
            {
                "benchmark": "sd_runtime: txt2img (tiny SD 1.x, SDXL), a tiny model upscaler, the ComfyUI node cache",
                "device": device,
                "cpu_count": os.cpu_count(),
                "machine": platform.machine(),
                "steps": args.steps,
                "sampler": "Euler a",
                "results": results,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
