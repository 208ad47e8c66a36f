"""A prompt loads back only the results it saved itself; uploads stay shared inputs."""

from __future__ import annotations

from sd_runtime.comfyui.files import FileStore


def test_results_belong_to_their_prompt():
    store = FileStore()
    store.put("output", "", "ComfyUI_00001_.png", b"a", owner="prompt-a")
    store.put("temp", "", "t.png", b"t", owner="prompt-a")
    store.put("input", "", "up.png", b"u")
    assert store.load_input("ComfyUI_00001_.png [output]", "prompt-a") == b"a"
    assert store.load_input("t.png [temp]", "prompt-a") == b"t"
    for prompt in ("prompt-b", None):
        assert store.load_input("ComfyUI_00001_.png [output]", prompt) is None
        assert store.load_input("t.png [temp]", prompt) is None
    assert store.load_input("up.png", "prompt-b") == b"u"
    store.put("output", "", "ComfyUI_00001_.png", b"b", owner="prompt-b")  # overwritten: the new owner only
    assert store.load_input("ComfyUI_00001_.png [output]", "prompt-a") is None
    assert store.get("output", "", "ComfyUI_00001_.png") == b"b"  # /view (the agent's fetch) is unchanged
