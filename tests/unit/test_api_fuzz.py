"""Garbage in, never a 5xx out: random bytes, absurd JSON, wrong types, odd events."""

from __future__ import annotations

import json
import random
import string

import pytest

from sdeks.api.handler import handler
from tests.fixtures.api import proxy_event, txt2img

SEED = 20240611


def _random_json(rng: random.Random, depth: int = 0):
    kinds = ["int", "float", "str", "bool", "null", "list", "dict", "bigint"]
    kind = rng.choice(kinds if depth < 4 else kinds[:5])
    if kind == "int":
        return rng.randint(-(2**70), 2**70)
    if kind == "bigint":
        return int("9" * rng.randint(20, 4000))
    if kind == "float":
        return rng.choice([rng.uniform(-1e308, 1e308), 1e-320, -0.0])
    if kind == "str":
        return "".join(
            rng.choice(string.printable + "\u00e9\u2603\U0001f600\ud800\udfff") for _ in range(rng.randint(0, 40))
        )
    if kind == "bool":
        return rng.random() < 0.5
    if kind == "null":
        return None
    if kind == "list":
        return [_random_json(rng, depth + 1) for _ in range(rng.randint(0, 4))]
    return {
        rng.choice(
            ["task", "metadata", "content", "id", "runtime", "tasktype", "prefix", "context", "x"]
        ): _random_json(rng, depth + 1)
        for _ in range(rng.randint(0, 4))
    }


def _mutations(rng: random.Random):
    """Valid requests with one field replaced by a random value."""
    paths = [
        ("task",),
        ("task", "metadata"),
        ("task", "metadata", "id"),
        ("task", "metadata", "runtime"),
        ("task", "metadata", "tasktype"),
        ("task", "metadata", "prefix"),
        ("task", "metadata", "context"),
        ("task", "content"),
        ("task", "content", "width"),
        ("task", "content", "steps"),
        ("task", "content", "seed"),
        ("task", "content", "sampler_name"),
        ("task", "content", "prompt"),
        ("task", "content", "alwayson_scripts"),
        ("task", "content", "init_images"),
    ]
    for _ in range(120):
        body = txt2img("sda")
        *parents, last = rng.choice(paths)
        node = body
        for part in parents:
            node = node[part]
        node[last] = _random_json(rng)
        yield json.dumps(body)


def _assert_not_5xx(response: dict) -> dict:
    assert response["statusCode"] < 500, response
    payload = json.loads(response["body"])
    if response["statusCode"] >= 400:
        assert set(payload["error"]) == {"code", "message", "details"}
        assert "Traceback" not in response["body"]
    return payload


@pytest.fixture
def post(shared_api):
    def _post(raw, content_type: str | None = "application/json", base64_body: bool = False):
        headers = {"Content-Type": content_type} if content_type else {}
        event = proxy_event("POST", "/v1alpha2", raw, headers=headers, base64_body=base64_body)
        answer = shared_api.call_event(event)  # also checks the body against docs/openapi.json
        assert answer.status < 500, answer.json
        return answer.json

    return _post


def test_random_bytes(post):
    rng = random.Random(SEED)
    for _ in range(60):
        data = bytes(rng.getrandbits(8) for _ in range(rng.randint(0, 300)))
        post(data, base64_body=True)
        post(data.decode("latin-1"))


def test_random_json_documents(post):
    rng = random.Random(SEED + 1)
    for _ in range(150):
        post(json.dumps(_random_json(rng)))


def test_mutated_valid_requests(post):
    rng = random.Random(SEED + 2)
    for raw in _mutations(rng):
        post(raw)


@pytest.mark.parametrize("depth", [50, 900, 5000, 100_000])
def test_deeply_nested(post, depth):
    post("[" * depth + "]" * depth)
    post('{"a":' * depth + "1" + "}" * depth)
    context = "[" * depth + "]" * depth
    body = json.dumps(txt2img("sda")).replace('"prefix": "output"', f'"prefix": "output", "context": {context}')
    post(body)


