"""Runtime adapters: turn a :class:`~queue_agent.messages.Job` into runtime calls and images.

``prepare`` runs while other tasks occupy the runtime (prefetch): it fetches
inputs and builds the request. ``run`` calls the runtime within a
:class:`~queue_agent.lane.Slot` (which says when the task started and whether it
ran out of time) and returns a :class:`RuntimeResult`. Both raise
:class:`PermanentError`/:class:`TransientError`; ``run`` raises
:class:`RuntimeTimeout` for a task past its timeout. ``interrupt`` stops one
task on the runtime; ``exclusive`` says a task must have the runtime to itself;
``progress`` reports how far the executing task is (A1111's ``/sdapi/v1/progress``,
ComfyUI's ``/ws`` progress messages; ``None`` while the runtime has not said).
``health`` says whether the runtime can take tasks, and if it answers but never
will (its model file is missing), why.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

import httpx

from queue_agent.errors import PermanentError, RuntimeTimeout, RuntimeUnavailable, TransientError
from queue_agent.fetch import InputFetcher
from queue_agent.lane import Slot
from queue_agent.messages import Job
from sdeks.contract import RuntimeType, TaskProgress, no_model_reason


@dataclass
class RuntimeResult:
    images: list[bytes]
    info: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Health:
    """What the runtime's health probe said."""

    ready: bool
    unusable: str | None = None
    """The runtime answers but cannot run any task (its model is missing or failed to load): why."""


class Adapter(Protocol):
    def prepare(self, job: Job, fetcher: InputFetcher) -> None: ...

    def run(self, job: Job, slot: Slot | None = None) -> RuntimeResult: ...

    def exclusive(self, job: Job) -> bool: ...

    def interrupt(self, slot: Slot) -> None: ...

    def progress(self, slot: Slot) -> TaskProgress | None:
        """How far the runtime is with ``slot`` (the executing task); ``None`` when it cannot say."""
        ...

    def health(self) -> Health: ...

    def close(self) -> None: ...


class HttpAdapter:
    """What every adapter shares: one pooled HTTP client to the runtime and its health check."""

    def __init__(self, base_url: str, timeout_s: float, health_path: str, request_timeout_s: float) -> None:
        self.timeout_s = timeout_s
        self.health_path = health_path
        self.client = httpx.Client(
            base_url=base_url.rstrip("/"),
            timeout=httpx.Timeout(request_timeout_s, connect=5.0),
            limits=httpx.Limits(max_keepalive_connections=8),
            trust_env=False,
        )

    def slot(self, job: Job, slot: Slot | None) -> Slot:
        """The given slot, or one for a task run on its own (nothing ahead of it)."""
        return slot or Slot.alone(job, self.timeout_s)

    def exclusive(self, job: Job) -> bool:
        return False

    def close(self) -> None:
        self.client.close()

    def health(self) -> Health:
        try:
            resp = self.client.get(self.health_path, timeout=3.0)
        except httpx.HTTPError:
            return Health(ready=False)
        if resp.is_success:
            return Health(ready=True)
        try:
            body = resp.json()
        except ValueError:
            body = None
        return Health(ready=False, unusable=no_model_reason(body))


def classify_response(resp: httpx.Response, what: str) -> None:
    """Raise for a non-2xx answer: 4xx (but 408/429) permanent, the rest transient."""
    if resp.is_success:
        return
    detail = _detail(resp)
    if resp.status_code in (408, 429) or resp.status_code >= 500:
        raise TransientError(f"runtime {what} answered HTTP {resp.status_code}{detail}")
    raise PermanentError(f"runtime rejected the task: {what} answered HTTP {resp.status_code}{detail}")


def _error_text(error: dict[str, Any]) -> str:
    """An error object's message and text details; structured details (the runtime's model list) stay out."""
    details = error.get("details")
    return " — ".join(str(p) for p in (error.get("message"), details if isinstance(details, str) else None) if p)


def _detail(resp: httpx.Response) -> str:
    try:
        body = resp.json()
    except ValueError:
        return ""
    if isinstance(body, dict):
        for key in ("detail", "error", "message"):
            value = body.get(key)
            if isinstance(value, dict):
                value = _error_text(value)
            if value:
                text = value if isinstance(value, str) else str(value)
                return f": {text[:300]}"
    return ""


def request(client: httpx.Client, method: str, path: str, what: str, **kwargs: Any) -> httpx.Response:
    """One runtime call with the failure classes the worker understands."""
    try:
        resp = client.request(method, path, **kwargs)
    except httpx.TimeoutException:
        raise RuntimeTimeout(f"runtime {what} timed out") from None
    except (httpx.ConnectError, httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError) as exc:
        raise RuntimeUnavailable(f"runtime {what} unreachable: {type(exc).__name__}") from None
    except httpx.HTTPError as exc:
        raise TransientError(f"runtime {what} failed: {type(exc).__name__}") from None
    classify_response(resp, what)
    return resp


def json_of(resp: httpx.Response, what: str) -> Any:
    try:
        return resp.json()
    except ValueError:
        raise TransientError(f"runtime {what} answered with invalid JSON") from None


def make_adapter(runtime_type: RuntimeType, base_url: str, timeout_s: float, health_path: str) -> Adapter:
    if runtime_type == "comfyui":
        from queue_agent.adapters.comfyui import ComfyUIAdapter

        return ComfyUIAdapter(base_url, timeout_s, health_path)
    from queue_agent.adapters.sdwebui import SdWebUIAdapter

    return SdWebUIAdapter(base_url, timeout_s, health_path)
