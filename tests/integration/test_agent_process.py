"""The real agent process (``python -m queue_agent``) against the moto server and a fake runtime."""

from __future__ import annotations

import itertools
import json
import time

import pytest

from tests.fixtures.agent import PNG_1x1, task_message

pytestmark = pytest.mark.slow


def test_text_to_image_happy_path(stack, fake_runtime, start_agent):
    agent = start_agent(stack.resources, fake_runtime.url)
    msg = task_message(
        {"prompt": "a cat", "steps": 2, "width": 64, "height": 64, "batch_size": 2}, context={"user": "u1"}
    )
    task_id = stack.publish(msg)
    (event,) = stack.wait_events(task_id)
    bucket = stack.resources.output_bucket
    assert event["status"] == "succeeded" and event["result"] is True
    assert event["_attributes"] == {"runtime": "sdruntime", "status": "succeeded"}
    assert event["image_url"] == [
        f"s3://{bucket}/output/{task_id}/{task_id}-1.png",
        f"s3://{bucket}/output/{task_id}/{task_id}-2.png",
    ]
    assert event["output_url"] == f"s3://{bucket}/output/{task_id}/{task_id}.json"
    assert event["context"] == {"user": "u1"} and event["attempt"] == 1
    assert event["timings"]["run_s"] >= 0
    assert stack.keys(f"output/{task_id}/") == [
        f"output/{task_id}/{task_id}-1.png",
        f"output/{task_id}/{task_id}-2.png",
        f"output/{task_id}/{task_id}.json",
    ]
    png = stack.s3.get_object(Bucket=bucket, Key=f"output/{task_id}/{task_id}-1.png")["Body"].read()
    assert png == PNG_1x1
    info = json.loads(stack.s3.get_object(Bucket=bucket, Key=f"output/{task_id}/{task_id}.json")["Body"].read())
    assert info["info"]["seed"] == 1234 and info["parameters"]["prompt"] == "a cat"
    row = stack.row(task_id)
    assert row["status"] == "succeeded" and len(row["images"]) == 2
    deadline = time.monotonic() + 5
    while stack.queue_counts() != (0, 0) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert stack.queue_counts() == (0, 0)
    metrics = agent.metrics()
    assert 'sdeks_agent_tasks_total{runtime="sdruntime",status="succeeded"} 1.0' in metrics
    assert "sdeks_agent_runtime_busy_ratio" in metrics
    for entry in agent.logs():
        assert "iVBOR" not in json.dumps(entry)


def wait_until(predicate, timeout: float = 20.0, interval: float = 0.1):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError("condition not met in time")


def test_runtime_down_at_start_nothing_taken_until_up(stack, start_agent):
    from tests.fixtures.agent import FakeRuntime
    from tests.fixtures.aws import free_port

    runtime = FakeRuntime(port=free_port())
    agent = start_agent(stack.resources, runtime.url, wait_ready=False)
    task_id = stack.publish(task_message())
    agent.wait_logged("waiting for the runtime")
    time.sleep(2.5)
    assert stack.queue_counts() == (1, 0), "a message was taken while the runtime was down"
    import httpx

    assert httpx.get(f"{agent.url}/readyz").status_code == 503
    runtime.start()
    try:
        (event,) = stack.wait_events(task_id)
        assert event["status"] == "succeeded" and event["attempt"] == 1
        assert httpx.get(f"{agent.url}/readyz").status_code == 200
    finally:
        runtime.stop()


def test_runtime_500_is_retried_then_succeeds(stack, fake_runtime, start_agent):
    start_agent(stack.resources, fake_runtime.url)
    fake_runtime.fail_next(500)
    task_id = stack.publish(task_message())
    (event,) = stack.wait_events(task_id)
    assert event["status"] == "succeeded" and event["attempt"] == 2
    assert len(fake_runtime.generation_calls()) == 2
    assert len(stack.keys(f"output/{task_id}/")) == 2


