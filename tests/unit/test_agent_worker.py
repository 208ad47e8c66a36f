"""The agent's state machine in-process: moto's in-process AWS, an in-process runtime that serializes like one GPU.

Fast tests of what the worker decides (outcomes, ordering, two in flight, timeouts,
cancellation, batched deletes); the real-process tests in
tests/integration/test_agent_process.py keep what needs real processes.
"""

from __future__ import annotations

import json
import statistics
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import boto3
import pytest
from botocore.stub import Stubber
from moto import mock_aws

from queue_agent.adapters import RuntimeResult
from queue_agent.consumer import SqsConsumer
from queue_agent.errors import PermanentError, RuntimeTimeout, TransientError
from queue_agent.lane import RuntimeLane, Slot
from queue_agent.messages import Job, Received
from queue_agent.settings import Settings
from queue_agent.storage import Storage
from queue_agent.worker import Agent, AwsClients
from sdeks.config import TASK_TABLE_KEY
from sdeks.contract import event_key
from sdeks.tasks_table import TaskTable
from tests.fixtures.agent import PNG_1x1, task_message

REGION = "us-east-1"


@dataclass
class GpuAdapter:
    """An in-process runtime: one task at a time, ``delay_s`` each; records order and overlap of calls."""

    delay_s: float = 0.05
    errors: list[Exception] = field(default_factory=list)
    order: list[str] = field(default_factory=list)
    calls_in_flight: int = 0
    max_calls_in_flight: int = 0
    interrupted: list[str] = field(default_factory=list)
    block: threading.Event | None = None
    _gpu: threading.Lock = field(default_factory=threading.Lock)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def prepare(self, job: Job, fetcher: Any) -> None:
        job.payload = {"prompt": "x"}

    def exclusive(self, job: Job) -> bool:
        return False

    def healthy(self) -> bool:
        return True

    def close(self) -> None:
        pass

    def interrupt(self, slot: Slot) -> None:
        self.interrupted.append(slot.job.task_id)
        if self.block is not None:
            self.block.set()

    def run(self, job: Job, slot: Slot | None = None) -> RuntimeResult:
        with self._lock:
            self.order.append(job.task_id)  # the order the agent sent the tasks in
            self.calls_in_flight += 1
            self.max_calls_in_flight = max(self.max_calls_in_flight, self.calls_in_flight)
        try:
            with self._gpu:
                if self.errors:
                    raise self.errors.pop(0)
                if self.block is not None:
                    self.block.wait(10)
                    if slot is not None and slot.expired:
                        raise RuntimeTimeout("runtime text-to-image timed out")
                time.sleep(self.delay_s)
                return RuntimeResult(images=[PNG_1x1, PNG_1x1], info={"seed": 1})
        finally:
            with self._lock:
                self.calls_in_flight -= 1


@dataclass
class Stack:
    sqs: Any
    s3: Any
    sns: Any
    table: Any
    queue_url: str
    dlq_url: str
    bucket: str
    topic_arn: str
    results_url: str

    def send(self, **kwargs: Any) -> dict:
        msg = task_message(**kwargs)
        self.sqs.send_message(QueueUrl=self.queue_url, MessageBody=json.dumps(msg))
        return msg

    def events(self, count: int, timeout: float = 10.0) -> list[dict]:
        found: list[dict] = []
        deadline = time.monotonic() + timeout
        while len(found) < count and time.monotonic() < deadline:
            resp = self.sqs.receive_message(QueueUrl=self.results_url, MaxNumberOfMessages=10, WaitTimeSeconds=0)
            for m in resp.get("Messages", []):
                found.append(json.loads(json.loads(m["Body"])["Message"]))
                self.sqs.delete_message(QueueUrl=self.results_url, ReceiptHandle=m["ReceiptHandle"])
            time.sleep(0.02)
        return found

    def counts(self, url: str | None = None) -> tuple[int, int]:
        attrs = self.sqs.get_queue_attributes(
            QueueUrl=url or self.queue_url,
            AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
        )["Attributes"]
        return int(attrs["ApproximateNumberOfMessages"]), int(attrs["ApproximateNumberOfMessagesNotVisible"])

    def row(self, task_id: str) -> dict | None:
        return self.table.get_item(Key={TASK_TABLE_KEY: task_id}).get("Item")