def test_huge_numbers_and_odd_literals(post):
    for raw in [
        '{"task": {"metadata": {"runtime": "sda", "tasktype": "text-to-image"}, "content": {"steps": 1e400}}}',
        '{"task": {"metadata": {"runtime": "sda", "tasktype": "text-to-image"}, "content": {"seed": '
        + "9" * 5000
        + "}}}",
        '{"task": {"metadata": {"runtime": "sda", "tasktype": "text-to-image"}, "content": {"width": -Infinity}}}',
        '{"task": {"metadata": {"runtime": "sda", "tasktype": "text-to-image"}, "content": {"cfg_scale": NaN}}}',
        '"\\ud800"',
        '{"task": "\\u0000"}',
        "\ufeff{}",
        "null",
        "true",
        "1" * 10000,
    ]:
        post(raw)


def test_wrong_types_everywhere(post):
    for value in [None, 0, 1.5, "s", [], {}, [None], True]:
        post(json.dumps({"task": value}))
        post(json.dumps({"task": {"metadata": value, "content": value}}))
        post(json.dumps({"task": {"metadata": {"runtime": value, "tasktype": value, "id": value}, "content": {}}}))


@pytest.mark.parametrize(
    "content_type",
    ["", ";;;", "application/json; charset", 'application/json; charset="', "\x00", "a" * 5000],
)
def test_odd_content_types(post, content_type):
    post(json.dumps(txt2img("sda")), content_type=content_type)


def test_odd_events(shared_api):
    events = [
        None,
        [],
        "string",
        {},
        {"httpMethod": None, "path": None},
        {"httpMethod": 5, "path": ["/v1alpha2"], "headers": "x", "body": 7},
        {"httpMethod": "POST", "path": "/v1alpha2", "headers": {"Content-Type": 5}, "body": {"task": 1}},
        {"httpMethod": "POST", "path": "/v1alpha2", "multiValueHeaders": {"content-type": []}, "body": "{}"},
        {"httpMethod": "GET", "path": "/v1alpha2/tasks/x", "queryStringParameters": {"presign": None}},
        {"httpMethod": "GET", "path": "/v1alpha2/tasks/x", "multiValueQueryStringParameters": {"presign": ["1", 2]}},
        {"httpMethod": "POST", "path": "/v1alpha2", "requestContext": "nope", "body": "{}"},
        {"httpMethod": "POST", "path": "/v1alpha2", "isBase64Encoded": True, "body": "===="},
    ]
    for event in events:
        _assert_not_5xx(handler(event, None))


def test_random_paths_methods_and_headers(shared_api):
    rng = random.Random(SEED + 3)
    alphabet = string.ascii_letters + string.digits + "/._-%?#~ \u00e9"
    for _ in range(200):
        path = rng.choice(["/v1alpha2", "/v1alpha2/tasks/", "/v1alpha2/runtimes", "/"]) + "".join(
            rng.choice(alphabet) for _ in range(rng.randint(0, 30))
        )
        method = rng.choice(["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS", "get", "BREW", ""])
        headers = {"".join(rng.choice(string.ascii_letters) for _ in range(5)): "v", "content-type": "application/json"}
        event = proxy_event(method, path, rng.choice([None, "", "{}", "garbage"]), headers=headers)
        assert shared_api.call_event(event).status < 500


@pytest.mark.parametrize("where", ["context", "extra_field", "key"])
def test_lone_surrogates_are_400(post, where):
    body = txt2img("sda")
    if where == "context":
        body["task"]["metadata"]["context"] = {"note": "\ud800"}
    elif where == "extra_field":
        body["task"]["content"]["override_settings"] = {"x": "a\udfffb"}
    else:
        body["task"]["metadata"]["context"] = {"\udc00": 1}
    answer = post(json.dumps(body))  # json.dumps escapes them as \\udXXX, as a client would send
    assert answer["error"]["code"] == "malformed_json"