def test_runtime_4xx_fails_once_and_is_deleted(stack, fake_runtime, start_agent):
    start_agent(stack.resources, fake_runtime.url)
    fake_runtime.fail_next(422, body={"detail": "sampler not supported"})
    task_id = stack.publish(task_message(context="ctx"))
    (event,) = stack.wait_events(task_id)
    assert event["status"] == "failed" and event["result"] is False
    assert event["_attributes"] == {"runtime": "sdruntime", "status": "failed"}
    assert "422" in event["error"] and "sampler not supported" in event["error"]
    assert event["context"] == "ctx" and event["image_url"] == []
    wait_until(lambda: stack.queue_counts() == (0, 0))
    time.sleep(2.5)
    assert len(fake_runtime.generation_calls()) == 1
    assert stack.queue_counts(stack.queue.dlq_url) == (0, 0)
    row = stack.row(task_id)
    assert row["status"] == "failed" and "422" in row["error"]


def test_unparseable_message_goes_to_dlq(stack, fake_runtime, start_agent):
    agent = start_agent(stack.resources, fake_runtime.url)
    stack.send_raw("this is not json: secret-ish body")
    wait_until(lambda: stack.queue_counts(stack.queue.dlq_url)[0] == 1, timeout=20)
    assert stack.queue_counts() == (0, 0)
    assert fake_runtime.generation_calls() == []
    assert agent.logged("unparseable message left for the DLQ")
    assert "secret-ish" not in agent.log_path.read_text()
    assert stack.poll_events() == []


def test_task_longer_than_visibility_is_processed_once(stack, fake_runtime, start_agent):
    stack.sqs.set_queue_attributes(QueueUrl=stack.queue.url, Attributes={"VisibilityTimeout": "1"})
    fake_runtime.delay_s = 4
    start_agent(stack.resources, fake_runtime.url, visibility_s=2)
    task_id = stack.publish(task_message())
    (event,) = stack.wait_events(task_id, timeout=30)
    assert event["status"] == "succeeded" and event["attempt"] == 1
    time.sleep(2)
    stack.poll_events()
    assert len([e for e in stack.events if e["id"] == task_id]) == 1
    assert len(fake_runtime.generation_calls()) == 1


def test_sigterm_mid_task_finishes_within_grace(stack, fake_runtime, start_agent):
    fake_runtime.delay_s = 2
    agent = start_agent(stack.resources, fake_runtime.url, shutdown_grace_s=10)
    task_id = stack.publish(task_message())
    agent.wait_logged("task running")
    assert agent.terminate(timeout=15) == 0
    (event,) = stack.wait_events(task_id)
    assert event["status"] == "succeeded"
    assert stack.queue_counts() == (0, 0)


def test_sigterm_past_grace_releases_task_and_prefetched(stack, fake_runtime, start_agent):
    fake_runtime.delay_s = 4
    agent = start_agent(stack.resources, fake_runtime.url, shutdown_grace_s=0.5, prefetch=1)
    first = stack.publish(task_message())
    second = stack.publish(task_message())
    agent.wait_logged("task running")
    agent.wait_logged("task received", count=2)
    started = time.monotonic()
    assert agent.terminate(timeout=15) == 0
    assert time.monotonic() - started < 4
    assert {
        e["task_id"] for e in agent.logged("releasing unfinished task") + agent.logged("releasing prefetched task")
    } == {
        first,
        second,
    }
    wait_until(lambda: stack.queue_counts()[0] == 2, timeout=5)
    fake_runtime.delay_s = 0
    start_agent(stack.resources, fake_runtime.url)
    stack.wait_events(first)
    stack.wait_events(second)


def test_kill_9_mid_task_another_agent_completes(stack, fake_runtime, start_agent):
    fake_runtime.delay_s = 2
    agent = start_agent(stack.resources, fake_runtime.url, visibility_s=2)
    task_id = stack.publish(task_message({"prompt": "x", "batch_size": 2, "width": 64, "height": 64, "steps": 2}))
    agent.wait_logged("task running")
    agent.kill()
    start_agent(stack.resources, fake_runtime.url, visibility_s=2)
    events = stack.wait_events(task_id, timeout=30)
    assert all(e["status"] == "succeeded" for e in events)
    assert events[0]["attempt"] == 2
    assert stack.keys(f"output/{task_id}/") == sorted(
        [f"output/{task_id}/{task_id}-1.png", f"output/{task_id}/{task_id}-2.png", f"output/{task_id}/{task_id}.json"]
    )
    wait_until(lambda: stack.queue_counts() == (0, 0))