@pytest.fixture
def aws() -> Iterator[Stack]:
    with mock_aws():
        sqs = boto3.client("sqs", region_name=REGION)
        s3 = boto3.client("s3", region_name=REGION)
        sns = boto3.client("sns", region_name=REGION)
        ddb = boto3.resource("dynamodb", region_name=REGION)
        s3.create_bucket(Bucket="out")
        ddb.create_table(
            TableName="tasks",
            AttributeDefinitions=[{"AttributeName": TASK_TABLE_KEY, "AttributeType": "S"}],
            KeySchema=[{"AttributeName": TASK_TABLE_KEY, "KeyType": "HASH"}],
            BillingMode="PAY_PER_REQUEST",
        )
        dlq = sqs.create_queue(QueueName="q-dlq")["QueueUrl"]
        dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        redrive = json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": 3})
        queue = sqs.create_queue(QueueName="q", Attributes={"RedrivePolicy": redrive})["QueueUrl"]
        topic = sns.create_topic(Name="results")["TopicArn"]
        results = sqs.create_queue(QueueName="results")["QueueUrl"]
        results_arn = sqs.get_queue_attributes(QueueUrl=results, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=results_arn)
        yield Stack(sqs, s3, sns, ddb.Table("tasks"), queue, dlq, "out", topic, results)


@pytest.fixture
def make_agent(aws: Stack) -> Iterator[Callable[..., Agent]]:
    agents: list[Agent] = []

    def make(adapter: Any, cancels: Any = None, **overrides: Any) -> Agent:
        settings = Settings(
            queue_url=aws.queue_url,
            runtime_name="sdruntime",
            output_bucket=aws.bucket,
            results_topic_arn=aws.topic_arn,
            task_table="tasks",
            **{"wait_time_s": 1, "visibility_s": 30, "backoff_base_s": 5, "shutdown_grace_s": 5, **overrides},
        )
        clients = AwsClients(sqs=aws.sqs, s3=aws.s3, sns=aws.sns, table=TaskTable(aws.table))
        agent = Agent(settings, adapter=adapter, clients=clients, cancels=cancels)
        agent.start()
        agents.append(agent)
        return agent

    yield make
    for agent in agents:
        if not agent.stopped.is_set():
            agent.shutdown(grace_s=2)


def counted(agent: Agent, status: str) -> float:
    return agent.metrics.tasks.labels(runtime="sdruntime", status=status)._value.get()


