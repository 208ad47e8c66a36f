"""Stack outputs (issue 14.2): stable keys, the model bucket and where each runtime reads its models."""

from __future__ import annotations

import json

import pytest

from sdeks.config.outputs import StackOutput, model_location
from tests.infra.helpers import logical_id
from tests.infra.test_cluster import _render

pytestmark = pytest.mark.slow


def _outputs(synth) -> dict[str, dict]:
    return synth.raw["Outputs"]


def test_every_cli_output_has_its_stable_key(synth_any):
    outputs = _outputs(synth_any)
    missing = {o.value for o in StackOutput} - set(outputs)
    assert missing <= {StackOutput.MODEL_BUCKET.value} and not missing, missing
    assert outputs[StackOutput.OUTPUT_BUCKET]["Value"] == {
        "Ref": next(k for k in synth_any.resources("AWS::S3::Bucket") if k.startswith("StorageOutput"))
    }
    assert outputs[StackOutput.API_KEY_ID]["Value"] == {"Ref": logical_id(synth_any.raw, "AWS::ApiGateway::ApiKey")}
    assert "v1alpha2" in outputs[StackOutput.API_URL]["Description"]


def test_model_bucket_and_each_runtimes_location(synth_any):
    outputs = _outputs(synth_any)
    models = next(k for k in synth_any.resources("AWS::S3::Bucket") if k.startswith("StorageModels"))
    assert outputs[StackOutput.MODEL_BUCKET]["Value"] == {"Ref": models}
    locations = json.loads(_render(outputs[StackOutput.MODEL_LOCATIONS]["Value"]))
    config = synth_any.config
    assert set(locations) == {r.name for r in config.runtimes}
    for runtime in config.runtimes:
        assert runtime.model.checkpoint
        assert locations[runtime.name] == {
            "location": model_location(f"<{models}>", runtime.model.prefix),
            "checkpoint": runtime.model.checkpoint,
        }


def test_named_model_buckets_have_no_created_bucket_output(synth_existing_buckets):
    outputs = _outputs(synth_existing_buckets)
    assert StackOutput.MODEL_BUCKET not in outputs
    locations = json.loads(_render(outputs[StackOutput.MODEL_LOCATIONS]["Value"]))
    assert locations == {"sd": {"location": "s3://my-models/sd15/"}}  # no checkpoint configured


def test_model_location_is_the_mounted_prefix():
    assert model_location("b", "models") == "s3://b/models/"
    assert model_location("b", "models/sd15") == "s3://b/models/sd15/"


def test_the_cli_reads_the_synthesized_model_locations(synth_two_runtimes):
    """`sdeks models` parses exactly what the stack outputs (same keys, same shape)."""
    from sdeks.cli.deployment import Deployment

    outputs = {key: _render(o["Value"]) for key, o in _outputs(synth_two_runtimes).items()}
    locations = Deployment("sdeks", "us-east-1", outputs=outputs).model_locations()
    for runtime in synth_two_runtimes.config.runtimes:
        location = locations[runtime.name]
        assert location.prefix == runtime.model.prefix and location.checkpoint == runtime.model.checkpoint
        assert location.uri == model_location(location.bucket, runtime.model.prefix)