@pytest.mark.parametrize("service", ["sns", "s3"])
def test_aws_outage_keeps_message_and_completes_later(stack, fake_runtime, start_agent, flaky_proxy, service):
    dlq = json.dumps({"deadLetterTargetArn": stack.queue.dlq_arn, "maxReceiveCount": 5})
    stack.sqs.set_queue_attributes(QueueUrl=stack.queue.url, Attributes={"RedrivePolicy": dlq})
    flaky_proxy.fail_for(3600)
    agent = start_agent(
        stack.resources, fake_runtime.url, extra_env={f"AWS_ENDPOINT_URL_{service.upper()}": flaky_proxy.url}
    )
    task_id = stack.publish(task_message())
    agent.wait_logged("task will be retried")
    assert sum(stack.queue_counts()) == 1  # kept, not deleted
    assert agent.proc.poll() is None  # the agent survives AWS errors
    assert not stack.poll_events()
    flaky_proxy.fail_until = 0
    (event,) = stack.wait_events(task_id, timeout=30)
    assert event["status"] == "succeeded"
    assert flaky_proxy.failed > 0
    wait_until(lambda: stack.queue_counts() == (0, 0))
    assert stack.row(task_id)["status"] == "succeeded"
    if service == "s3":  # nothing was stored: the task ran again
        assert event["attempt"] >= 2
    else:  # stored but not announced: the stored event is announced, the task is not re-run
        assert len(fake_runtime.generation_calls()) == 1


def test_duplicate_delivery_is_acknowledged_with_identical_event(stack, fake_runtime, start_agent):
    start_agent(stack.resources, fake_runtime.url)
    msg = task_message()
    stack.publish(msg)
    (first,) = stack.wait_events(msg["id"])
    stack.publish(msg)
    events = stack.wait_events(msg["id"], count=2)
    assert events[0] == events[1] == first
    assert len(fake_runtime.generation_calls()) == 1
    wait_until(lambda: stack.queue_counts() == (0, 0))


def test_ssrf_inputs_are_refused_with_failed_event(stack, fake_runtime, start_agent):
    start_agent(stack.resources, fake_runtime.url, allowed_input_hosts="localhost,*.example.com")
    refs = {
        "loopback": "https://127.0.0.1/x.png",
        "metadata": "https://169.254.169.254/latest/meta-data/iam/security-credentials/",
        "private": "https://10.0.0.1/a.png",
        "localhost-name": "https://localhost/a.png",
        "file": "file:///etc/passwd",
        "http": "http://img.example.com/a.png",
        "bucket": "s3://not-allowed-bucket/a.png",
    }
    ids = {}
    for name, ref in refs.items():
        content = {"prompt": "x", "steps": 2, "width": 64, "height": 64, "alwayson_scripts": {"image_link": ref}}
        ids[name] = stack.publish(task_message(content, tasktype="image-to-image"))
    for name, task_id in ids.items():
        (event,) = stack.wait_events(task_id)
        assert event["status"] == "failed", name
        assert "refused" in event["error"] or "unsupported URL scheme" in event["error"], (name, event["error"])
    assert fake_runtime.generation_calls() == []
    wait_until(lambda: stack.queue_counts() == (0, 0))


def test_claim_check_and_s3_init_image(stack, fake_runtime, start_agent):
    import base64

    from tests.fixtures.agent import PNG_B64

    start_agent(stack.resources, fake_runtime.url)
    bucket = stack.resources.output_bucket
    stack.s3.put_object(Bucket=bucket, Key="inputs/cat.png", Body=base64.b64decode(PNG_B64))
    msg = task_message(
        {
            "prompt": "x" * 100,
            "steps": 2,
            "width": 64,
            "height": 64,
            "alwayson_scripts": {"image_link": f"s3://{bucket}/inputs/cat.png", "sd_model_checkpoint": "other.ckpt"},
        },
        tasktype="image-to-image",
    )
    task_id = msg["id"]
    stack.s3.put_object(Bucket=bucket, Key=f"_claims/{task_id}.json", Body=json.dumps({"task": msg.pop("task")}))
    msg["claim_check"] = f"s3://{bucket}/_claims/{task_id}.json"
    stack.publish(msg)
    (event,) = stack.wait_events(task_id)
    assert event["status"] == "succeeded", event
    ((path, body),) = fake_runtime.generation_calls()
    assert path == "/sdapi/v1/img2img"
    assert body["init_images"] == [PNG_B64]
    assert "alwayson_scripts" not in body
    assert ("POST", "/sdapi/v1/options", {"sd_model_checkpoint": "other.ckpt"}) in fake_runtime.requests
    info = json.loads(stack.s3.get_object(Bucket=bucket, Key=f"output/{task_id}/{task_id}.json")["Body"].read())
    assert info["parameters"]["inputs"] == {"alwayson_scripts.image_link": f"s3://{bucket}/inputs/cat.png"}
    assert PNG_B64 not in json.dumps(info)

    other = task_message()
    other.pop("task")
    other["claim_check"] = "s3://some-other-bucket/_claims/x.json"
    stack.publish(other)
    (failed,) = stack.wait_events(other["id"])
    assert failed["status"] == "failed" and "claim check" in failed["error"]