def wait_for(predicate: Callable[[], Any], timeout: float = 10.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError("condition not met in time")


def test_two_in_flight_run_in_receive_order_and_all_succeed(aws, make_agent):
    gpu = GpuAdapter(delay_s=0.2)
    sent = [aws.send()["id"] for _ in range(6)]
    agent = make_agent(gpu)
    events = aws.events(6)
    assert sorted(e["id"] for e in events) == sorted(sent)
    assert all(e["status"] == "succeeded" and len(e["image_url"]) == 2 for e in events)
    assert gpu.order == sent, "tasks were sent out of receive order"
    assert gpu.max_calls_in_flight == 2, "the next task was not waiting at the runtime"
    wait_for(lambda: aws.counts() == (0, 0))
    assert counted(agent, "succeeded") == 6
    assert all(aws.row(task_id)["status"] == "succeeded" for task_id in sent)
    timings = [e["timings"]["run_s"] for e in events]
    # 0.2 s each; run times that included the wait behind the task ahead would be about 0.4 s. The agent
    # infers a start from the answer of the task ahead, so one stalled thread can skew a pair: the median.
    assert 0.15 <= statistics.median(timings) < 0.3, f"run times must not include the wait behind another: {timings}"


def test_permanent_failure_is_announced_and_deleted(aws, make_agent):
    gpu = GpuAdapter(errors=[PermanentError("runtime rejected the task: HTTP 422")])
    msg = aws.send(context={"k": 1})
    agent = make_agent(gpu)
    (event,) = aws.events(1)
    assert event["status"] == "failed" and "422" in event["error"] and event["context"] == {"k": 1}
    wait_for(lambda: aws.counts() == (0, 0))
    assert counted(agent, "failed") == 1 and aws.row(msg["id"])["status"] == "failed"


def test_transient_failure_keeps_the_message_with_a_backoff(aws, make_agent):
    gpu = GpuAdapter(errors=[TransientError("runtime text-to-image answered HTTP 503")])
    aws.send()
    agent = make_agent(gpu)
    wait_for(lambda: counted(agent, "retried") == 1)
    assert aws.counts() == (0, 1)  # back on the queue, invisible for the backoff
    assert aws.events(1, timeout=0.5) == []


def test_last_delivery_announces_the_dlq_move(aws, make_agent):
    msg = aws.send()
    for _ in range(2):  # two earlier deliveries: the agent's receive is the third (maxReceiveCount 3)
        (m,) = aws.sqs.receive_message(QueueUrl=aws.queue_url, VisibilityTimeout=0)["Messages"]
    gpu = GpuAdapter(errors=[TransientError("runtime text-to-image answered HTTP 503")])
    agent = make_agent(gpu)
    (event,) = aws.events(1)
    assert event["status"] == "failed" and "dead-letter queue after 3 attempts" in event["error"]
    assert counted(agent, "dlq") == 1 and aws.row(msg["id"])["status"] == "failed"
    assert m["MessageId"]


def test_stored_event_is_replayed_without_running(aws, make_agent):
    msg = aws.send()
    stored = {"id": msg["id"], "runtime": "sdruntime", "status": "succeeded", "result": True, "attempt": 1}
    aws.s3.put_object(Bucket=aws.bucket, Key=event_key(msg["id"]), Body=json.dumps(stored).encode())
    gpu = GpuAdapter()
    agent = make_agent(gpu)
    (event,) = aws.events(1)
    assert event == stored
    wait_for(lambda: counted(agent, "skipped") == 1)
    assert gpu.order == [] and aws.counts() == (0, 0)


def test_task_already_succeeded_is_acknowledged_and_not_stored(aws, make_agent):
    msg = aws.send()
    aws.table.put_item(Item={TASK_TABLE_KEY: msg["id"], "status": "succeeded", "runtime": "sdruntime"})
    agent = make_agent(GpuAdapter())
    wait_for(lambda: counted(agent, "skipped") == 1)
    wait_for(lambda: aws.counts() == (0, 0))
    assert "Contents" not in aws.s3.list_objects_v2(Bucket=aws.bucket, Prefix="output/")


def test_two_copies_in_one_batch_run_once_and_announce_identical_events(aws, make_agent):
    msg = task_message()
    for _ in range(2):  # SNS delivers at least once: the same task twice on the queue
        aws.sqs.send_message(QueueUrl=aws.queue_url, MessageBody=json.dumps(msg))
    gpu = GpuAdapter(delay_s=0.3)
    agent = make_agent(gpu, backoff_base_s=1)
    events = aws.events(2)
    assert len(events) == 2 and events[0] == events[1], "a duplicate must re-announce the same event"
    assert gpu.order == [msg["id"]]
    assert counted(agent, "deferred") == 1 and counted(agent, "succeeded") == 1
    wait_for(lambda: counted(agent, "skipped") == 1)
    wait_for(lambda: aws.counts() == (0, 0))


def test_unparseable_message_is_left_for_the_dlq(aws, make_agent):
    aws.sqs.send_message(QueueUrl=aws.queue_url, MessageBody="not json")
    gpu = GpuAdapter()
    agent = make_agent(gpu)
    wait_for(lambda: counted(agent, "unparseable") == 1)
    assert aws.counts() == (0, 1) and gpu.order == []


def test_cancelled_task_is_acknowledged_without_running(aws, make_agent):
    first, second = aws.send()["id"], aws.send()["id"]

    class Cancel:
        def cancelled(self, task_ids):
            return {t for t in task_ids if t == first}

    gpu = GpuAdapter()
    agent = make_agent(gpu, cancels=Cancel())
    (event,) = aws.events(1)
    assert event["id"] == second and gpu.order == [second]
    wait_for(lambda: counted(agent, "cancelled") == 1)
    wait_for(lambda: aws.counts() == (0, 0))


def test_running_task_cancelled_is_interrupted_and_not_stored(aws, make_agent):
    msg = aws.send()
    cancel_now = threading.Event()

    class Cancel:
        def cancelled(self, task_ids):
            return set(task_ids) if cancel_now.is_set() else set()

    gpu = GpuAdapter(block=threading.Event())
    agent = make_agent(gpu, cancels=Cancel(), visibility_s=2)  # the watch runs every heartbeat (2/3 s)
    wait_for(lambda: gpu.order == [msg["id"]])
    cancel_now.set()
    wait_for(lambda: counted(agent, "cancelled") == 1)
    assert gpu.interrupted == [msg["id"]]
    assert "Contents" not in aws.s3.list_objects_v2(Bucket=aws.bucket, Prefix="output/")


def test_shutdown_releases_what_it_holds(aws, make_agent):
    ids = [aws.send()["id"] for _ in range(3)]
    gpu = GpuAdapter(block=threading.Event())
    agent = make_agent(gpu, prefetch=1)  # one executing, one waiting at the runtime, one prepared
    wait_for(lambda: agent.held_count() == 3 and gpu.order == ids[:2])
    aws.send()
    time.sleep(1.5)
    assert agent.held_count() == 3, "prefetch 1 holds the two in flight at the runtime and one more"
    agent.shutdown(grace_s=0.3)
    assert aws.counts() == (4, 0), "every held message goes back at once"
    gpu.block.set()


def test_lane_timeout_counts_from_the_start_not_from_sending():
    gpu = GpuAdapter(delay_s=0.25)
    lane = RuntimeLane(gpu, timeout_s=0.4)
    done: dict[str, Any] = {}
    finished = threading.Event()

    def on_done(slot, result, error):
        done[slot.job.task_id] = (slot, result, error)
        if len(done) == 2:
            finished.set()

    jobs = [Job(task_id=f"t{i}", runtime="sdruntime", submitted_at=None, task=None) for i in range(2)]  # type: ignore[arg-type]
    for job in jobs:
        lane.submit(job, on_done)
    assert finished.wait(5)
    for job in jobs:
        slot, result, error = done[job.task_id]
        assert error is None and result is not None, error  # the second waited 0.25 s, ran 0.25 s: not late
        assert 0.2 <= slot.run_s < 0.4
    lane.close()


def test_lane_interrupts_a_task_past_its_timeout_with_a_timeout_error():
    gpu = GpuAdapter(block=threading.Event())
    lane = RuntimeLane(gpu, timeout_s=0.3)
    outcome: list[Any] = []
    came_back = threading.Event()
    job = Job(task_id="slow", runtime="sdruntime", submitted_at=None, task=None)  # type: ignore[arg-type]
    lane.submit(job, lambda slot, result, error: (outcome.append(error), came_back.set()))
    assert came_back.wait(5)
    assert isinstance(outcome[0], RuntimeTimeout) and gpu.interrupted == ["slow"]
    lane.close()


def test_concurrent_acks_share_one_delete_batch(aws):
    aws.sqs.send_message_batch(QueueUrl=aws.queue_url, Entries=[{"Id": str(i), "MessageBody": "x"} for i in range(4)])
    consumer = SqsConsumer(aws.sqs, aws.queue_url, visibility_s=30, clock=time.time)
    msgs = consumer.receive(10, 0)
    assert len(msgs) == 4
    sizes: list[int] = []
    real = aws.sqs.delete_message_batch
    first_call = threading.Event()

    def slow_batch(**kwargs):
        sizes.append(len(kwargs["Entries"]))
        first_call.set()
        time.sleep(0.2)  # the other acks arrive while this round trip is in flight
        return real(**kwargs)

    aws.sqs.delete_message_batch = slow_batch
    consumer.start()
    threads = [threading.Thread(target=consumer.ack, args=(m,)) for m in msgs[:1]]
    threads[0].start()
    first_call.wait(5)
    threads += [threading.Thread(target=consumer.ack, args=(m,)) for m in msgs[1:]]
    for t in threads[1:]:
        t.start()
    for t in threads:
        t.join(5)
    consumer.close()
    assert sizes == [1, 3]
    assert aws.counts() == (0, 0)


def test_aws_errors_map_to_transient_errors_with_the_code():
    s3 = boto3.client("s3", region_name=REGION, aws_access_key_id="x", aws_secret_access_key="x")
    storage = Storage(s3, "out")
    with Stubber(s3) as stub:
        stub.add_client_error("put_object", service_error_code="SlowDown", http_status_code=503)
        with pytest.raises(TransientError, match="storing outputs failed: SlowDown"):
            storage.put_image("output", "t1", 1, PNG_1x1)
        stub.add_client_error("get_object", service_error_code="NoSuchKey", http_status_code=404)
        assert storage.get_event("t1") is None
        stub.add_client_error("get_object", service_error_code="InternalError", http_status_code=500)
        with pytest.raises(TransientError, match="reading the stored event failed: InternalError"):
            storage.get_event("t1")


def test_received_from_sqs_keeps_the_receive_count():
    msg = Received.from_sqs(
        {"MessageId": "m", "ReceiptHandle": "r", "Body": "{}", "Attributes": {"ApproximateReceiveCount": "3"}}, 1.0
    )
    assert msg.receive_count == 3 and msg.received_at == 1.0


def test_heartbeat_keeps_every_held_message_invisible_and_release_gives_it_back(aws):
    aws.sqs.send_message_batch(QueueUrl=aws.queue_url, Entries=[{"Id": str(i), "MessageBody": "x"} for i in range(3)])
    consumer = SqsConsumer(aws.sqs, aws.queue_url, visibility_s=2, clock=time.time)
    held = consumer.receive(10, 0)
    assert len(held) == 3
    time.sleep(1.2)
    consumer.beat()
    time.sleep(1.2)  # past the visibility of the receive: only the heartbeat keeps them hidden
    assert aws.counts() == (0, 3)
    consumer.release(held[0], 0)
    assert aws.counts() == (1, 2)
    consumer.beat()  # a released message is not hidden again
    assert aws.counts() == (1, 2)
