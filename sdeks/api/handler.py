"""The API handler: submit, status (optionally waiting for the end), cancel, runtimes.

Routes: ``POST /v1alpha2[?wait=N]``, ``GET /v1alpha2/tasks/{id}[?wait=N&presign=0|1]``,
``POST /v1alpha2/tasks/{id}/cancel``, ``GET /v1alpha2/runtimes``.

Entry point :func:`handler` takes an API Gateway REST proxy event; Powertools' REST resolver
routes it (path and query parameters validated by its validation layer), this module answers:

- 202 accepted (submit), 200 (status, cancel, runtimes; submit with ``?wait=N`` when the task
  ended within N seconds: its final status);
- 4xx for every client mistake, as ``{"error": {"code", "message", "details"}}``, with the
  contract's :class:`ErrorCode` (404 for an unknown route, 405 with ``Allow`` for a wrong method);
- 503 ``aws_unavailable`` only when DynamoDB/SNS/S3 fail (retry with the same id: safe);
- 500 ``internal_error`` only for a bug in this code or a broken deployment (logged with a traceback).

The request body is read here, not by the resolver's body validation: its limits (413, 415,
strict JSON) and its routing check (the configured runtimes, passed as validation context)
are the contract's, and the resolver's own 422 answer is not the contract's error shape.

Logs are Powertools JSON lines with task id, runtime, tasktype and body size as fields;
never headers (the API key) or the body (prompts, images).
"""

from __future__ import annotations

import re
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.event_handler import APIGatewayRestResolver, Response
from aws_lambda_powertools.event_handler.exceptions import NotFoundError
from aws_lambda_powertools.event_handler.openapi.exceptions import RequestValidationError
from aws_lambda_powertools.event_handler.openapi.params import Path, Query
from aws_lambda_powertools.utilities.data_classes import APIGatewayProxyEvent
from pydantic import ValidationError

from sdeks.api.http import (
    HttpError,
    body_bytes,
    check_json_content_type,
    clean_event,
    json_text,
    parse_json,
)
from sdeks.api.queue_depth import tasks_ahead
from sdeks.api.settings import ApiSettings, ConfigurationError, env_key
from sdeks.contract import (
    API_VERSION,
    MAX_WAIT_S,
    SNS_MAX_MESSAGE_BYTES,
    TASKTYPES_BY_RUNTIME_TYPE,
    TERMINAL_STATES,
    WEBHOOK_LOOPBACK_CONTEXT,
    ErrorCode,
    Route,
    RuntimeInfo,
    SubmitResponse,
    Task,
    TaskMessage,
    TaskRequest,
    TaskStatus,
    claim_check_key,
    describe,
    error_body,
    output_prefix,
    s3_uri,
    summarize,
)
from sdeks.contract.budget import task_work
from sdeks.contract.task import ID_PATTERN
from sdeks.presign import presigned_urls
from sdeks.tasks_table import TaskTable

logger = Logger(service="sdeks.api")

FLAG_PATTERN = r"^\s*(?i:1|true|yes|0|false|no)?\s*$"
"""A boolean query flag: 1/true/yes, 0/false/no or empty, any case."""
TRUE_VALUES = ("1", "true", "yes")
WAIT_POLL_S = (0.1, 1.0)
"""A waiting request re-reads the status row after 0.1 s, doubling up to once a second."""

ROUTING_FIELDS = {
    ErrorCode.UNKNOWN_RUNTIME: "task.metadata.runtime",
    ErrorCode.UNSUPPORTED_TASKTYPE: "task.metadata.tasktype",
    ErrorCode.UNKNOWN_MODEL: "task.metadata.runtime",
    ErrorCode.AMBIGUOUS_MODEL: "task.metadata.runtime",
}
"""The contract's routing errors (raised with these types) and the request field each one is about,
unless the error names its own (``ctx.field``: the checkpoint field that routed the task)."""


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
        ErrorCode.AWS_UNAVAILABLE,
        f"{what} is temporarily unavailable; retry the same request (same id) later",
        {"retryable": True},
        {"Retry-After": "2"},
    )


