"""Topics, per-runtime queues, DLQs, filter policies: exactly what resource_layout() says."""

from __future__ import annotations

import pytest

from sdeks.config import resource_layout
from sdeks.webhook_retries import max_receives
from tests.infra.helpers import as_list, is_tls_only, logical_id

pytestmark = pytest.mark.slow


def test_one_queue_and_dlq_per_runtime(synth_any):
    raw = synth_any.raw
    layout = resource_layout(synth_any.config)
    names = {n for rq in layout.runtimes for n in (rq.queue_name, rq.dlq_name)}
    queues = synth_any.resources("AWS::SQS::Queue")
    task_queues = {k for k, q in queues.items() if q["Properties"]["QueueName"] in names}
    assert len(task_queues) == len(names) == 2 * len(layout.runtimes)
    # The only other queues: the webhook deliverer's (test_webhooks.py) and Karpenter's interruption queue.
    hooks = {layout.webhooks.queue_name, layout.webhooks.dlq_name}
    others = {q["Properties"]["QueueName"] for k, q in queues.items() if k not in task_queues}
    assert hooks <= others <= hooks | {"sdeks-karpenter"}
    for rq in layout.runtimes:
        qid = logical_id(raw, "AWS::SQS::Queue", QueueName=rq.queue_name)
        did = logical_id(raw, "AWS::SQS::Queue", QueueName=rq.dlq_name)
        queue, dlq = queues[qid]["Properties"], queues[did]["Properties"]
        assert queue["VisibilityTimeout"] == rq.visibility_timeout_s
        assert queue["ReceiveMessageWaitTimeSeconds"] == 20
        assert queue["RedrivePolicy"] == {
            "deadLetterTargetArn": {"Fn::GetAtt": [did, "Arn"]},
            "maxReceiveCount": rq.max_receive_count,
        }
        assert dlq["MessageRetentionPeriod"] == rq.dlq_retention_s
        assert queue["SqsManagedSseEnabled"] is True and dlq["SqsManagedSseEnabled"] is True


def test_max_receive_counts_follow_the_config(synth_two_runtimes):
    counts = {
        q["Properties"]["QueueName"]: q["Properties"]["RedrivePolicy"]["maxReceiveCount"]
        for q in synth_two_runtimes.resources("AWS::SQS::Queue").values()
        if "RedrivePolicy" in q["Properties"]
    }
    assert counts == {"sdeks-sd15": 3, "sdeks-comfy": 2, "sdeks_webhooks": max_receives()}


def test_subscriptions_filter_on_runtime_with_raw_delivery(synth_any):
    raw = synth_any.raw
    layout = resource_layout(synth_any.config)
    tasks = logical_id(raw, "AWS::SNS::Topic", TopicName=layout.tasks_topic_name)
    subs = [
        s
        for s in synth_any.resources("AWS::SNS::Subscription").values()
        if s["Properties"]["TopicArn"] == {"Ref": tasks}
    ]
    assert len(subs) == len(layout.runtimes)
    by_queue = {s["Properties"]["Endpoint"]["Fn::GetAtt"][0]: s["Properties"] for s in subs}
    for rq in layout.runtimes:
        sub = by_queue[logical_id(raw, "AWS::SQS::Queue", QueueName=rq.queue_name)]
        assert sub["Protocol"] == "sqs"
        assert sub["TopicArn"] == {"Ref": tasks}
        assert sub["RawMessageDelivery"] is True
        assert sub["FilterPolicy"] == rq.filter_policy
        assert sub.get("FilterPolicyScope", "MessageAttributes") == "MessageAttributes"


def test_each_queue_takes_its_runtime_name_or_its_checkpoints_in_one_policy(synth_two_runtimes):
    """Fan-out by model: a task that names no runtime reaches the queue whose runtime declares its checkpoint."""
    raw = synth_two_runtimes.raw
    policies = {
        s["Properties"]["Endpoint"]["Fn::GetAtt"][0]: s["Properties"]["FilterPolicy"]
        for s in synth_two_runtimes.resources("AWS::SNS::Subscription").values()
        if "FilterPolicy" in s["Properties"]
    }
    for runtime in ("sd15", "comfy"):
        assert policies[logical_id(raw, "AWS::SQS::Queue", QueueName=f"sdeks-{runtime}")] == {
            "$or": [
                {"runtime": [runtime]},
                {"runtime": [{"exists": False}], "model": ["v1-5-pruned-emaonly.safetensors"]},
            ]
        }


def test_topics_are_encrypted_and_tls_only(synth_any):
    raw = synth_any.raw
    layout = resource_layout(synth_any.config)
    topics = synth_any.resources("AWS::SNS::Topic")
    assert {t["Properties"]["TopicName"] for t in topics.values()} == {
        layout.tasks_topic_name,
        layout.results_topic_name,
        f"{layout.project}-alarms",  # infra/observability.py
    }
    for t in topics.values():
        assert t["Properties"]["KmsMasterKeyId"]
    policies = synth_any.resources("AWS::SNS::TopicPolicy").values()
    covered = {
        topic["Ref"]
        for p in policies
        if is_tls_only(p["Properties"]["PolicyDocument"]["Statement"])
        for topic in p["Properties"]["Topics"]
    }
    assert covered == set(topics)
    assert raw


def test_queue_policies_tls_only_and_sns_from_tasks_topic_only(synth_any):
    raw = synth_any.raw
    layout = resource_layout(synth_any.config)
    tasks = logical_id(raw, "AWS::SNS::Topic", TopicName=layout.tasks_topic_name)
    names = {n for rq in layout.runtimes for n in (rq.queue_name, rq.dlq_name)}
    all_queues = synth_any.resources("AWS::SQS::Queue")
    queues = {k for k, q in all_queues.items() if q["Properties"]["QueueName"] in names}
    tls_covered = set()
    for p in synth_any.resources("AWS::SQS::QueuePolicy").values():
        statements = p["Properties"]["PolicyDocument"]["Statement"]
        refs = {q["Ref"] for q in p["Properties"]["Queues"]}
        if not refs <= queues:
            assert is_tls_only(statements)  # Karpenter's interruption queue: EventBridge only, over TLS
            continue
        if is_tls_only(statements):
            tls_covered |= refs
        for s in statements:
            if s["Effect"] == "Allow":
                assert as_list(s["Action"]) == ["sqs:SendMessage"]
                assert s["Principal"] == {"Service": "sns.amazonaws.com"}
                assert s["Condition"]["ArnEquals"]["aws:SourceArn"] == {"Ref": tasks}
    assert tls_covered == queues
