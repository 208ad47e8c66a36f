"""The exported JSON Schema agrees with the models it is generated from."""

from __future__ import annotations

import json
import subprocess
import sys

import jsonschema
import pytest
from pydantic import ValidationError

from sdeks.contract import SCHEMAS, CompletionEvent, TaskRequest, TaskStatus, json_schema
from tests.unit.test_contract import PNG_B64, task

ACCEPTED = [
    task(content={"prompt": "a", "steps": 16}),
    task("image-to-image", content={"init_images": [PNG_B64]}),
    task("extra-single-image", content={"image": PNG_B64}),
    task("pipeline", "comfy", {"1": {"class_type": "SaveImage", "inputs": {}}}),
    task(id="abc", context={"k": [1, 2]}),
    {
        "task": {
            "metadata": {"tasktype": "text-to-image"},
            "content": {"alwayson_scripts": {"sd_model_checkpoint": "m"}},
        }
    },
]
REJECTED_BY_BOTH = [
    task(content={"width": 513}),
    task(content={"steps": 0}),
    task(id="bad id"),
    task(prefix="/abs"),
    task(tasktype="video"),
    task(runtime="Bad_Name"),
]


@pytest.mark.parametrize("body", ACCEPTED)
def test_documents_the_models_accept_validate_against_the_schema(body):
    TaskRequest.model_validate(body)
    jsonschema.validate(body, json_schema("request"))


@pytest.mark.parametrize("body", REJECTED_BY_BOTH)
def test_rejects_fail_both_models_and_schema(body):
    with pytest.raises(ValidationError):
        TaskRequest.model_validate(body)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(body, json_schema("request"))


def test_status_and_event_examples_validate():
    status = TaskStatus(id="t", runtime="r", status="queued", created_at="2026-01-01T00:00:00Z")
    jsonschema.validate(status.model_dump(mode="json"), json_schema("status"))
    event = CompletionEvent(id="t", runtime="r", status="failed", result=False, error="boom", attempt=3)
    jsonschema.validate(event.model_dump(mode="json"), json_schema("event"))


@pytest.mark.parametrize("name", list(SCHEMAS))
def test_every_schema_is_valid_json_schema(name):
    jsonschema.Draft202012Validator.check_schema(json_schema(name))


def test_cli_prints_schema_and_rejects_unknown_name():
    out = subprocess.run(
        [sys.executable, "-m", "sdeks", "schema", "request"], capture_output=True, text=True, check=True
    )
    assert json.loads(out.stdout)["title"] == "TaskRequest"
    bad = subprocess.run([sys.executable, "-m", "sdeks", "schema", "nope"], capture_output=True, text=True)
    assert bad.returncode == 2 and "choose one of" in bad.stderr and "Traceback" not in bad.stderr