def json_answer(status: int, payload: object, headers: dict[str, str] | None = None) -> Response:
    return Response(
        status_code=status,
        content_type="application/json",
        body=json_text(payload),
        headers={"Cache-Control": "no-store", **(headers or {})},
    )


def error_answer(exc: HttpError) -> Response:
    return json_answer(exc.status, error_body(exc.code, exc.message, exc.details), exc.headers)


def _internal_error(message: str) -> Response:
    return json_answer(500, error_body(ErrorCode.INTERNAL_ERROR, message))


class Api:
    """The actions behind the routes, bound to settings and AWS clients (one per thread and environment)."""

    def __init__(self, settings: ApiSettings, sns: Any, s3: Any, table: TaskTable, sqs: Any) -> None:
        self.settings = settings
        self.sns = sns
        self.s3 = s3
        self.table = table
        self.sqs = sqs

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
        row_ttl = timedelta(days=shared.settings.status_ttl_days)
        return cls(
            shared.settings, sns=shared.sns, s3=shared.s3, table=TaskTable(table, row_ttl=row_ttl), sqs=shared.sqs
        )

    # --- POST /v1alpha2 ---------------------------------------------------------

    def submit(self, event: APIGatewayProxyEvent, wait_s: int = 0, presign: bool | None = None) -> Response:
        body = body_bytes(event.body, event.is_base64_encoded)
        check_json_content_type(event.headers.get("content-type"))
        data = parse_json(body)
        task = self._validate(data).with_id()
        route = task.route(self.settings.runtimes, self.settings.models)
        task = task.with_runtime(route.runtime)
        self._within_budget(task)
        fingerprint = task.fingerprint()
        meta = task.metadata
        answer = SubmitResponse(
            id=task.id,
            runtime=meta.runtime,
            output_location=s3_uri(self.settings.output_bucket, output_prefix(meta.prefix, task.id)),
            status_url=self._status_url(event, task.id),
        ).model_dump(mode="json")
        fields = {"task_id": task.id, "runtime": meta.runtime, "tasktype": meta.tasktype, "bytes": len(body)}
        try:
            submission = self.table.record_submission(task.id, meta.runtime, fingerprint, extra=row_fields(task))
        except _aws_errors() as exc:
            logger.warning("submit_unavailable", extra={"step": "record", "error": type(exc).__name__, **fields})
            raise _unavailable("the task table") from None
        if not submission.created and submission.fingerprint != fingerprint:
            logger.info("submit_conflict", extra=fields)
            raise HttpError(
                409,
                ErrorCode.CONFLICT,
                f"task id {task.id!r} was already submitted with a different body",
                {"id": task.id},
            )
        if submission.must_publish:
            claim_check = self._publish(task, route, fields)
            try:
                self.table.mark_enqueued(task.id)
            except _aws_errors() as exc:  # published: the agent tolerates a later duplicate, the client needs no retry
                logger.warning("mark_enqueued_failed", extra={"error": type(exc).__name__, **fields})
            logger.info("submitted", extra={"claim_check": claim_check, "duplicate": not submission.created, **fields})
        else:
            logger.info("submit_duplicate", extra=fields)
        headers = {"Location": answer["status_url"]}
        if wait_s:
            final = self._wait_for_end(task.id, wait_s)
            if final is not None and final.status in TERMINAL_STATES:
                return json_answer(200, self._answer(final, presign), headers)
        return json_answer(202, answer, headers)

    def _validate(self, data: Any) -> Task:
        try:
            context = {
                "runtimes": dict(self.settings.runtimes),
                "models": self.settings.models,
                WEBHOOK_LOOPBACK_CONTEXT: self.settings.webhook_allow_loopback,
            }
            return TaskRequest.model_validate(data, context=context).task
        except ValidationError as exc:
            raise _validation_error(exc) from None
        except RecursionError:
            raise HttpError(400, ErrorCode.VALIDATION_ERROR, "request is nested too deeply") from None

    def _within_budget(self, task: Task) -> None:
        """Refuse a task asking more work than its runtime's ``max_work``: no runtime should start it."""
        limit = self.settings.max_work.get(task.metadata.runtime)
        work = task_work(task.content)
        if limit is None or work is None or work <= limit:
            return
        raise HttpError(
            400,
            ErrorCode.OVER_BUDGET,
            f"task asks for {work:g} megapixel-steps (width × height × steps × batch_size × n_iter / 10⁶); "
            f"runtime {task.metadata.runtime!r} allows at most {limit:g} per task",
            {"field": "task.content", "work": work, "max_work": limit},
        )

    def _publish(self, task: Task, route: Route, fields: dict[str, Any]) -> bool:
        """Publish the task message (inline or as a claim check); True when a claim check was used.

        The message attributes are the route's: they, and the queues' filter policies, put the task
        on exactly one runtime's queue (:mod:`sdeks.contract.routing`).
        """
        meta = task.metadata
        attributes = {name: {"DataType": "String", "StringValue": value} for name, value in route.attributes().items()}
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
            logger.warning("submit_unavailable", extra={"step": "publish", "error": type(exc).__name__, **fields})
            try:
                self.table.release_publish(task.id)
            except _aws_errors():
                pass  # the stale-publish timeout still lets a later retry publish
            raise _unavailable("the task queue") from None
        return claim_check

    def _status_url(self, event: APIGatewayProxyEvent, task_id: str) -> str:
        tail = f"/{API_VERSION}/tasks/{task_id}"
        if self.settings.public_base_url:
            return self.settings.public_base_url + tail
        scheme = event.headers.get("x-forwarded-proto", "https").split(",")[0].strip().lower()
        scheme = scheme if scheme in ("http", "https") else "https"
        context = event.request_context
        host = context.domain_name or "localhost"
        # execute-api hosts carry the stage in the path; custom domains map it away; local mode has none
        stage = f"/{context.stage}" if context.stage and ".execute-api." in host else ""
        return f"{scheme}://{host}{stage}{tail}"

    # --- GET /v1alpha2/tasks/{id} -----------------------------------------------

    def status(self, task_id: str, presign: bool | None, wait_s: int = 0) -> Response:
        status = self._wait_for_end(task_id, wait_s) if wait_s else self._read(task_id)
        if status is None:
            raise _no_task(task_id)
        return json_answer(200, self._answer(status, presign))

    def _read(self, task_id: str) -> TaskStatus | None:
        try:
            return self.table.get(task_id)
        except _aws_errors() as exc:
            logger.warning("status_unavailable", extra={"task_id": task_id, "error": type(exc).__name__})
            raise _unavailable("the task table") from None

    def _wait_for_end(self, task_id: str, wait_s: int) -> TaskStatus | None:
        """The status once the task ended, or as it stands after ``wait_s`` seconds (``None``: no such task)."""
        deadline = time.monotonic() + wait_s
        delay, longest = WAIT_POLL_S
        while True:
            status = self._read(task_id)
            left = deadline - time.monotonic()
            if status is None or status.status in TERMINAL_STATES or left <= 0:
                return status
            time.sleep(min(delay, left))
            delay = min(delay * 2, longest)

    def _answer(self, status: TaskStatus, presign: bool | None) -> dict[str, Any]:
        """The status as answered: with presigned image URLs when asked, or by default when so configured;
        a queued task's with the approximate number of tasks ahead of it when its queue is known."""
        if self.settings.presign_images if presign is None else presign:
            status.image_urls = presigned_urls(
                self.s3, self.settings.output_bucket, status.images, self.settings.presign_expires_s
            )
        queue_url = self.settings.queue_urls.get(status.runtime)
        if status.status == "queued" and queue_url:
            status.tasks_ahead_approx = tasks_ahead(self.sqs, queue_url, status.id)
        return status.model_dump(mode="json")

    # --- POST /v1alpha2/tasks/{id}/cancel ---------------------------------------

    def cancel(self, task_id: str) -> Response:
        """Cancel a queued or running task: 200 ``cancelled`` (again on a repeat), 409 once it finished."""
        try:
            status = self.table.cancel(task_id)
        except _aws_errors() as exc:
            logger.warning("cancel_unavailable", extra={"task_id": task_id, "error": type(exc).__name__})
            raise _unavailable("the task table") from None
        if status is None:
            raise _no_task(task_id)
        if status.status != "cancelled":
            raise HttpError(
                409,
                ErrorCode.TASK_FINISHED,
                f"task {task_id!r} already {status.status}; only a queued or running task can be cancelled",
                {"id": task_id, "status": status.status},
            )
        logger.info("cancelled", extra={"task_id": task_id, "runtime": status.runtime})
        return json_answer(200, status.model_dump(mode="json"))

    # --- GET /v1alpha2/runtimes -----------------------------------------------

    def runtimes(self) -> Response:
        infos = [
            RuntimeInfo(
                name=name,
                type=kind,
                tasktypes=list(TASKTYPES_BY_RUNTIME_TYPE[kind]),
                models=self.settings.models.get(name, []),
            ).model_dump(mode="json")
            for name, kind in sorted(self.settings.runtimes.items())
        ]
        return json_answer(200, infos)


