"""EMF task records: valid per the CloudWatch embedded metric format spec, and delivered to an agent endpoint."""

from __future__ import annotations

import json
import socket
from datetime import UTC, datetime

import pytest

from queue_agent import emf
from tests.fixtures.emf import assert_valid_emf


def test_a_success_carries_its_count_and_three_latencies():
    moment = datetime(2026, 1, 2, 3, 4, 5, 678000, tzinfo=UTC)
    record = emf.task_outcome_record(
        project="prod",
        runtime="sdruntime",
        outcome="succeeded",
        task_id="t-1",
        queue_wait_s=0.41,
        run_s=1.6,
        total_s=2.3,
        timestamp=moment,
    )
    assert_valid_emf(record)
    assert record["_aws"]["Timestamp"] == 1767323045678
    (directive,) = record["_aws"]["CloudWatchMetrics"]
    assert directive["Namespace"] == emf.NAMESPACE
    assert directive["Dimensions"] == [["Project", "Runtime"]]
    assert {m["Name"]: m["Unit"] for m in directive["Metrics"]} == {
        "TasksSucceeded": "Count",
        "QueueWait": "Seconds",
        "RunTime": "Seconds",
        "EndToEnd": "Seconds",
    }
    assert (record["TasksSucceeded"], record["QueueWait"], record["RunTime"], record["EndToEnd"]) == (1, 0.41, 1.6, 2.3)
    assert (record["Project"], record["Runtime"], record["task_id"]) == ("prod", "sdruntime", "t-1")
    assert record["_aws"]["LogGroupName"] == "/aws/containerinsights/prod/sdeks-task-metrics"


@pytest.mark.parametrize("outcome", ["succeeded", "failed", "retried", "cancelled", "dead_lettered"])
def test_every_outcome_counts_in_its_own_metric(outcome):
    record = emf.task_outcome_record(project="p", runtime="r", outcome=outcome)
    assert_valid_emf(record)
    names = [m["Name"] for m in record["_aws"]["CloudWatchMetrics"][0]["Metrics"]]
    assert names == [emf.OUTCOME_METRICS[outcome]], "no latency metric without a latency"
    assert record[emf.OUTCOME_METRICS[outcome]] == 1
    assert "task_id" not in record


def test_outcome_metric_names_are_distinct():
    assert len(set(emf.OUTCOME_METRICS.values())) == len(emf.OUTCOME_METRICS)
    assert not set(emf.OUTCOME_METRICS.values()) & set(emf.LATENCY_METRICS)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"outcome": "exploded"}, "unknown outcome"),
        ({"runtime": ""}, "runtime must be"),
        ({"run_s": -1.0}, "RunTime must be"),
        ({"total_s": float("nan")}, "EndToEnd must be"),
        ({"queue_wait_s": True}, "QueueWait must be"),
    ],
)
def test_bad_values_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        emf.task_outcome_record(**{"project": "p", "runtime": "r", "outcome": "failed", **kwargs})


def test_encoded_record_is_one_json_line():
    line = emf.encode(emf.task_outcome_record(project="p", runtime="r", outcome="failed", run_s=1.0))
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    assert json.loads(line)["TasksFailed"] == 1


def test_emitter_delivers_lines_over_tcp_and_survives_the_listener_going_away(emf_listener):
    emitter = emf.EmfEmitter(emf_listener.endpoint)
    for outcome in ("succeeded", "retried"):
        assert emitter.emit(emf.task_outcome_record(project="p", runtime="r", outcome=outcome, run_s=1.0))
    records = emf_listener.wait_for(2)
    assert [("TasksSucceeded" in r, "TasksRetried" in r) for r in records] == [(True, False), (False, True)]
    for record in records:
        assert_valid_emf(record)

    emitter.close()
    emf_listener.close()
    assert not emitter.emit(emf.task_outcome_record(project="p", runtime="r", outcome="failed"))
    assert emitter.dropped == 1, "a record for a closed endpoint is dropped, not raised"


def test_emitter_over_udp():
    receiver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    receiver.bind(("127.0.0.1", 0))
    receiver.settimeout(5)
    emitter = emf.EmfEmitter(f"udp://127.0.0.1:{receiver.getsockname()[1]}")
    assert emitter.emit(emf.task_outcome_record(project="p", runtime="r", outcome="cancelled"))
    assert json.loads(receiver.recv(65536))["TasksCancelled"] == 1
    receiver.close()


@pytest.mark.parametrize("endpoint", ["http://x:1", "tcp://:25888", "tcp://agent", "agent:25888"])
def test_emitter_refuses_malformed_endpoints(endpoint):
    with pytest.raises(ValueError, match="tcp://host:port"):
        emf.EmfEmitter(endpoint)
