"""A small client for the v1alpha2 API: submit, wait for the end, cancel, download images.

Waiting uses the API's ``?wait=N`` (the server holds the request until the task ends), so a
wait costs one request per ``MAX_WAIT_S`` rather than a poll every half second. Downloads use
the API's presigned URLs, so the same code works against a deployed stack and the local one,
and needs no AWS credentials.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from sdeks.contract import API_VERSION, MAX_WAIT_S, TERMINAL_STATES, SubmitResponse, TaskStatus

NETWORK_MARGIN_S = 10.0
"""Added to the HTTP read timeout of a waiting request: the server answers after up to ``wait`` seconds."""


class ApiError(RuntimeError):
    """A non-2xx answer; ``message`` is the API's own error message."""

    def __init__(self, status_code: int, code: str, message: str, details: Any = None) -> None:
        super().__init__(f"{status_code} {code}: {message}")
        self.status_code, self.code, self.message, self.details = status_code, code, message, details


class ApiClient:
    def __init__(self, api_url: str, api_key: str, timeout_s: float = 30.0) -> None:
        self._http = httpx.Client(base_url=api_url.rstrip("/"), headers={"x-api-key": api_key}, timeout=timeout_s)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> ApiClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _check(self, response: httpx.Response) -> Any:
        try:
            body = response.json()
        except ValueError:
            body = {}
        if response.is_success:
            return body
        error = body.get("error", {}) if isinstance(body, dict) else {}
        raise ApiError(
            response.status_code,
            error.get("code", "http_error"),
            error.get("message") or body.get("message") or response.reason_phrase,
            error.get("details"),
        )

    def submit(self, request: dict[str, Any]) -> SubmitResponse:
        return SubmitResponse.model_validate(self._check(self._http.post(f"/{API_VERSION}", json=request)))

    def submit_and_wait(self, request: dict[str, Any], wait_s: int) -> SubmitResponse | TaskStatus:
        """Submit with ``?wait``: the final status (with image URLs) when the task ends that soon, else the 202."""
        params = {"wait": str(wait_s), "presign": "1"}
        response = self._http.post(f"/{API_VERSION}", json=request, params=params, timeout=self._timeout(wait_s))
        body = self._check(response)
        return TaskStatus.model_validate(body) if response.status_code == 200 else SubmitResponse.model_validate(body)

    def status(self, task_id: str, presign: bool = False, wait_s: int = 0) -> TaskStatus:
        """The task's status; with ``wait_s``, once it ended or after that many seconds."""
        params = {"presign": "1"} if presign else {}
        if wait_s:
            params["wait"] = str(wait_s)
        response = self._http.get(f"/{API_VERSION}/tasks/{task_id}", params=params, timeout=self._timeout(wait_s))
        return TaskStatus.model_validate(self._check(response))

    def runtimes(self) -> list[dict[str, Any]]:
        """``GET /v1alpha2/runtimes``: the configured runtimes with their task types and models."""
        return self._check(self._http.get(f"/{API_VERSION}/runtimes"))

    def cancel(self, task_id: str) -> TaskStatus:
        """Cancel a queued or running task (idempotent); ApiError ``task_finished`` when it already ended."""
        return TaskStatus.model_validate(self._check(self._http.post(f"/{API_VERSION}/tasks/{task_id}/cancel")))

    def _timeout(self, wait_s: int) -> httpx.Timeout:
        timeout = self._http.timeout
        return timeout if not wait_s else httpx.Timeout(timeout.connect, read=wait_s + NETWORK_MARGIN_S)

    def wait(
        self,
        task_id: str,
        timeout_s: float = 600.0,
        on_change: Callable[[TaskStatus], None] = lambda status: None,
        on_progress: Callable[[TaskStatus], None] | None = None,
    ) -> TaskStatus:
        """Wait (server side, ``?wait=N``) until the task ends; report each status seen on the way.

        With ``on_progress``, the task is read every second (``?wait=1``: the agent
        writes progress at most once a second; a queued task's tasks ahead change as others run) and each
        read is reported.
        """
        deadline = time.monotonic() + timeout_s
        last = None
        longest = 1 if on_progress is not None else MAX_WAIT_S
        while True:
            left = deadline - time.monotonic()
            status = self.status(task_id, presign=True, wait_s=max(1, min(longest, math.ceil(left))))
            if status.status != last:
                on_change(status)
                last = status.status
            if on_progress is not None:
                on_progress(status)
            if status.status in TERMINAL_STATES:
                return status
            if time.monotonic() >= deadline:
                raise TimeoutError(f"task {task_id} still {status.status} after {timeout_s:.0f}s")

    def download(self, status: TaskStatus, out_dir: Path) -> list[Path]:
        """Save the task's images (via presigned URLs) as ``out_dir/<name>.png``."""
        out_dir.mkdir(parents=True, exist_ok=True)
        paths = []
        for uri, url in zip(status.images, status.image_urls or [], strict=False):
            target = out_dir / uri.rsplit("/", 1)[-1]
            response = httpx.get(url, timeout=60)
            response.raise_for_status()
            target.write_bytes(response.content)
            paths.append(target)
        return paths
