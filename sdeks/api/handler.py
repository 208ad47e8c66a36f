"""The API handler: ``POST /v1alpha2``, ``GET /v1alpha2/tasks/{id}``, ``GET /v1alpha2/runtimes``.

Entry point :func:`handler` takes an API Gateway REST proxy event. Answers:

- 202 accepted (submit), 200 (status, runtimes);
- 4xx for every client mistake, as ``{"error": {"code", "message", "details"}}``;
- 503 ``aws_unavailable`` only when DynamoDB/SNS/S3 fail (retry with the same id: safe);
- 500 ``internal_error`` only for a bug in this code or a broken deployment (logged with a traceback).

Logs are JSON lines with task id, runtime, tasktype and body size; never headers
(the API key) or the body (prompts, images).
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError

from sdeks.api.http import HttpError, Request, check_json_content_type, json_response, parse_json
from sdeks.api.settings import ConfigurationError, Settings, env_key
from sdeks.contract import (
    API_VERSION,
    SNS_MAX_MESSAGE_BYTES,
    TASKTYPES_BY_RUNTIME_TYPE,
    WEBHOOK_LOOPBACK_CONTEXT,
    RuntimeInfo,
    SubmitResponse,
    Task,
    TaskMessage,
    TaskRequest,
    claim_check_key,
    describe,
    output_prefix,
    s3_uri,
    summarize,
)
from sdeks.contract.task import ID_PATTERN
from sdeks.tasks_table import TaskTable

log = logging.getLogger("sdeks.api")
log.setLevel(logging.INFO)

ID_RE = re.compile(ID_PATTERN)
TRUE_VALUES = ("1", "true", "yes")
FALSE_VALUES = ("0", "false", "no", "")


def log_event(event: str, level: int = logging.INFO, **fields: Any) -> None:
    log.log(level, json.dumps({"event": event, **fields}, default=str, separators=(",", ":")))


def row_fields(task: Task) -> dict[str, Any]:
    """What the status row keeps of a task besides its state.

    The webhook lives here, not in the completion event: the event goes to every
    results-topic subscriber, and a receiver URL may carry a token.
    """
    meta = task.metadata
    fields: dict[str, Any] = {"tasktype": meta.tasktype, "prefix": meta.prefix}
    if meta.webhook is not None:
        fields["webhook"] = meta.webhook.model_dump(mode="json")
    return fields


def _aws_errors() -> tuple[type[BaseException], ...]:
    from botocore.exceptions import BotoCoreError, ClientError

    return (BotoCoreError, ClientError)


def _unavailable(what: str) -> HttpError:
    return HttpError(
        503,
        "aws_unavailable",
        f"{what} is temporarily unavailable; retry the same request (same id) later",
        {"retryable": True},
        {"Retry-After": "2"},
    )


class Api:
    """The routes, bound to settings and AWS clients (one instance per thread and environment)."""

    def __init__(self, settings: Settings, sns: Any, s3: Any, table: TaskTable) -> None:
        self.settings = settings
        self.sns = sns
        self.s3 = s3
        self.table = table

    @classmethod
    def from_env(cls) -> Api:
        """An Api for the current environment and thread.

        The session and the SNS/S3 clients (thread-safe) are shared per environment; the
        DynamoDB table resource (not thread-safe) is made per thread from the shared session.
        """
        key = env_key()
        with _shared_lock:
            shared = _shared.get(key)
            if shared is None:
                shared = _shared[key] = _SharedClients.create()
            table = shared.session.resource("dynamodb", config=shared.boto_config).Table(shared.settings.task_table)
        return cls(shared.settings, sns=shared.sns, s3=shared.s3, table=TaskTable(table))

    # --- routing ------------------------------------------------------------------

    def route(self, request: Request) -> dict[str, Any]:
        path = request.path
        if request.stage and path.startswith(f"/{request.stage}/{API_VERSION}"):
            path = path[len(request.stage) + 1 :]  # custom domain mapped without a base path
        if len(path) > 1:
            path = path.rstrip("/") or "/"
        routes: dict[str, Callable[[Request], dict[str, Any]]]
        parts = path.split("/")
        if path == f"/{API_VERSION}":
            routes = {"POST": self.submit}
        elif path == f"/{API_VERSION}/runtimes":
            routes = {"GET": self.runtimes}
        elif len(parts) == 4 and parts[:3] == ["", API_VERSION, "tasks"]:
            routes = {"GET": lambda req: self.status(req, parts[3])}
        else:
            raise HttpError(404, "not_found", "no such route", {"path": path[:200]})
        action = routes.get(request.method)
        if action is None:
            allowed = ", ".join(routes)
            raise HttpError(
                405,
                "method_not_allowed",
                f"method {request.method[:20]!r} not allowed here; allowed: {allowed}",
                {"allowed": list(routes)},
                {"Allow": allowed},
            )
        return action(request)

    # --- POST /v1alpha2 ---------------------------------------------------------

    def submit(self, request: Request) -> dict[str, Any]:
        body = request.body_bytes()
        check_json_content_type(request.headers.get("content-type"))
        data = parse_json(body)
        task = self._validate(data).with_id()
        fingerprint = task.fingerprint()
        meta = task.metadata
        answer = SubmitResponse(
            id=task.id,
            runtime=meta.runtime,
            output_location=s3_uri(self.settings.output_bucket, output_prefix(meta.prefix, task.id)),
            status_url=self._status_url(request, task.id),
        ).model_dump(mode="json")
        fields = {"task_id": task.id, "runtime": meta.runtime, "tasktype": meta.tasktype, "bytes": len(body)}
        try:
            submission = self.table.record_submission(task.id, meta.runtime, fingerprint, extra=row_fields(task))
        except _aws_errors() as exc:
            log_event("submit_unavailable", logging.WARNING, step="record", error=type(exc).__name__, **fields)
            raise _unavailable("the task table") from None
        if not submission.created and submission.fingerprint != fingerprint:
            log_event("submit_conflict", **fields)
            raise HttpError(
                409,
                "conflict",
                f"task id {task.id!r} was already submitted with a different body",
                {"id": task.id},
            )
        if submission.must_publish:
            claim_check = self._publish(task, fields)
            try:
                self.table.mark_enqueued(task.id)
            except _aws_errors() as exc:  # published: the agent tolerates a later duplicate, the client needs no retry
                log_event("mark_enqueued_failed", logging.WARNING, error=type(exc).__name__, **fields)
            log_event("submitted", claim_check=claim_check, duplicate=not submission.created, **fields)
        else:
            log_event("submit_duplicate", **fields)
        return json_response(202, answer, {"Location": answer["status_url"]})

    def _validate(self, data: Any) -> Task:
        runtimes = dict(self.settings.runtimes)
        try:
            context = {"runtimes": runtimes, WEBHOOK_LOOPBACK_CONTEXT: self.settings.webhook_loopback}
            return TaskRequest.model_validate(data, context=context).task
        except ValidationError as exc:
            raise self._validation_error(exc, data) from None
        except RecursionError:
            raise HttpError(400, "validation_error", "request is nested too deeply") from None

    def _validation_error(self, exc: ValidationError, data: Any) -> HttpError:
        problems = describe(exc)
        meta = (
            data.get("task", {}).get("metadata")
            if isinstance(data, dict) and isinstance(data.get("task"), dict)
            else None
        )
        runtime = meta.get("runtime") if isinstance(meta, dict) else None
        tasktype = meta.get("tasktype") if isinstance(meta, dict) else None
        configured = sorted(self.settings.runtimes)
        code = "validation_error"
        if isinstance(runtime, str) and runtime not in self.settings.runtimes:
            code = "unknown_runtime"
            message = f"unknown runtime {runtime[:64]!r}; configured runtimes: {', '.join(configured)}"
            problems = [p for p in problems if not p["message"].startswith("unknown runtime")]
            problems.insert(0, {"field": "task.metadata.runtime", "message": message})
        elif isinstance(runtime, str) and isinstance(tasktype, str):
            kind = self.settings.runtimes[runtime]
            if tasktype not in TASKTYPES_BY_RUNTIME_TYPE[kind] and len(problems) == 1:
                code = "unsupported_tasktype"
                problems = [{"field": "task.metadata.tasktype", "message": problems[0]["message"]}]
        message = "; ".join(f"{p['field']}: {p['message']}" for p in problems) if code != "validation_error" else None
        return HttpError(400, code, message or summarize(exc), problems)

    def _publish(self, task: Task, fields: dict[str, Any]) -> bool:
        """Publish the task message (inline or as a claim check); True when a claim check was used."""
        meta = task.metadata
        attributes = {
            "runtime": {"DataType": "String", "StringValue": meta.runtime},
            "tasktype": {"DataType": "String", "StringValue": meta.tasktype},
        }
        attributes_size = sum(len(k) + len(v["DataType"]) + len(v["StringValue"]) for k, v in attributes.items())
        now = datetime.now(UTC)
        message = TaskMessage(id=task.id, runtime=meta.runtime, submitted_at=now, task=task).model_dump_json()
        claim_check = len(message.encode()) + attributes_size > SNS_MAX_MESSAGE_BYTES
        try:
            if claim_check:
                key = claim_check_key(task.id)
                self.s3.put_object(
                    Bucket=self.settings.output_bucket,
                    Key=key,
                    Body=TaskRequest(task=task).model_dump_json().encode(),
                    ContentType="application/json",
                    ServerSideEncryption="AES256",
                )
                message = TaskMessage(
                    id=task.id,
                    runtime=meta.runtime,
                    submitted_at=now,
                    claim_check=s3_uri(self.settings.output_bucket, key),
                ).model_dump_json()
            self.sns.publish(TopicArn=self.settings.tasks_topic_arn, Message=message, MessageAttributes=attributes)
        except _aws_errors() as exc:
            log_event("submit_unavailable", logging.WARNING, step="publish", error=type(exc).__name__, **fields)
            try:
                self.table.release_publish(task.id)
            except _aws_errors():
                pass  # the stale-publish timeout still lets a later retry publish
            raise _unavailable("the task queue") from None
        return claim_check

    def _status_url(self, request: Request, task_id: str) -> str:
        tail = f"/{API_VERSION}/tasks/{task_id}"
        if self.settings.public_base_url:
            return self.settings.public_base_url + tail
        scheme = request.headers.get("x-forwarded-proto", "https").split(",")[0].strip().lower()
        scheme = scheme if scheme in ("http", "https") else "https"
        host = request.domain_name or "localhost"
        # execute-api hosts carry the stage in the path; custom domains map it away; local mode has none
        stage = f"/{request.stage}" if request.stage and ".execute-api." in host else ""
        return f"{scheme}://{host}{stage}{tail}"

    # --- GET /v1alpha2/tasks/{id} -----------------------------------------------

    def status(self, request: Request, task_id: str) -> dict[str, Any]:
        if not ID_RE.fullmatch(task_id):
            raise HttpError(400, "invalid_id", "task id must match [A-Za-z0-9_-]{1,64}", {"id": task_id[:80]})
        presign_arg = request.query.get("presign", "").strip().lower()
        if presign_arg not in TRUE_VALUES + FALSE_VALUES:
            raise HttpError(400, "invalid_query", "presign must be 1 or 0", {"presign": presign_arg[:20]})
        try:
            status = self.table.get(task_id)
        except _aws_errors() as exc:
            log_event("status_unavailable", logging.WARNING, task_id=task_id, error=type(exc).__name__)
            raise _unavailable("the task table") from None
        if status is None:
            raise HttpError(404, "not_found", f"no task with id {task_id!r}", {"id": task_id})
        if presign_arg in TRUE_VALUES:
            status.image_urls = [self._presign(uri) for uri in status.images if self._presignable(uri)]
        return json_response(200, status.model_dump(mode="json"))

    def _presignable(self, uri: str) -> bool:
        return uri.startswith(f"s3://{self.settings.output_bucket}/")

    def _presign(self, uri: str) -> str:
        key = uri[len(f"s3://{self.settings.output_bucket}/") :]
        return self.s3.generate_presigned_url(
            "get_object",
            Params={"Bucket": self.settings.output_bucket, "Key": key},
            ExpiresIn=self.settings.presign_expires_s,
        )

    # --- GET /v1alpha2/runtimes -----------------------------------------------

    def runtimes(self, request: Request) -> dict[str, Any]:
        infos = [
            RuntimeInfo(name=name, type=kind, tasktypes=list(TASKTYPES_BY_RUNTIME_TYPE[kind])).model_dump(mode="json")
            for name, kind in sorted(self.settings.runtimes.items())
        ]
        return json_response(200, infos)


@dataclass(frozen=True)
class _SharedClients:
    settings: Settings
    session: Any
    boto_config: Any
    sns: Any
    s3: Any

    @classmethod
    def create(cls) -> _SharedClients:
        import boto3
        from botocore.config import Config as BotoConfig

        settings = Settings.from_env()
        session = boto3.session.Session()
        boto_config = BotoConfig(retries={"max_attempts": 3, "mode": "standard"}, connect_timeout=5, read_timeout=10)
        s3_config = boto_config.merge(BotoConfig(signature_version="s3v4"))
        return cls(
            settings,
            session,
            boto_config,
            sns=session.client("sns", config=boto_config),
            s3=session.client("s3", config=s3_config),
        )


_shared: dict[tuple[str | None, ...], _SharedClients] = {}
_shared_lock = threading.Lock()
_local = threading.local()


def current_api() -> Api:
    """The Api for the current environment; one per thread (boto3 resources are not thread-safe)."""
    key = env_key()
    cached = getattr(_local, "api", None)
    if cached is None or cached[0] != key:
        cached = (key, Api.from_env())
        _local.api = cached
    return cached[1]


def handler(event: Any, context: Any = None) -> dict[str, Any]:
    """AWS Lambda entry for API Gateway REST proxy events."""
    started = time.monotonic()
    request: Request | None = None
    try:
        request = Request.from_event(event)
        response = current_api().route(request)
    except HttpError as exc:
        response = exc.response()
    except ConfigurationError as exc:
        log_event("misconfigured", logging.ERROR, error=str(exc))
        response = json_response(
            500, {"error": {"code": "internal_error", "message": "the API is misconfigured", "details": None}}
        )
    except Exception as exc:  # the one place a bug may surface: no traceback to the client, no data in the log
        log_event(
            "internal_error",
            logging.ERROR,
            error=type(exc).__name__,
            traceback="".join(traceback.format_tb(exc.__traceback__)),
        )
        response = json_response(
            500, {"error": {"code": "internal_error", "message": "internal error", "details": None}}
        )
    log_event(
        "request",
        method=request.method[:10] if request else None,
        path=request.path[:200] if request else None,
        status=response["statusCode"],
        ms=round((time.monotonic() - started) * 1000, 1),
    )
    return response
