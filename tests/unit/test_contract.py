"""The task contract: what the front door accepts and rejects, and why."""

from __future__ import annotations

import base64
import json

import pytest
from pydantic import ValidationError

from sdeks.contract import (
    CompletionEvent,
    ExtraBatchImagesContent,
    ExtraSingleImageContent,
    Img2ImgContent,
    PipelineContent,
    TaskMessage,
    TaskRequest,
    Txt2ImgContent,
    image_key,
    info_key,
    parse_image_ref,
    summarize,
)

RUNTIMES = {"sdruntime": "sdwebui", "comfy": "comfyui"}
PNG_B64 = base64.b64encode(b"\x89PNG\r\n\x1a\n" + b"\0" * 16).decode()


def task(tasktype: str = "text-to-image", runtime: str = "sdruntime", content: dict | None = None, **metadata):
    return {"task": {"metadata": {"runtime": runtime, "tasktype": tasktype, **metadata}, "content": content or {}}}


def validate(body: dict) -> TaskRequest:
    return TaskRequest.model_validate(body, context={"runtimes": RUNTIMES})


def rejection(body: dict) -> str:
    with pytest.raises(ValidationError) as info:
        validate(body)
    return summarize(info.value)


@pytest.mark.parametrize(
    ("tasktype", "runtime", "content", "model"),
    [
        ("text-to-image", "sdruntime", {"prompt": "a cat", "steps": 16, "width": 512, "height": 768}, Txt2ImgContent),
        (
            "image-to-image",
            "sdruntime",
            {"prompt": "x", "init_images": [PNG_B64], "denoising_strength": 0.5},
            Img2ImgContent,
        ),
        (
            "image-to-image",
            "sdruntime",
            {"alwayson_scripts": {"image_link": "https://example.com/cat.png"}},
            Img2ImgContent,
        ),
        ("image-to-image", "sdruntime", {"init_images": ["s3://my-bucket/in/cat.png"]}, Img2ImgContent),
        ("extra-single-image", "sdruntime", {"image": PNG_B64, "upscaling_resize": 4}, ExtraSingleImageContent),
        ("extra-single-image", "sdruntime", {"image": "https://example.com/a.png"}, ExtraSingleImageContent),
        ("extra-batch-images", "sdruntime", {"imageList": [{"data": PNG_B64, "name": "a"}]}, ExtraBatchImagesContent),
        ("pipeline", "comfy", {"3": {"class_type": "KSampler", "inputs": {"seed": 1}}}, PipelineContent),
        ("pipeline", "comfy", {"prompt": {"3": {"class_type": "KSampler", "inputs": {}}}}, PipelineContent),
    ],
)
def test_accepts_every_tasktype(tasktype, runtime, content, model):
    request = validate(task(tasktype, runtime, content))
    assert isinstance(request.task.content, model)


def test_aws_sample_task_file_is_accepted():
    """A task as the AWS sample's scripts write it: context "", checkpoint via alwayson_scripts."""
    body = task(
        content={
            "alwayson_scripts": {"sd_model_checkpoint": "v1-5-pruned-emaonly.safetensors"},
            "prompt": "A dog",
            "steps": 16,
            "width": 512,
            "height": 512,
        },
        id="test-t2i",
        prefix="output",
        context="",
    )
    request = validate(body)
    assert request.task.metadata.context == ""
    assert request.task.content.checkpoint == "v1-5-pruned-emaonly.safetensors"


def test_unknown_content_fields_are_forwarded_not_dropped():
    request = validate(
        task(content={"prompt": "x", "enable_hr": True, "override_settings": {"CLIP_stop_at_last_layers": 2}})
    )
    dumped = request.task.content.model_dump()
    assert dumped["enable_hr"] is True and dumped["override_settings"] == {"CLIP_stop_at_last_layers": 2}


def test_id_is_generated_when_absent_and_kept_when_given():
    generated = validate(task()).task.with_id()
    assert len(generated.id) == 32
    assert validate(task(id="my_id-1")).task.with_id().id == "my_id-1"


