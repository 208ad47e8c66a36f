"""OpenAPI 3.1 document of the API, generated from the contract models.

    python -m sdeks.api.openapi > docs/openapi.json

A test keeps docs/openapi.json equal to :func:`openapi_document` and validates
every answer the handler gives in the tests against it.
"""

from __future__ import annotations

import json
import sys
from typing import Any

from pydantic.json_schema import models_json_schema

from sdeks.contract import (
    API_VERSION,
    MAX_REQUEST_BYTES,
    MAX_WAIT_S,
    ErrorBody,
    ErrorCode,
    RuntimeInfo,
    SubmitResponse,
    TaskRequest,
    TaskStatus,
)
from sdeks.contract.task import ID_PATTERN

REF = "#/components/schemas/{model}"


def _error(description: str, ref: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": {"$ref": ref}}}}


def openapi_document() -> dict[str, Any]:
    refs, defs = models_json_schema(
        [
            (TaskRequest, "validation"),
            (SubmitResponse, "serialization"),
            (TaskStatus, "serialization"),
            (RuntimeInfo, "serialization"),
            (ErrorBody, "serialization"),
        ],
        ref_template=REF,
    )
    ref = {model: schema["$ref"] for (model, _mode), schema in refs.items()}
    err = ref[ErrorBody]
    forbidden = _error("missing or invalid x-api-key (API Gateway / local adapter)", err)
    throttled = _error(
        f"{ErrorCode.THROTTLED} or {ErrorCode.QUOTA_EXCEEDED}: the usage plan (answered by API Gateway)", err
    )
    unavailable = _error("an AWS service failed; retry the same request (with the same id it is safe)", err)
    internal = _error("a bug or a misconfigured deployment (logged); never caused by input", err)
    id_param = {
        "name": "id",
        "in": "path",
        "required": True,
        "schema": {"type": "string", "pattern": ID_PATTERN},
    }
    wait_param = {
        "name": "wait",
        "in": "query",
        "required": False,
        "description": f"hold the request up to this many seconds (at most {MAX_WAIT_S}) until the task ends",
        "schema": {"type": "integer", "minimum": 0, "maximum": MAX_WAIT_S, "default": 0},
    }
    presign_param = {
        "name": "presign",
        "in": "query",
        "required": False,
        "description": (
            "1: add image_urls, presigned HTTPS GET URLs of the images; 0: leave them out; absent: as the "
            "deployment is configured (off unless enabled)"
        ),
        "schema": {"type": "string", "enum": ["0", "1", "true", "false", "yes", "no"]},
    }
    status_answer = {
        "description": "the task's status",
        "content": {"application/json": {"schema": {"$ref": ref[TaskStatus]}}},
    }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "sdeks API",
            "version": API_VERSION,
            "description": (
                "Asynchronous Stable Diffusion inference. Submit a task, poll its status, fetch images from S3. "
                'Every error is JSON {"error": {"code", "message", "details"}}. Unknown routes answer 404 '
                f"{ErrorCode.NOT_FOUND}, a wrong method 405 {ErrorCode.METHOD_NOT_ALLOWED} (with an Allow header)."
            ),
        },
        "servers": [
            {
                "url": "https://{api_id}.execute-api.{region}.amazonaws.com/{stage}",
                "variables": {
                    "api_id": {"default": "api"},
                    "region": {"default": "us-east-1"},
                    "stage": {"default": "prod"},
                },
            }
        ],
        "security": [{"api_key": []}],
        "paths": {
            f"/{API_VERSION}": {
                "post": {
                    "operationId": "submitTask",
                    "summary": "Submit a task (idempotent per id)",
                    "description": (
                        "Same id + same body → the same 202, enqueued once; same id + another body → 409. "
                        f"Bodies up to {MAX_REQUEST_BYTES} bytes; Content-Type application/json (a missing "
                        "Content-Type is read as JSON)."
                    ),
                    "parameters": [wait_param, presign_param],
                    "requestBody": {
                        "required": True,
                        "content": {"application/json": {"schema": {"$ref": ref[TaskRequest]}}},
                    },
                    "responses": {
                        "200": {
                            **status_answer,
                            "description": "with ?wait=N: the task ended within N seconds; its final status",
                        },
                        "202": {
                            "description": "queued (or already queued: a duplicate submission)",
                            "headers": {"Location": {"schema": {"type": "string"}, "description": "status_url"}},
                            "content": {"application/json": {"schema": {"$ref": ref[SubmitResponse]}}},
                        },
                        "400": _error(
                            f"{ErrorCode.MALFORMED_JSON}, {ErrorCode.MALFORMED_BODY}, {ErrorCode.VALIDATION_ERROR} "
                            f"(details name each field), {ErrorCode.UNKNOWN_RUNTIME} (message lists the configured "
                            f"runtimes), {ErrorCode.UNSUPPORTED_TASKTYPE}, {ErrorCode.UNKNOWN_MODEL} / "
                            f"{ErrorCode.AMBIGUOUS_MODEL} (a task naming no runtime: no runtime, or several, declare "
                            f"its checkpoint; details[0].available lists the checkpoints by runtime), "
                            f"{ErrorCode.INVALID_QUERY} (wait, presign), {ErrorCode.OVER_BUDGET} (the task asks more "
                            "megapixel-steps than its runtime's max_work)",
                            err,
                        ),
                        "403": forbidden,
                        "409": _error(f"{ErrorCode.CONFLICT}: this id was submitted with a different body", err),
                        "413": _error(f"{ErrorCode.PAYLOAD_TOO_LARGE}: body over {MAX_REQUEST_BYTES} bytes", err),
                        "415": _error(f"{ErrorCode.UNSUPPORTED_MEDIA_TYPE}: Content-Type is not application/json", err),
                        "429": throttled,
                        "500": internal,
                        "503": unavailable,
                    },
                }
            },
            f"/{API_VERSION}/tasks/{{id}}": {
                "get": {
                    "operationId": "getTask",
                    "summary": "Status of a task; with ?wait=N, once it ends (or after N seconds)",
                    "parameters": [id_param, wait_param, presign_param],
                    "responses": {
                        "200": status_answer,
                        "400": _error(f"{ErrorCode.INVALID_ID} or {ErrorCode.INVALID_QUERY}", err),
                        "403": forbidden,
                        "404": _error(f"{ErrorCode.NOT_FOUND}: no task with this id", err),
                        "429": throttled,
                        "500": internal,
                        "503": unavailable,
                    },
                }
            },
            f"/{API_VERSION}/tasks/{{id}}/cancel": {
                "post": {
                    "operationId": "cancelTask",
                    "summary": "Cancel a queued or running task (idempotent)",
                    "description": (
                        "A queued task never runs; a running one is interrupted. Both end as status cancelled, "
                        "with a completion event whose status is cancelled. Cancelling again answers the same."
                    ),
                    "parameters": [id_param],
                    "responses": {
                        "200": {**status_answer, "description": "the task, now (or already) cancelled"},
                        "400": _error(f"{ErrorCode.INVALID_ID}", err),
                        "403": forbidden,
                        "404": _error(f"{ErrorCode.NOT_FOUND}: no task with this id", err),
                        "409": _error(
                            f"{ErrorCode.TASK_FINISHED}: the task already succeeded or failed (details.status)", err
                        ),
                        "429": throttled,
                        "500": internal,
                        "503": unavailable,
                    },
                }
            },
            f"/{API_VERSION}/runtimes": {
                "get": {
                    "operationId": "listRuntimes",
                    "summary": "The configured runtimes, the tasktypes and the checkpoints each serves",
                    "responses": {
                        "200": {
                            "description": "configured runtimes",
                            "content": {
                                "application/json": {"schema": {"type": "array", "items": {"$ref": ref[RuntimeInfo]}}}
                            },
                        },
                        "403": forbidden,
                        "429": throttled,
                        "500": internal,
                    },
                }
            },
        },
        "components": {
            "schemas": defs["$defs"],
            "securitySchemes": {"api_key": {"type": "apiKey", "in": "header", "name": "x-api-key"}},
        },
    }


def render() -> str:
    return json.dumps(openapi_document(), indent=2, sort_keys=False, ensure_ascii=False) + "\n"


if __name__ == "__main__":
    sys.stdout.write(render())