def test_kill_9_with_two_in_flight_both_complete_once(stack, fake_runtime, start_agent):
    fake_runtime.delay_s = 2
    agent = start_agent(stack.resources, fake_runtime.url, visibility_s=2)
    first = stack.publish(task_message())
    second = stack.publish(task_message())
    # both sent: one executing, the other waiting at the runtime
    wait_until(lambda: len(fake_runtime.generation_calls()) == 2)
    agent.kill()
    start_agent(stack.resources, fake_runtime.url, visibility_s=2)
    for task_id in (first, second):
        (event,) = stack.wait_events(task_id, timeout=40)
        assert event["status"] == "succeeded" and event["attempt"] == 2
    wait_until(lambda: stack.queue_counts() == (0, 0))
    time.sleep(2.5)
    stack.poll_events()
    for task_id in (first, second):
        assert len([e for e in stack.events if e["id"] == task_id]) == 1, "announced twice"
        assert stack.keys(f"output/{task_id}/") == [
            f"output/{task_id}/{task_id}-1.png",
            f"output/{task_id}/{task_id}.json",
        ]
        assert stack.row(task_id)["status"] == "succeeded"


def test_sigterm_with_two_in_flight_finishes_both_within_grace(stack, fake_runtime, start_agent):
    fake_runtime.delay_s = 1.5
    agent = start_agent(stack.resources, fake_runtime.url, shutdown_grace_s=10)
    ids = [stack.publish(task_message()) for _ in range(2)]
    wait_until(lambda: len(fake_runtime.generation_calls()) == 2)
    assert agent.terminate(timeout=15) == 0
    for task_id in ids:
        (event,) = stack.wait_events(task_id)
        assert event["status"] == "succeeded" and event["attempt"] == 1
    assert stack.queue_counts() == (0, 0)
    assert len(fake_runtime.generation_calls()) == 2


def test_next_task_waits_at_the_runtime_in_order_sdwebui_and_comfyui(stack, fake_runtime, start_agent):
    """The runtime starts each next task the instant the previous ends: it was already sent."""
    fake_runtime.delay_s = 0.5
    ids = [stack.publish(task_message()) for _ in range(4)]
    agent = start_agent(stack.resources, fake_runtime.url)
    for task_id in ids:
        assert stack.wait_events(task_id)[0]["status"] == "succeeded"
    agent.terminate()
    assert len(fake_runtime.generation_calls()) == 4
    busy = sorted(fake_runtime.busy)
    gaps = [later[0] - earlier[1] for earlier, later in itertools.pairwise(busy)]
    assert max(gaps) < 0.1, f"the runtime waited between tasks: {gaps}"

    graph = {
        "3": {"class_type": "KSampler", "inputs": {"seed": 1}},
        "9": {"class_type": "SaveImage", "inputs": {"images": ["8", 0]}},
    }
    fake_runtime.busy.clear()
    pipelines = [stack.publish(task_message(graph, tasktype="pipeline")) for _ in range(3)]
    start_agent(stack.resources, fake_runtime.url, runtime_type="comfyui")
    for task_id in pipelines:
        (event,) = stack.wait_events(task_id)
        assert event["status"] == "succeeded" and len(event["image_url"]) == 1
    busy = sorted(fake_runtime.busy)
    assert any(later[0] == earlier[1] for earlier, later in itertools.pairwise(busy)), (
        "no prompt was queued at ComfyUI behind the running one"
    )
