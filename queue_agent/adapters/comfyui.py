"""ComfyUI runtimes: ``POST /prompt``, poll ``GET /history/{id}``, fetch ``GET /view``; progress from ``/ws``.

The workflow is the task content (API format). A rejected workflow
(``node_errors`` / HTTP 400) and an execution error are permanent failures;
an unreachable or erroring server is transient. Nothing in a workflow is
fetched by the agent, and a workflow input that is a URL is refused before the
runtime sees it (a custom node would fetch it from inside the cluster): images
a graph loads come inline (base64) or are files on the runtime's side.
"""

from __future__ import annotations

import contextlib
import re
import time
import uuid
from typing import Any

import httpx

from queue_agent.adapters import HttpAdapter, RuntimeResult, json_of, request
from queue_agent.adapters.comfyui_progress import ProgressListener
from queue_agent.errors import PermanentError, RuntimeTimeout, TransientError
from queue_agent.fetch import InputFetcher
from queue_agent.lane import Slot
from queue_agent.messages import Job
from sdeks.contract import TaskProgress

POLL_INTERVAL_S = 0.05
POLL_MAX_INTERVAL_S = 0.5


_URL = re.compile(r"^\s*[A-Za-z][A-Za-z0-9+.-]*://")


def url_inputs(workflow: dict[str, Any]) -> list[str]:
    """``node.input`` of every input value (or list item) that is a URL: the agent vets every URL it lets through,
    and a workflow's are not its to fetch."""
    found = []
    for node_id, node in workflow.items():
        for name, value in (node.get("inputs") or {}).items():
            values = value if isinstance(value, list) else [value]
            if any(isinstance(v, str) and _URL.match(v) for v in values):
                found.append(f"{node_id}.{name}")
    return found


class ComfyUIAdapter(HttpAdapter):
    def __init__(self, base_url: str, timeout_s: float, health_path: str = "/system_stats") -> None:
        # Each call is short (submit, poll, view); the task-long wait is the polling loop's.
        super().__init__(base_url, timeout_s, health_path, request_timeout_s=30.0)
        self.client_id = uuid.uuid4().hex
        self.listener = ProgressListener(base_url, self.client_id)

    def prepare(self, job: Job, fetcher: InputFetcher) -> None:
        workflow = job.task.content.model_dump(mode="json")
        found = url_inputs(workflow)
        if found:
            raise PermanentError(
                f"workflow input {found[0]} is a URL; a workflow carries its images inline (base64) and no URL "
                "reaches the runtime (custom nodes would fetch it from inside the cluster)"
            )
        job.payload = {"prompt": workflow, "client_id": self.client_id}

    def run(self, job: Job, slot: Slot | None = None) -> RuntimeResult:
        if job.payload is None:
            raise PermanentError("task was not prepared")
        slot = self.slot(job, slot)
        try:
            resp = request(self.client, "POST", "/prompt", "prompt", json=job.payload)
        except PermanentError as exc:
            raise PermanentError(f"workflow rejected: {exc.reason}") from None
        queued = json_of(resp, "prompt")
        if not isinstance(queued, dict) or not queued.get("prompt_id"):
            raise TransientError("runtime prompt answered without a prompt_id")
        if queued.get("node_errors"):
            raise PermanentError(f"workflow rejected: node_errors {_short(queued['node_errors'])}")
        slot.ref = str(queued["prompt_id"])
        entry = self._wait(slot)
        status = entry.get("status") or {}
        if status.get("status_str") == "error":
            raise PermanentError(f"workflow failed: {_execution_error(status)}")
        refs = [
            image
            for node in (entry.get("outputs") or {}).values()
            for image in (node.get("images") or [])
            if isinstance(image, dict) and image.get("filename")
        ]
        saved = [r for r in refs if r.get("type", "output") == "output"] or refs
        if not saved:
            raise PermanentError("workflow produced no images")
        images = [self._view(r) for r in saved]
        info = {"prompt_id": slot.ref, "outputs": entry.get("outputs"), "status": status}
        return RuntimeResult(images=images, info=info)

    def _wait(self, slot: Slot) -> dict[str, Any]:
        """Poll the prompt's history until it is done, the slot runs out of time, or it is cancelled."""
        interval = POLL_INTERVAL_S
        while True:
            resp = request(self.client, "GET", f"/history/{slot.ref}", "history")
            history = json_of(resp, "history")
            entry = history.get(slot.ref) if isinstance(history, dict) else None
            if isinstance(entry, dict):
                status = entry.get("status") or {}
                if (
                    status.get("completed")
                    or status.get("status_str") in ("success", "error")
                    or (not status and entry.get("outputs"))
                ):
                    return entry
            if slot.cancelled:
                raise TransientError("runtime workflow was interrupted")
            if slot.overdue() or time.monotonic() - slot.sent_at > slot.request_timeout_s:
                self.interrupt(slot)
                raise RuntimeTimeout(f"runtime workflow timed out after {slot.timeout_s:g}s")
            time.sleep(interval)
            interval = min(interval * 1.5, POLL_MAX_INTERVAL_S)

    def _view(self, ref: dict[str, Any]) -> bytes:
        params = {"filename": ref["filename"], "subfolder": ref.get("subfolder", ""), "type": ref.get("type", "output")}
        return request(self.client, "GET", "/view", "view", params=params).content

    def progress(self, slot: Slot) -> TaskProgress | None:
        """The prompt's last ``progress`` websocket report: steps of the node sampling now (ComfyUI does not say
        how many sampling nodes a workflow runs, nor which image of a batch: ``image``/``images`` are 0)."""
        report = self.listener.latest(slot.ref) if slot.ref is not None else None
        if report is None or report.max <= 0:
            return None
        step = min(max(report.value, 0), report.max)
        return TaskProgress(
            step=step, steps=report.max, fraction=round(step / report.max, 4), image=0, images=0, node=report.node
        )

    def close(self) -> None:
        self.listener.close()
        super().close()

    def interrupt(self, slot: Slot) -> None:
        """Stop this prompt only: interrupt it if it is executing, drop it if it still waits in the queue."""
        if slot.ref is None:
            return
        with contextlib.suppress(httpx.HTTPError):
            self.client.post("/interrupt", json={"prompt_id": slot.ref}, timeout=3.0)
            self.client.post("/queue", json={"delete": [slot.ref]}, timeout=3.0)


def _short(value: Any) -> str:
    text = str(value)
    return text if len(text) <= 300 else text[:300] + "…"


def _execution_error(status: dict[str, Any]) -> str:
    for message in status.get("messages") or []:
        if isinstance(message, list) and len(message) == 2 and message[0] == "execution_error":
            data = message[1] or {}
            return _short(
                f"{data.get('node_type', 'node')} {data.get('node_id', '')}: {data.get('exception_message', '')}"
            )
    return "execution error"
