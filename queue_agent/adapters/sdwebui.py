"""AUTOMATIC1111-compatible runtimes (sd_runtime, stock A1111).

AWS sample conventions are honoured: an init image URL in
``alwayson_scripts.image_link`` becomes ``init_images``, the extras source URL
sits in ``image``, ``alwayson_scripts.sd_model_checkpoint`` switches the model
(only when the runtime's current one differs). Only the known image fields are
fetched — ``init_images``, ``mask``, ``image``, ``imageList[].data``,
``alwayson_scripts.image_link`` — and replaced by base64. Only the fields the
contract models are forwarded (``alwayson_scripts`` is consumed here); the others
are listed as ``ignored_fields`` in the task's info (``<id>.json``).
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import json
from typing import Any

import httpx
from pydantic import BaseModel

from queue_agent.adapters import HttpAdapter, RuntimeResult, json_of, request
from queue_agent.errors import PermanentError, RuntimeTimeout, TransientError
from queue_agent.fetch import InputFetcher
from queue_agent.lane import Slot
from queue_agent.messages import Job
from sdeks.contract import APPLIED_EXTRA_FIELDS, APPLIED_OVERRIDE_SETTINGS, TaskProgress
from sdeks.contract.images import strip_data_uri

ENDPOINTS = {
    "text-to-image": "/sdapi/v1/txt2img",
    "image-to-image": "/sdapi/v1/img2img",
    "extra-single-image": "/sdapi/v1/extra-single-image",
    "extra-batch-images": "/sdapi/v1/extra-batch-images",
}
IMAGE_FIELDS = ("init_images", "mask", "image", "imageList")


def modelled_content(content: BaseModel) -> tuple[dict[str, Any], list[str]]:
    """The content fields the contract models, and the names of the others (reported, never forwarded).

    The contract keeps unknown fields so a task round-trips, but a stock A1111 runtime would act on
    them (an extension's ``image`` URL fetched from inside the cluster, ``override_settings.outdir_samples``
    pointing anywhere): only what the contract validated reaches a runtime.
    """
    data = content.model_dump(mode="json", exclude_none=True, include=set(type(content).model_fields))
    ignored: list[str] = []
    for key, value in sorted((content.model_extra or {}).items()):
        if key not in APPLIED_EXTRA_FIELDS:
            ignored.append(key)
        elif key == "override_settings" and isinstance(value, dict):
            applied = {name: v for name, v in value.items() if name in APPLIED_OVERRIDE_SETTINGS}
            ignored += [f"override_settings.{name}" for name in sorted(value) if name not in applied]
            if applied:
                data[key] = applied
        else:
            data[key] = value  # the runtime checks the value and answers a 4xx naming the field
    scripts = getattr(content, "alwayson_scripts", None)
    if scripts is not None:
        ignored += [f"alwayson_scripts.{key}" for key in sorted(scripts.model_extra or {})]
    return data, ignored


def build_payload(job: Job, fetcher: InputFetcher) -> dict[str, Any]:
    """The runtime request body: modelled fields only, every image reference replaced by base64."""
    content, job.ignored = modelled_content(job.task.content)
    scripts = content.pop("alwayson_scripts", None) or {}
    image_link = scripts.get("image_link")
    inputs: dict[str, str] = {}

    def fetch(ref: str, where: str) -> str:
        if not ref.startswith(("s3://", "https://")) and "://" not in ref[:16]:
            return ref
        inputs[where] = ref
        return fetcher.fetch(ref, where)

    if job.tasktype == "image-to-image":
        if image_link:
            content["init_images"] = [fetch(image_link, "alwayson_scripts.image_link")]
        else:
            content["init_images"] = [
                fetch(ref, f"init_images[{i}]") for i, ref in enumerate(content.get("init_images", []))
            ]
        if content.get("mask"):
            content["mask"] = fetch(content["mask"], "mask")
    elif job.tasktype == "extra-single-image":
        content["image"] = fetch(content["image"], "image")
    elif job.tasktype == "extra-batch-images":
        content["imageList"] = [
            {**item, "data": fetch(item["data"], f"imageList[{i}].data")} for i, item in enumerate(content["imageList"])
        ]
    job.inputs = inputs
    return content


def decode_image(value: Any, what: str) -> bytes:
    if not isinstance(value, str) or not value:
        raise TransientError(f"runtime {what} returned no image data")
    try:
        return base64.b64decode(strip_data_uri(value), validate=True)
    except (binascii.Error, ValueError):
        raise TransientError(f"runtime {what} returned malformed image data") from None


def _strip_images(parameters: Any, inputs: dict[str, str]) -> Any:
    """Runtime echoes carry the input images; keep the references instead of megabytes of base64."""
    if not isinstance(parameters, dict):
        return parameters
    out = {k: v for k, v in parameters.items() if k not in IMAGE_FIELDS}
    if inputs:
        out["inputs"] = inputs
    return out


class SdWebUIAdapter(HttpAdapter):
    def __init__(self, base_url: str, timeout_s: float, health_path: str = "/healthz") -> None:
        # One A1111 call renders the whole task, so it may take the task's whole timeout
        # (each call passes its slot's limit, which adds the wait behind a task ahead).
        super().__init__(base_url, timeout_s, health_path, request_timeout_s=timeout_s)

    def prepare(self, job: Job, fetcher: InputFetcher) -> None:
        job.payload = build_payload(job, fetcher)

    def exclusive(self, job: Job) -> bool:
        """A checkpoint switch changes the model under any task queued at the runtime: it runs alone."""
        return bool(job.task.content.checkpoint)  # type: ignore[union-attr]

    def ensure_checkpoint(self, checkpoint: str) -> None:
        resp = request(self.client, "GET", "/sdapi/v1/options", "options")
        current = (json_of(resp, "options") or {}).get("sd_model_checkpoint")
        if current == checkpoint:
            return
        request(self.client, "POST", "/sdapi/v1/options", "options", json={"sd_model_checkpoint": checkpoint})

    def run(self, job: Job, slot: Slot | None = None) -> RuntimeResult:
        if job.payload is None:
            raise PermanentError("task was not prepared")
        slot = self.slot(job, slot)
        checkpoint = job.task.content.checkpoint  # type: ignore[union-attr]
        if checkpoint:
            self.ensure_checkpoint(checkpoint)
        what = job.tasktype
        try:
            resp = request(
                self.client, "POST", ENDPOINTS[job.tasktype], what, json=job.payload, timeout=slot.request_timeout_s
            )
        except RuntimeTimeout:
            self.interrupt(slot)
            raise
        if slot.expired:
            raise RuntimeTimeout(f"runtime {what} timed out after {slot.timeout_s:g}s")
        body = json_of(resp, what)
        if not isinstance(body, dict):
            raise TransientError(f"runtime {what} answered with an unexpected body")
        if job.tasktype == "extra-single-image":
            images = [decode_image(body.get("image"), what)]
            info: dict[str, Any] = {"html_info": body.get("html_info")}
        else:
            raw = body.get("images")
            if not isinstance(raw, list) or not raw:
                raise TransientError(f"runtime {what} returned no images")
            images = [decode_image(item, what) for item in raw]
            info = {"html_info": body.get("html_info")} if "html_info" in body else {}
            if "info" in body:
                parsed = body["info"]
                if isinstance(parsed, str):
                    with contextlib.suppress(ValueError):
                        parsed = json.loads(parsed)
                info["info"] = parsed
        if slot.cancelled or (isinstance(info.get("info"), dict) and info["info"].get("interrupted") is True):
            # partial images of an interrupted run are never stored as the task's result
            raise TransientError(f"runtime {what} was interrupted")
        info["parameters"] = _strip_images(body.get("parameters", job.payload), job.inputs)
        if checkpoint:
            info["sd_model_checkpoint"] = checkpoint
        if job.ignored:
            info["ignored_fields"] = job.ignored
        return RuntimeResult(images=images, info=info)

    def progress(self, slot: Slot) -> TaskProgress | None:
        """``GET /sdapi/v1/progress``: A1111 reports the job it executes (one image batch per job of ``n_iter``)."""
        try:
            body = self.client.get("/sdapi/v1/progress", params={"skip_current_image": "true"}, timeout=2.0).json()
            state = body["state"]
            images = int(state.get("job_count") or 0)
            return TaskProgress(
                step=max(0, int(state.get("sampling_step") or 0)),
                steps=max(0, int(state.get("sampling_steps") or 0)),
                fraction=min(1.0, max(0.0, float(body.get("progress") or 0.0))),
                image=min(images, int(state.get("job_no") or 0) + 1) if images else 0,
                images=images,
            )
        except (httpx.HTTPError, ValueError, KeyError, TypeError, AttributeError):
            return None  # progress is a courtesy: the task runs on whatever the runtime answers

    def interrupt(self, slot: Slot) -> None:
        """A1111 interrupts whatever it is executing; the lane calls this only for a started task."""
        with contextlib.suppress(httpx.HTTPError):
            self.client.post("/sdapi/v1/interrupt", timeout=3.0)
