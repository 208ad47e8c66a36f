"""The ComfyUI node cache: signatures, what a second prompt reruns, and the bounds."""

from __future__ import annotations

import dataclasses
import io

import pytest
import torch
from PIL import Image

from sd_runtime.comfyui import nodes
from sd_runtime.comfyui.cache import NodeCache, signatures
from sd_runtime.comfyui.graph import execute, validate
from sd_runtime.comfyui.nodes import Context
from tests.integration.test_comfyui_api import default_workflow, img2img_workflow
from tests.unit.test_comfyui_graph import state


def png(color: str) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (16, 16), color).save(buf, format="PNG")
    return buf.getvalue()


def sigs(wf: dict, st) -> dict[str, str]:
    plan = validate(wf, st)
    return signatures(wf, plan.order, plan.inputs, Context(st.engine, st.files, wf, "p1"))


def test_a_change_reaches_the_node_and_what_follows_only():
    st = state()
    base = sigs(default_workflow(seed=1), st)
    assert sigs(default_workflow(seed=1), st) == base
    reseeded = sigs(default_workflow(seed=2), st)
    assert [n for n in base if base[n] != reseeded[n]] == ["3", "8", "9"]  # KSampler, VAEDecode, SaveImage
    wf = default_workflow(seed=1)
    wf["3"]["inputs"]["positive"] = ["7", 0]  # a link to another node is another signature too
    assert sigs(wf, st)["3"] != base["3"]


def test_load_image_signature_follows_the_file_content():
    st = state()
    st.files.put("input", "", "a.png", png("red"))
    first = sigs(img2img_workflow("a.png"), st)
    st.files.put("input", "", "a.png", png("blue"))  # the same name, uploaded again with overwrite
    second = sigs(img2img_workflow("a.png"), st)
    assert first["10"] != second["10"] and first["11"] != second["11"] and first["4"] == second["4"]


def test_second_prompt_runs_only_what_changed(monkeypatch):
    calls: list[str] = []

    def counting(name: str, out: tuple):
        def fn(ctx, **kwargs):
            calls.append(name)
            return out

        monkeypatch.setitem(nodes.NODES, name, dataclasses.replace(nodes.NODES[name], fn=fn))

    for name, out in [
        ("CheckpointLoaderSimple", ("model", "clip", "vae")),
        ("CLIPTextEncode", ("cond",)),
        ("EmptyLatentImage", ({"samples": torch.zeros(1, 4, 8, 8)},)),
        ("KSampler", ({"samples": torch.ones(1, 4, 8, 8)},)),
        ("VAEDecode", (torch.zeros(1, 64, 64, 3),)),
        ("SaveImage", ({"ui": {"images": []}},)),
    ]:
        counting(name, out)
    st, cache = state(), NodeCache()

    def run(wf: dict) -> list[str]:
        calls.clear()
        cached: list[list[str]] = []
        plan = validate(wf, st)
        ctx = Context(st.engine, st.files, wf, "p")
        execute(plan, ctx, lambda n: None, lambda n, ui: None, cached.append, cache)
        return cached[0]

    assert run(default_workflow(seed=1)) == [] and len(calls) == 7
    assert sorted(run(default_workflow(seed=1))) == ["3", "4", "5", "6", "7", "8"] and calls == ["SaveImage"]
    run(default_workflow(seed=2))
    assert sorted(calls) == ["KSampler", "SaveImage", "VAEDecode"]
    cache.clear()
    assert run(default_workflow(seed=2)) == [] and len(calls) == 7


@pytest.mark.parametrize(("max_entries", "max_bytes", "kept"), [(2, 10**9, ["a", "b"]), (10, 300, ["a", "c"])])
def test_bounds(max_entries, max_bytes, kept):
    cache = NodeCache(max_entries=max_entries, max_bytes=max_bytes)
    cache.replace(
        {
            "a": ({"samples": torch.zeros(50)},),  # 200 bytes
            "b": (torch.zeros(100),),  # 400 bytes: over the byte bound alone
            "c": ("model",),  # no tensors
        }
    )
    assert [k for k in "abc" if cache.get(k) is not None] == kept
    cache.replace({"d": ("x",)})  # a new prompt's outputs replace the previous ones
    assert cache.get("a") is None and len(cache) == 1
