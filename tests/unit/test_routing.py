"""Routing by runtime name or checkpoint: resolution, message attributes, filter policies, config rules."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from sdeks.config import parse_config, resource_layout
from sdeks.contract import MAX_MODELS_PER_RUNTIME, ErrorCode, TaskRequest, checkpoint_key, filter_policy

RUNTIMES = {"alpha": "sdwebui", "beta": "sdwebui", "comfy": "comfyui", "plain": "sdwebui"}
MODELS = {
    "alpha": ["alpha.safetensors", "shared.safetensors"],
    "beta": ["beta-xl", "shared.safetensors"],
    "comfy": ["alpha.safetensors", "flux.safetensors"],
}


def request(content: dict, tasktype: str = "text-to-image", runtime: str | None = None) -> dict:
    metadata = {"tasktype": tasktype, **({"runtime": runtime} if runtime else {})}
    return {"task": {"metadata": metadata, "content": content}}


def route(body: dict):
    task = TaskRequest.model_validate(body, context={"runtimes": RUNTIMES, "models": MODELS}).task
    return task.route(RUNTIMES, MODELS)


def refusal(body: dict) -> dict:
    with pytest.raises(ValidationError) as info:
        TaskRequest.model_validate(body, context={"runtimes": RUNTIMES, "models": MODELS})
    (err,) = info.value.errors()
    return err


def scripts(name: str) -> dict:
    return {"alwayson_scripts": {"sd_model_checkpoint": name}}


def loader(name: object) -> dict:
    return {
        "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": name}},
        "9": {"class_type": "SaveImage", "inputs": {"images": ["4", 0]}},
    }


@pytest.mark.parametrize(
    ("name", "key"),
    [
        ("v1-5.safetensors [6ce0161689]", "v1-5"),
        ("v1-5.safetensors", "v1-5"),
        (" v1-5 ", "v1-5"),
        ("old.ckpt", "old"),
        ("sdxl/base.safetensors", "sdxl/base"),
        ("diffusers-dir", "diffusers-dir"),
        (".safetensors", ".safetensors"),
    ],
)
def test_checkpoint_names_match_as_a1111_matches_them(name, key):
    assert checkpoint_key(name) == key


@pytest.mark.parametrize(
    ("content", "tasktype", "runtime", "model", "attributes"),
    [
        # declared by beta only: SNS routes it by model alone
        (scripts("beta-xl"), "text-to-image", "beta", "beta-xl", {"model": "beta-xl"}),
        (
            {"override_settings": {"sd_model_checkpoint": "beta-xl [0123abcd]"}},
            "text-to-image",
            "beta",
            "beta-xl",
            None,
        ),
        # alpha's checkpoint is declared by comfy as well: the resolved runtime is published with it
        (
            scripts("alpha"),
            "text-to-image",
            "alpha",
            "alpha.safetensors",
            {"runtime": "alpha", "model": "alpha.safetensors"},
        ),
        (
            loader("alpha.safetensors"),
            "pipeline",
            "comfy",
            "alpha.safetensors",
            {"runtime": "comfy", "model": "alpha.safetensors"},
        ),
        (loader("flux.safetensors"), "pipeline", "comfy", "flux.safetensors", {"model": "flux.safetensors"}),
        # two checkpoints that only alpha declares together: no single model to route by
        (
            {**scripts("alpha"), "override_settings": {"sd_model_checkpoint": "shared"}},
            "text-to-image",
            "alpha",
            None,
            {"runtime": "alpha"},
        ),
    ],
)
def test_a_task_naming_only_a_checkpoint_goes_to_the_runtime_that_declares_it(
    content, tasktype, runtime, model, attributes
):
    routed = route(request(content, tasktype))
    assert (routed.runtime, routed.model) == (runtime, model)
    if attributes is not None:
        assert routed.attributes() == {"tasktype": tasktype, **attributes}


def test_a_named_runtime_wins_and_is_always_published():
    routed = route(request(scripts("alpha.safetensors"), runtime="beta"))
    assert routed.runtime == "beta" and routed.model is None  # beta does not declare alpha
    assert routed.attributes() == {"tasktype": "text-to-image", "runtime": "beta"}
    routed = route(request(scripts("shared"), runtime="beta"))
    assert routed.attributes() == {"tasktype": "text-to-image", "runtime": "beta", "model": "shared.safetensors"}


def test_validation_does_not_fill_the_runtime_the_api_does():
    task = TaskRequest.model_validate(request(scripts("beta-xl")), context={"runtimes": RUNTIMES, "models": MODELS})
    assert task.task.metadata.runtime is None
    assert task.task.with_runtime("beta").metadata.runtime == "beta"


def test_an_unknown_checkpoint_is_refused_listing_what_exists():
    err = refusal(request(scripts("nope.safetensors")))
    assert err["type"] == ErrorCode.UNKNOWN_MODEL
    assert "'nope.safetensors'" in err["msg"] and "beta: beta-xl, shared.safetensors" in err["msg"]
    assert "plain: none declared" in err["msg"]
    assert err["ctx"]["field"] == "task.content.alwayson_scripts.sd_model_checkpoint"
    assert err["ctx"]["available"] == {
        "alpha": ["alpha.safetensors", "shared.safetensors"],
        "beta": ["beta-xl", "shared.safetensors"],
        "plain": [],
    }


def test_a_checkpoint_of_a_runtime_of_another_type_is_unknown_for_this_tasktype():
    err = refusal(request(scripts("flux")))
    assert err["type"] == ErrorCode.UNKNOWN_MODEL
    assert "comfy" not in err["ctx"]["available"]
    err = refusal(request(loader("beta-xl"), "pipeline"))
    assert err["type"] == ErrorCode.UNKNOWN_MODEL
    assert err["ctx"] == {"field": "task.content.4.inputs.ckpt_name", "available": {"comfy": MODELS["comfy"]}}


def test_a_checkpoint_two_runtimes_serve_is_ambiguous_without_a_runtime():
    err = refusal(request(scripts("shared.safetensors")))
    assert err["type"] == ErrorCode.AMBIGUOUS_MODEL
    assert "alpha, beta" in err["msg"] and "metadata.runtime" in err["msg"]
    assert err["ctx"]["available"] == {"alpha": MODELS["alpha"], "beta": MODELS["beta"]}


def test_a_task_naming_neither_runtime_nor_checkpoint_lists_the_runtimes():
    for body in (request({"prompt": "x"}), request(loader(["1", 0]), "pipeline")):
        err = refusal(body)
        assert err["type"] == ErrorCode.UNKNOWN_RUNTIME
        assert "configured runtimes: alpha, beta, comfy, plain" in err["msg"]


def test_filter_policy_is_the_runtime_or_its_models_when_no_runtime_is_named():
    assert filter_policy("plain", []) == {"runtime": ["plain"]}
    assert filter_policy("beta", MODELS["beta"]) == {
        "$or": [
            {"runtime": ["beta"]},
            {"runtime": [{"exists": False}], "model": ["beta-xl", "shared.safetensors"]},
        ]
    }


def config(*runtimes: dict):
    return parse_config({"project": "routes", "runtimes": list(runtimes)}, "test", environ={})


def test_the_start_checkpoint_is_always_among_the_models_and_feeds_the_layout():
    cfg = config(
        {"name": "a", "model": {"checkpoint": "a.safetensors"}},
        {"name": "b", "model": {"checkpoint": "b.safetensors"}, "models": ["b", "c.safetensors"]},
        {"name": "c", "models": ["c.safetensors"]},
    )
    assert cfg.runtime_models == {"a": ["a.safetensors"], "b": ["b", "c.safetensors"], "c": ["c.safetensors"]}
    layout = resource_layout(cfg)
    assert layout.queues_for("a").filter_policy == filter_policy("a", ["a.safetensors"])
    assert layout.queues_for("b").filter_policy == filter_policy("b", ["b", "c.safetensors"])


@pytest.mark.parametrize(
    ("runtime", "reason"),
    [
        ({"models": ["x", "x.safetensors"]}, "names of one checkpoint"),
        ({"models": [""]}, "at least 1 character"),
        ({"models": [f"m{n}" for n in range(MAX_MODELS_PER_RUNTIME + 1)]}, f"at most {MAX_MODELS_PER_RUNTIME}"),
        (
            {"models": [f"m{n}" for n in range(MAX_MODELS_PER_RUNTIME)], "model": {"checkpoint": "start"}},
            "fit one SNS filter policy",
        ),
    ],
)
def test_bad_model_lists_fail_naming_the_reason(runtime, reason):
    from sdeks.config import ConfigError

    with pytest.raises(ConfigError) as info:
        config({"name": "a", **runtime})
    assert "runtimes" in str(info.value) and reason in str(info.value)


def test_the_routing_tables_must_fit_the_api_lambdas_environment():
    from sdeks.config import ConfigError

    long_names = [f"{n}-{'x' * 240}.safetensors" for n in range(MAX_MODELS_PER_RUNTIME)]
    config({"name": "a", "models": long_names[:4]})  # about 1 KB: fits
    with pytest.raises(ConfigError) as info:
        config({"name": "a", "models": long_names}, {"name": "b", "models": long_names})
    assert "Lambda holds 4 KB" in str(info.value)