@pytest.mark.parametrize(
    ("body", "field", "words"),
    [
        (task(runtime=None), "task", "neither a runtime (metadata.runtime) nor a checkpoint"),
        ({"task": {"metadata": {"tasktype": "text-to-image"}, "content": {}}}, "task", "configured runtimes: comfy"),
        (task(runtime="Bad_Name"), "task.metadata.runtime", "pattern"),
        (task(id="bad id!"), "task.metadata.id", "pattern"),
        (task(id="x" * 65), "task.metadata.id", "pattern"),
        (task(prefix="a/../b"), "task.metadata.prefix", ".."),
        (task(prefix="/abs"), "task.metadata.prefix", "pattern"),
        (task(content={"width": 513}), "task.content.width", "multiple of 8"),
        (task(content={"height": 4096}), "task.content.height", "2048"),
        (task(content={"steps": 0}), "task.content.steps", "greater than or equal to 1"),
        (task(content={"batch_size": 8, "n_iter": 4}), "task.content", "exceeds 16"),
        (task(content={"sampler_name": "Nope"}), "task.content.sampler_name", "Euler a"),
        (task(content={"cfg_scale": 99}), "task.content.cfg_scale", "30"),
        (task(content={"seed": -2}), "task.content.seed", "-1"),
        (task(content={"width": "64"}), "task.content.width", "valid integer"),
        (task(content={"seed": False}), "task.content.seed", "valid integer"),
        (task(content={"steps": True}), "task.content.steps", "valid integer"),
        (task(content={"cfg_scale": "7"}), "task.content.cfg_scale", "valid number"),
        (
            task("extra-single-image", content={"image": PNG_B64, "upscaling_resize": "2"}),
            "task.content.upscaling_resize",
            "valid number",
        ),
        (task("pipeline", "sdruntime", {"1": {"class_type": "X"}}), "task", "cannot serve tasktype 'pipeline'"),
        (task("text-to-image", "comfy"), "task", "cannot serve tasktype 'text-to-image'"),
        (task(runtime="unknown-rt"), "task", "configured runtimes: comfy, sdruntime"),
        (task(context={"blob": "x" * 20000}), "task.metadata.context", "at most 16384"),
        (task("image-to-image", content={"init_images": ["not*base64"]}), "task.content.init_images[0]", "base64"),
        (
            task("image-to-image", content={"init_images": ["file:///etc/passwd"]}),
            "task.content.init_images[0]",
            "scheme",
        ),
        (task("image-to-image", content={"prompt": "no image"}), "task.content", "init_images"),
        (
            task("extra-single-image", content={"image": PNG_B64, "resize_mode": 1}),
            "task.content",
            "upscaling_resize_w",
        ),
        (task("pipeline", "comfy", {}), "task.content", "no nodes"),
        (task(tasktype="video"), "task.metadata.tasktype", "text-to-image"),
        ({"task": {"metadata": {"runtime": "sdruntime", "tasktype": "text-to-image"}}}, "task.content", "required"),
        (
            {"task": {"metadata": {"runtime": "sdruntime", "tasktype": "text-to-image", "extra": 1}, "content": {}}},
            "task.metadata.extra",
            "not permitted",
        ),
    ],
)
def test_rejects_bad_input_naming_the_field(body, field, words):
    message = rejection(body)
    assert f"{field}:" in message, message
    assert words in message, message


def test_metadata_and_content_errors_are_reported_together():
    message = rejection(task(prefix="..", content={"width": 7}))
    assert "task.metadata.prefix" in message and "task.content.width" in message


def test_without_runtimes_context_only_shape_is_checked():
    """The agent trusts the API's routing; it re-validates shape only."""
    TaskRequest.model_validate(task(runtime="anything"))


def test_image_refs_are_classified():
    assert parse_image_ref(PNG_B64).kind == "base64"
    assert parse_image_ref("data:image/png;base64," + PNG_B64).decode().startswith(b"\x89PNG")
    ref = parse_image_ref("s3://bucket-a/path/to/x.png")
    assert (ref.kind, ref.bucket, ref.key) == ("s3", "bucket-a", "path/to/x.png")
    assert parse_image_ref("https://example.com/x.png").kind == "https"
    for bad in ["http://example.com/x.png", "https://user:pw@example.com/x", "s3://B/x", "", "%%%"]:
        with pytest.raises(ValueError):
            parse_image_ref(bad)


def test_fingerprint_is_stable_and_sensitive_to_content():
    a = validate(task(id="t1", content={"prompt": "a", "steps": 10})).task
    b = validate(json.loads(json.dumps(task(id="t1", content={"steps": 10, "prompt": "a"})))).task
    c = validate(task(id="t1", content={"prompt": "b", "steps": 10})).task
    assert a.fingerprint() == b.fingerprint() != c.fingerprint()


def test_task_message_carries_task_or_claim_check_not_both():
    inner = validate(task(id="t1")).task
    TaskMessage(id="t1", runtime="sdruntime", submitted_at="2026-01-01T00:00:00Z", task=inner)
    TaskMessage(id="t1", runtime="sdruntime", submitted_at="2026-01-01T00:00:00Z", claim_check="s3://b/_claims/t1.json")
    with pytest.raises(ValidationError):
        TaskMessage(id="t1", runtime="sdruntime", submitted_at="2026-01-01T00:00:00Z")
    with pytest.raises(ValidationError):
        TaskMessage(
            id="t1", runtime="sdruntime", submitted_at="2026-01-01T00:00:00Z", task=inner, claim_check="s3://b/k"
        )


def test_keys_are_deterministic():
    assert image_key("output", "abc", 1) == "output/abc/abc-1.png"
    assert image_key("a/b/", "abc", 2) == "a/b/abc/abc-2.png"
    assert info_key("output", "abc") == "output/abc/abc.json"


def test_completion_event_keeps_sample_fields():
    event = CompletionEvent(id="t", runtime="r", status="succeeded", result=True, image_url=["s3://b/k"], attempt=1)
    dumped = event.model_dump(mode="json")
    assert {"id", "result", "image_url", "output_url", "context", "status", "attempt", "timings"} <= set(dumped)


def test_error_paths_drop_model_names_but_keep_capitalised_fields():
    from sdeks.contract.errors import field_path

    loc = ("task", "content", "Txt2ImgContent", "override_settings", "CLIP_stop_at_last_layers")
    assert field_path(loc) == "task.content.override_settings.CLIP_stop_at_last_layers"
    assert field_path(("task", "content", "function-after[_x(), Model]", "images", 0)) == "task.content.images[0]"
