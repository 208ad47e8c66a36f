"""The v1alpha2 task request, the message on the tasks topic, status and completion event.

Compatible with task files written for AWS's "Stable Diffusion on EKS" sample:
``context`` may be any JSON value (the sample sends ``""``), ``alwayson_scripts``
is optional and carries URLs and the checkpoint, ``extra-batch-images`` is a
tasktype.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    JsonValue,
    ModelWrapValidatorHandler,
    RootModel,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from sdeks.contract.content import (
    CONTENT_MODELS,
    Content,
    TaskType,
)
from sdeks.contract.routing import Route, named_checkpoints, resolve_route
from sdeks.contract.webhook import WEBHOOK_TYPES, Webhook

API_VERSION = "v1alpha2"
ID_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"
RUNTIME_NAME_PATTERN = r"^[a-z]([a-z0-9-]{0,22}[a-z0-9])?$"
"""DNS-label safe and short: runtime names become Kubernetes and AWS resource names."""
PREFIX_PATTERN = r"^[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)*$"
MAX_CONTEXT_BYTES = 16 * 1024
MAX_REQUEST_BYTES = 6 * 1024 * 1024
SNS_MAX_MESSAGE_BYTES = 256 * 1024


class TaskMetadata(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str | None = Field(default=None, pattern=ID_PATTERN, description="generated (uuid4 hex) when absent")
    runtime: str | None = Field(
        default=None,
        pattern=RUNTIME_NAME_PATTERN,
        description="name of a configured runtime; when absent, the one runtime that declares the checkpoint the"
        " task names (docs/api.md, Routing)",
    )
    tasktype: TaskType
    prefix: str = Field(default="output", max_length=256, pattern=PREFIX_PATTERN, description="S3 key prefix")
    context: JsonValue = Field(default=None, description="opaque, echoed in the completion event")
    webhook: Webhook | None = Field(default=None, description="receiver of signed task events (docs/api.md)")

    @field_validator("prefix")
    @classmethod
    def _no_parent_segments(cls, value: str) -> str:
        if any(part in (".", "..") for part in value.split("/")):
            raise ValueError("prefix must not contain '.' or '..' segments")
        return value

    @field_validator("context")
    @classmethod
    def _bounded_context(cls, value: JsonValue) -> JsonValue:
        size = len(json.dumps(value, separators=(",", ":")).encode())
        if size > MAX_CONTEXT_BYTES:
            raise ValueError(f"context is {size} bytes, at most {MAX_CONTEXT_BYTES} allowed")
        return value


class Task(BaseModel):
    """A task: where it goes (metadata) and what to render (content, typed by tasktype).

    Validate with ``context={"runtimes": {name: runtime_type}, "models": {name: [checkpoint]}}``
    to also check that the task can be routed (:mod:`sdeks.contract.routing`): the runtime it
    names exists and serves the tasktype, or the checkpoint it names resolves to exactly one
    runtime; without it only the shape is checked (the agent side, which trusts the front
    door's routing). :meth:`route` gives the runtime and the tasks-topic attributes.
    """

    model_config = ConfigDict(extra="forbid")

    metadata: TaskMetadata
    content: Content

    @model_validator(mode="wrap")
    @classmethod
    def _typed_content(cls, data: Any, handler: ModelWrapValidatorHandler[Task], info: ValidationInfo) -> Task:
        """Validate content with the model its tasktype names, reporting content and metadata errors together."""
        if not isinstance(data, dict) or isinstance(data.get("content"), BaseModel):
            return handler(data)
        metadata = data.get("metadata")
        tasktype = metadata.get("tasktype") if isinstance(metadata, dict) else None
        model = CONTENT_MODELS.get(tasktype) if isinstance(tasktype, str) else None
        if model is None or "content" not in data:
            return handler({**data, "content": data.get("content", {})} if model is None else data)
        try:
            content = model.model_validate(data["content"], context=info.context)
        except ValidationError as exc:
            content_errors = [{**err, "loc": ("content", *err["loc"])} for err in exc.errors()]
            placeholder = model.model_construct(root={}) if issubclass(model, RootModel) else model.model_construct()
        else:
            return handler({**data, "content": content})
        try:
            handler({**data, "content": placeholder})
            other_errors: list = []
        except ValidationError as exc:
            other_errors = list(exc.errors())
        raise ValidationError.from_exception_data(cls.__name__, other_errors + content_errors)

    @model_validator(mode="after")
    def _routable(self, info: ValidationInfo) -> Task:
        context = info.context or {}
        if context.get("runtimes") is not None:
            self.route(context["runtimes"], context.get("models") or {})
        return self

    def route(self, runtimes: Mapping[str, str], models: Mapping[str, Sequence[str]]) -> Route:
        """Where this task goes among ``runtimes`` (``{name: type}``) declaring ``models``; a typed error if nowhere."""
        meta = self.metadata
        return resolve_route(meta.runtime, meta.tasktype, named_checkpoints(self.content), runtimes, models)

    def with_runtime(self, runtime: str) -> Task:
        """This task with its runtime filled in (the one it named, or the one its checkpoint resolved to)."""
        return self.model_copy(update={"metadata": self.metadata.model_copy(update={"runtime": runtime})})

    def with_id(self) -> Task:
        """This task with an id: the given one, or a fresh uuid4."""
        if self.metadata.id:
            return self
        return self.model_copy(update={"metadata": self.metadata.model_copy(update={"id": uuid.uuid4().hex})})

    @property
    def id(self) -> str:
        if not self.metadata.id:
            raise ValueError("task has no id yet; call with_id()")
        return self.metadata.id

    def fingerprint(self) -> str:
        """Stable hash of the request as the client sent it: same id + same body ⇒ same fingerprint."""
        canonical = json.dumps(self.model_dump(mode="json", exclude_none=True), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()


class TaskRequest(BaseModel):
    """Body of ``POST /v1alpha2``."""

    model_config = ConfigDict(extra="forbid")

    task: Task


class TaskMessage(BaseModel):
    """What travels on the tasks topic (raw delivery: the SQS body is this JSON).

    Either the task inline, or — when it would exceed SNS's 256 KB — a claim check:
    an ``s3://`` URI of the stored :class:`TaskRequest` JSON, which the agent resolves.
    """

    model_config = ConfigDict(extra="forbid")

    version: Literal["v1alpha2"] = API_VERSION
    id: str = Field(pattern=ID_PATTERN)
    runtime: str = Field(pattern=RUNTIME_NAME_PATTERN)
    submitted_at: datetime
    task: Task | None = None
    claim_check: str | None = Field(default=None, pattern=r"^s3://[^/]+/.+$")

    @model_validator(mode="after")
    def _exactly_one_payload(self) -> TaskMessage:
        if (self.task is None) == (self.claim_check is None):
            raise ValueError("a task message carries exactly one of task or claim_check")
        return self


TaskState = Literal["queued", "running", "succeeded", "failed", "cancelled"]
TERMINAL_STATES: frozenset[str] = frozenset({"succeeded", "failed", "cancelled"})
"""States of an ended task. ``failed`` may still become ``succeeded`` (a late retry); ``cancelled`` is final."""

MAX_WAIT_S = 25
"""Longest ``?wait=N`` the API holds a request open: inside API Gateway's 29 s integration timeout."""


class SubmitResponse(BaseModel):
    """The 202 answer of ``POST /v1alpha2``."""

    id: str
    runtime: str
    status: Literal["queued"] = "queued"
    output_location: str = Field(description="s3://bucket/prefix/id")
    status_url: str


class TaskProgress(BaseModel):
    """How far a running task is, as its runtime last reported it (the agent reads it at most once a second)."""

    step: int = Field(ge=0, description="sampling step of the current image (batch)")
    steps: int = Field(ge=0, description="sampling steps per image (batch)")
    fraction: float = Field(ge=0, le=1, description="of the whole task, 0..1 (ComfyUI: of the node sampling now)")
    image: int = Field(ge=0, description="the image (batch) being rendered, from 1 (0: the runtime does not say)")
    images: int = Field(ge=0, description="images (batches) in the task (0: the runtime does not say)")
    node: str | None = Field(
        default=None,
        description="ComfyUI runtimes: the workflow node sampling now (step, steps and fraction are that node's)",
    )


class TaskStatus(BaseModel):
    """Answer of ``GET /v1alpha2/tasks/{id}``."""

    id: str
    runtime: str
    status: TaskState
    created_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None
    attempts: int = Field(default=0, ge=0)
    images: list[str] = Field(default_factory=list, description="s3:// URIs")
    image_urls: list[str] | None = Field(default=None, description="presigned HTTPS URLs, with ?presign=1")
    error: str | None = None
    progress: TaskProgress | None = Field(default=None, description="while running: the runtime's progress")
    tasks_ahead_approx: int | None = Field(
        default=None,
        ge=0,
        description=(
            "while queued, APPROXIMATE: the other tasks on its runtime's queue at read time, waiting or being "
            "worked on (SQS ApproximateNumberOfMessages + ApproximateNumberOfMessagesNotVisible, less this one; "
            "SQS standard queues are unordered, so this is how many compete with it, not a strict rank); "
            "absent when it cannot be read"
        ),
    )


class Timings(BaseModel):
    queued_s: float = Field(ge=0)
    run_s: float = Field(ge=0)
    total_s: float = Field(ge=0)


class CompletionEvent(BaseModel):
    """Published on the results topic with message attributes ``runtime`` and ``status``.

    Keeps the AWS sample's fields (``id``, ``result``, ``image_url``, ``output_url``,
    ``context``). Events are at-least-once; duplicates are identical, dedupe by ``id``.
    """

    id: str
    runtime: str
    status: Literal["succeeded", "failed", "cancelled"]
    result: bool
    image_url: list[str] = Field(default_factory=list)
    image_urls: list[str] | None = Field(
        default=None,
        description="with config output.presign_images: presigned HTTPS GET URLs of image_url, in the same order; "
        "valid output.presign_expires_s, and no longer than the agent's signing credentials",
    )
    output_url: str | None = None
    context: JsonValue = None
    error: str | None = None
    attempt: int = Field(ge=1)
    timings: Timings | None = None


class TaskStartedEvent(BaseModel):
    """Published on the results topic when an attempt starts running (message attributes ``runtime`` and
    ``status=running``).

    Best effort: the agent never holds up or fails a task for it, so a subscriber may miss one, and
    a retried task announces each attempt. Subscribers that want outcomes only filter on ``status``.
    """

    id: str
    runtime: str
    status: Literal["running"]
    attempt: int = Field(ge=1)
    started_at: datetime
    context: JsonValue = None


ResultsEvent = Annotated[CompletionEvent | TaskStartedEvent, Field(discriminator="status")]
"""Anything the results topic carries, told apart by ``status``."""

STARTED_STATUS = "running"
"""The ``status`` (body and message attribute) of a :class:`TaskStartedEvent`."""


class WebhookPayload(BaseModel):
    """The JSON body POSTed to a task's webhook (Standard Webhooks' ``type``/``timestamp``/``data`` shape).

    ``data`` is the task's started event (``type`` ``task.started``) or completion event
    (``task.completed``); ``timestamp`` is when the event reached the deliverer, identical
    on every retry of the same delivery.
    """

    type: Literal["task.started", "task.completed"]
    timestamp: datetime
    data: ResultsEvent

    @model_validator(mode="after")
    def _type_matches_data(self) -> WebhookPayload:
        expected = WEBHOOK_TYPES["started" if isinstance(self.data, TaskStartedEvent) else "completed"]
        if self.type != expected:
            raise ValueError(f"a {self.data.status} event is delivered as {expected!r}, not {self.type!r}")
        return self


class ErrorDetail(BaseModel):
    code: str = Field(description="machine-readable, e.g. validation_error, not_found, conflict")
    message: str
    details: JsonValue = None


class ErrorBody(BaseModel):
    """Every 4xx answer of the API."""

    error: ErrorDetail


class RuntimeInfo(BaseModel):
    """One entry of ``GET /v1alpha2/runtimes``."""

    name: str
    type: str
    tasktypes: list[str]
    models: list[str] = Field(
        default_factory=list, description="checkpoints it declares: a task naming one of them needs no runtime"
    )
