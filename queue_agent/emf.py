"""Task metrics in CloudWatch embedded metric format (EMF): one record per task outcome.

CloudWatch turns such a record into metrics without any metrics service: the
record is a JSON object whose ``_aws`` member says which of its members are
metrics (``CloudWatchMetrics``), under which namespace and dimensions. Spec:
https://docs.aws.amazon.com/AmazonCloudWatch/latest/monitoring/CloudWatch_Embedded_Metric_Format_Specification.html

In the cluster the records go to the CloudWatch agent of the
``amazon-cloudwatch-observability`` add-on over TCP (its EMF listener, port
25888; ``infra/observability.py`` enables it). The agent writes each record to
the log group named in ``_aws.LogGroupName`` — per deployment, created with
the configured retention — and CloudWatch extracts the metrics. Container
logs cannot carry EMF themselves: Fluent Bit nests a JSON log line under
``log_processed``, and CloudWatch only reads ``_aws`` at the root.

Every task outcome counts 1 in its own metric (``TasksSucceeded``...), so a
dashboard sums per minute; latencies are one value per task, so CloudWatch
keeps their distribution (p50/p95). The dashboard imports the names below.
"""

from __future__ import annotations

import json
import math
import socket
import threading
from datetime import UTC, datetime
from typing import Any, Literal
from urllib.parse import urlsplit

NAMESPACE = "sdeks"
"""CloudWatch namespace of every task metric (deployments differ by the ``Project`` dimension)."""
DIMENSION_PROJECT = "Project"
DIMENSION_RUNTIME = "Runtime"
DIMENSIONS = (DIMENSION_PROJECT, DIMENSION_RUNTIME)

Outcome = Literal["succeeded", "failed", "retried", "cancelled", "dead_lettered"]
OUTCOME_METRICS: dict[str, str] = {
    "succeeded": "TasksSucceeded",
    "failed": "TasksFailed",
    "retried": "TasksRetried",
    "cancelled": "TasksCancelled",
    "dead_lettered": "TasksDeadLettered",
}
"""Outcome → metric counting it (Unit Count, value 1 per task)."""

QUEUE_WAIT = "QueueWait"
"""Seconds from submission to the start of the run."""
RUN_TIME = "RunTime"
"""Seconds the runtime spent on the task."""
END_TO_END = "EndToEnd"
"""Seconds from submission to the announced result."""
LATENCY_METRICS = (QUEUE_WAIT, RUN_TIME, END_TO_END)

DEFAULT_AGENT_ENDPOINT = "tcp://cloudwatch-agent.amazon-cloudwatch:25888"
"""The add-on's CloudWatch agent Service, EMF listener."""


def metrics_log_group(project: str) -> str:
    """Log group that holds a deployment's task metric records (created by the CDK stack)."""
    return f"/aws/containerinsights/{project}/sdeks-task-metrics"


def _seconds(name: str, value: float | None) -> float | None:
    if value is None:
        return None
    if not isinstance(value, int | float) or isinstance(value, bool) or not math.isfinite(value) or value < 0:
        raise ValueError(f"{name} must be a finite number of seconds >= 0, not {value!r}")
    return round(float(value), 3)


def task_outcome_record(
    *,
    project: str,
    runtime: str,
    outcome: Outcome,
    task_id: str | None = None,
    queue_wait_s: float | None = None,
    run_s: float | None = None,
    total_s: float | None = None,
    timestamp: datetime | None = None,
) -> dict[str, Any]:
    """One EMF record for one task outcome; latencies that are ``None`` are left out.

    ``task_id`` is kept as a plain member (searchable in the log group), never a
    dimension: a dimension per task would be a metric per task.
    """
    if outcome not in OUTCOME_METRICS:
        raise ValueError(f"unknown outcome {outcome!r}; one of {', '.join(OUTCOME_METRICS)}")
    for name, value in (("project", project), ("runtime", runtime)):
        if not isinstance(value, str) or not value or len(value) > 1024:
            raise ValueError(f"{name} must be a non-empty string of at most 1024 characters")
    moment = timestamp or datetime.now(UTC)
    counter = OUTCOME_METRICS[outcome]
    values: dict[str, float] = {counter: 1}
    for name, value in ((QUEUE_WAIT, queue_wait_s), (RUN_TIME, run_s), (END_TO_END, total_s)):
        seconds = _seconds(name, value)
        if seconds is not None:
            values[name] = seconds
    record: dict[str, Any] = {
        "_aws": {
            "Timestamp": int(moment.timestamp() * 1000),
            "LogGroupName": metrics_log_group(project),
            "CloudWatchMetrics": [
                {
                    "Namespace": NAMESPACE,
                    "Dimensions": [list(DIMENSIONS)],
                    "Metrics": [{"Name": name, "Unit": "Count" if name == counter else "Seconds"} for name in values],
                }
            ],
        },
        DIMENSION_PROJECT: project,
        DIMENSION_RUNTIME: runtime,
        "outcome": outcome,
        **values,
    }
    if task_id is not None:
        record["task_id"] = task_id
    return record


def encode(record: dict[str, Any]) -> bytes:
    """One line of JSON, as the CloudWatch agent's EMF listener reads them."""
    return json.dumps(record, separators=(",", ":")).encode() + b"\n"


def parse_endpoint(endpoint: str) -> tuple[str, tuple[str, int]]:
    """``(scheme, (host, port))`` of ``tcp://host:port`` or ``udp://host:port``; ``ValueError`` otherwise."""
    parts = urlsplit(endpoint)
    try:
        port = parts.port
    except ValueError:
        port = None
    if parts.scheme not in ("tcp", "udp") or not parts.hostname or not port:
        raise ValueError(f"EMF endpoint must look like tcp://host:port or udp://host:port, not {endpoint!r}")
    return parts.scheme, (parts.hostname, port)


class EmfEmitter:
    """Sends records to a CloudWatch agent EMF endpoint (``tcp://host:port`` or ``udp://host:port``).

    Metrics never hold up or fail a task: a send that fails is dropped (and
    counted in ``dropped``) and the connection is re-opened on the next record.
    """

    def __init__(self, endpoint: str, timeout_s: float = 1.0) -> None:
        self.scheme, self.address = parse_endpoint(endpoint)
        self.timeout_s = timeout_s
        self.dropped = 0
        self._sock: socket.socket | None = None
        self._lock = threading.Lock()

    def emit(self, record: dict[str, Any]) -> bool:
        data = encode(record)
        with self._lock:
            try:
                if self.scheme == "udp":
                    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
                        sock.sendto(data, self.address)
                    return True
                if self._sock is None:
                    self._sock = socket.create_connection(self.address, timeout=self.timeout_s)
                self._sock.sendall(data)
                return True
            except OSError:
                self.dropped += 1
                self._close()
                return False

    def _close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def close(self) -> None:
        with self._lock:
            self._close()
