"""docs/openapi.json is generated from the contract, valid OpenAPI 3.1, and current."""

from __future__ import annotations

import json

from openapi_spec_validator import validate

from sdeks.api.openapi import openapi_document, render
from sdeks.contract import MAX_WAIT_S
from tests.fixtures.api import OPENAPI_JSON


def test_openapi_json_is_up_to_date():
    assert OPENAPI_JSON.read_text() == render(), "regenerate: python -m sdeks.api.openapi > docs/openapi.json"


def test_openapi_document_is_valid():
    validate(json.loads(OPENAPI_JSON.read_text()))


def test_openapi_covers_routes_errors_and_key():
    doc = openapi_document()
    assert set(doc["paths"]) == {
        "/v1alpha2",
        "/v1alpha2/tasks/{id}",
        "/v1alpha2/tasks/{id}/cancel",
        "/v1alpha2/runtimes",
    }
    post = doc["paths"]["/v1alpha2"]["post"]
    assert {"200", "202", "400", "403", "409", "413", "415", "503"} <= set(post["responses"])
    cancel = doc["paths"]["/v1alpha2/tasks/{id}/cancel"]["post"]
    assert {"200", "400", "404", "409", "503"} <= set(cancel["responses"])
    for operation in (post, doc["paths"]["/v1alpha2/tasks/{id}"]["get"]):
        [wait] = [p for p in operation["parameters"] if p["name"] == "wait"]
        assert wait["schema"]["maximum"] == MAX_WAIT_S == 25
    status_states = doc["components"]["schemas"]["TaskStatus"]["properties"]["status"]["enum"]
    assert "cancelled" in status_states
    assert post["requestBody"]["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/TaskRequest"}
    assert {"200", "400", "404"} <= set(doc["paths"]["/v1alpha2/tasks/{id}"]["get"]["responses"])
    assert doc["components"]["securitySchemes"]["api_key"] == {"type": "apiKey", "in": "header", "name": "x-api-key"}
    assert doc["security"] == [{"api_key": []}]
    assert {"ErrorBody", "SubmitResponse", "TaskStatus", "RuntimeInfo", "TaskRequest"} <= set(
        doc["components"]["schemas"]
    )