def _no_task(task_id: str) -> HttpError:
    return HttpError(404, ErrorCode.NOT_FOUND, f"no task with id {task_id!r}", {"id": task_id})


def _flag(value: str) -> bool | None:
    """A boolean query flag; ``None`` when absent (empty), so the configured default applies."""
    value = value.strip().lower()
    return (value in TRUE_VALUES) if value else None


def _validation_error(exc: ValidationError) -> HttpError:
    """A 400: ``validation_error`` naming each field, or the routing error's own code (mapped on its type)."""
    routing = [err for err in exc.errors(include_url=False, include_input=False) if err["type"] in ROUTING_FIELDS]
    if not routing:
        return HttpError(400, ErrorCode.VALIDATION_ERROR, summarize(exc), describe(exc))
    err = routing[0]
    ctx = err.get("ctx") or {}
    problem = {"field": ctx.get("field", ROUTING_FIELDS[err["type"]]), "message": err["msg"]}
    if "available" in ctx:
        problem["available"] = ctx["available"]
    message = f"{problem['field']}: {problem['message']}"
    return HttpError(400, ErrorCode(err["type"]), message, [problem])


@dataclass(frozen=True)
class _SharedClients:
    settings: ApiSettings
    session: Any
    boto_config: Any
    sns: Any
    s3: Any
    sqs: Any

    @classmethod
    def create(cls) -> _SharedClients:
        import boto3
        from botocore.config import Config as BotoConfig

        settings = ApiSettings.from_env()
        session = boto3.session.Session()
        boto_config = BotoConfig(retries={"max_attempts": 3, "mode": "standard"}, connect_timeout=5, read_timeout=10)
        s3_config = boto_config.merge(BotoConfig(signature_version="s3v4"))
        return cls(
            settings,
            session,
            boto_config,
            sns=session.client("sns", config=boto_config),
            s3=session.client("s3", config=s3_config),
            # the queue depth is a courtesy of the status answer: one quick try, never a held-up request
            sqs=session.client(
                "sqs",
                config=BotoConfig(retries={"max_attempts": 1, "mode": "standard"}, connect_timeout=2, read_timeout=2),
            ),
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


# --- routing ---------------------------------------------------------------------------

app = APIGatewayRestResolver(enable_validation=True)
_route_methods: list[tuple[str, re.Pattern[str]]] = []
"""(method, path regex) of every route, so an unmatched request can be told 405 from 404."""


def _route(method: str, rule: str) -> Callable[[Callable[..., Response]], Callable[..., Response]]:
    _route_methods.append((method, re.compile("^" + re.sub(r"<(\w+)>", r"(?P<\1>[^/]+)", rule) + "/*$")))
    return app.route(rule, method)


TaskId = Annotated[str, Path(pattern=ID_PATTERN)]
Flag = Annotated[str, Query(pattern=FLAG_PATTERN)]
WaitSeconds = Annotated[int, Query(ge=0, le=MAX_WAIT_S, description="seconds to wait for the task to end")]


@_route("POST", f"/{API_VERSION}")
def submit_task(wait: WaitSeconds = 0, presign: Flag = "") -> Response[str]:
    return current_api().submit(app.current_event, wait_s=wait, presign=_flag(presign))


@_route("GET", f"/{API_VERSION}/tasks/<task_id>")
def get_task(task_id: TaskId, wait: WaitSeconds = 0, presign: Flag = "") -> Response[str]:
    return current_api().status(task_id, presign=_flag(presign), wait_s=wait)


@_route("POST", f"/{API_VERSION}/tasks/<task_id>/cancel")
def cancel_task(task_id: TaskId) -> Response[str]:
    return current_api().cancel(task_id)


@_route("GET", f"/{API_VERSION}/runtimes")
def list_runtimes() -> Response[str]:
    return current_api().runtimes()


def _invalid_id(task_id: str) -> HttpError:
    return HttpError(400, ErrorCode.INVALID_ID, "task id must match [A-Za-z0-9_-]{1,64}", {"id": task_id[:80]})


@app.not_found
def _no_route(_exc: NotFoundError) -> Response:
    event = app.current_event
    path, method = event.path, event.http_method
    matches = [(m, found) for m, pattern in _route_methods if (found := pattern.match(path))]
    allowed = [m for m, _ in matches]
    if not allowed:
        return error_answer(HttpError(404, ErrorCode.NOT_FOUND, "no such route", {"path": path[:200]}))
    for m, found in matches:
        if m == method:  # the path matched but the router refused its parameter's characters
            return error_answer(_invalid_id(found.groupdict().get("task_id", "")))
    listed = ", ".join(allowed)
    return error_answer(
        HttpError(
            405,
            ErrorCode.METHOD_NOT_ALLOWED,
            f"method {method[:20]!r} not allowed here; allowed: {listed}",
            {"allowed": allowed},
            {"Allow": listed},
        )
    )


@app.exception_handler(HttpError)
def _http_error(exc: HttpError) -> Response:
    return error_answer(exc)


@app.exception_handler(RequestValidationError)
def _bad_parameter(exc: RequestValidationError) -> Response:
    """A path or query parameter failed the route's declared validation."""
    err = exc.errors()[0]
    where, name = [*err.get("loc", ()), "", ""][:2]
    if where == "path":
        return error_answer(_invalid_id(str(err.get("input", ""))))
    value = (app.current_event.query_string_parameters or {}).get(str(name), "")
    return error_answer(
        HttpError(400, ErrorCode.INVALID_QUERY, f"query parameter {name}: {err.get('msg')}", {str(name): value[:20]})
    )


@app.exception_handler(ConfigurationError)
def _misconfigured(exc: ConfigurationError) -> Response:
    logger.error("misconfigured", extra={"error": str(exc)})
    return _internal_error("the API is misconfigured")


@app.exception_handler(Exception)
def _bug(exc: Exception) -> Response:
    """The one place a bug may surface: no traceback to the client, no request data in the log."""
    logger.error(
        "internal_error",
        extra={"error": type(exc).__name__, "traceback": "".join(traceback.format_tb(exc.__traceback__))},
    )
    return _internal_error("internal error")


def handler(event: Any, context: Any = None) -> dict[str, Any]:
    """AWS Lambda entry for API Gateway REST proxy events."""
    started = time.monotonic()
    cleaned: dict[str, Any] | None = None
    try:
        cleaned = clean_event(event)
    except HttpError as exc:
        response = exc.response()
    # every line of this request carries API Gateway's request id, as the access log does (None drops a
    # stale one); per thread, because the local server runs requests side by side
    logger.thread_safe_append_keys(request_id=cleaned["requestContext"]["requestId"] or None if cleaned else None)
    if cleaned is not None:
        response = app.resolve(cleaned, context)
    logger.info(
        "request",
        extra={
            "method": cleaned["httpMethod"][:10] if cleaned else None,
            "path": cleaned["path"][:200] if cleaned else None,
            "status": response["statusCode"],
            "ms": round((time.monotonic() - started) * 1000, 1),
        },
    )
    return response
