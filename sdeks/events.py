"""Follow results-topic events: a temporary SQS queue subscribed to the results topic.

The topic carries completion events and (best effort) started events; a
subscription takes completion events only unless asked for the starts too
(a filter policy on the ``status`` attribute, so the rest never reaches the queue).
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import boto3

from sdeks.contract import STARTED_STATUS, TERMINAL_STATES
from sdeks.local.provision import local_session


@dataclass
class EventSubscription:
    sqs: Any
    sns: Any
    queue_url: str
    subscription_arn: str

    @classmethod
    def create(
        cls,
        topic_arn: str,
        endpoint_url: str | None = None,
        region: str | None = None,
        runtime: str | None = None,
        started: bool = False,
    ) -> EventSubscription:
        """Subscribe a fresh queue (raw delivery, optional filter on ``runtime``) to the topic: completion
        events, and with ``started`` the start events too."""
        region = region or topic_arn.split(":")[3]
        session = local_session(region) if endpoint_url else boto3.session.Session(region_name=region)
        sqs = session.client("sqs", endpoint_url=endpoint_url)
        sns = session.client("sns", endpoint_url=endpoint_url)
        name = f"sdeks-events-{uuid.uuid4().hex[:12]}"
        url = sqs.create_queue(QueueName=name, Attributes={"SqsManagedSseEnabled": "true"})["QueueUrl"]
        arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        sqs.set_queue_attributes(
            QueueUrl=url,
            Attributes={
                "Policy": json.dumps(
                    {
                        "Version": "2012-10-17",
                        "Statement": [
                            {
                                "Effect": "Allow",
                                "Principal": {"Service": "sns.amazonaws.com"},
                                "Action": "sqs:SendMessage",
                                "Resource": arn,
                                "Condition": {"ArnEquals": {"aws:SourceArn": topic_arn}},
                            }
                        ],
                    }
                )
            },
        )
        statuses = sorted(TERMINAL_STATES | ({STARTED_STATUS} if started else set()))
        policy: dict[str, list[str]] = {"status": statuses}
        if runtime:
            policy["runtime"] = [runtime]
        attributes = {"RawMessageDelivery": "true", "FilterPolicy": json.dumps(policy)}
        sub = sns.subscribe(
            TopicArn=topic_arn, Protocol="sqs", Endpoint=arn, Attributes=attributes, ReturnSubscriptionArn=True
        )
        return cls(sqs, sns, url, sub["SubscriptionArn"])

    def follow(self, count: int | None = None, timeout_s: float | None = None) -> Iterator[dict[str, Any]]:
        seen = 0
        deadline = time.monotonic() + timeout_s if timeout_s else None
        while count is None or seen < count:
            if deadline and time.monotonic() > deadline:
                return
            wait = 5 if deadline is None else max(0, min(5, int(deadline - time.monotonic())))
            for message in self.sqs.receive_message(
                QueueUrl=self.queue_url, WaitTimeSeconds=wait, MaxNumberOfMessages=10
            ).get("Messages", []):
                self.sqs.delete_message(QueueUrl=self.queue_url, ReceiptHandle=message["ReceiptHandle"])
                try:
                    yield json.loads(message["Body"])
                except ValueError:
                    continue
                seen += 1
                if count is not None and seen >= count:
                    return

    def delete(self) -> None:
        try:
            self.sns.unsubscribe(SubscriptionArn=self.subscription_arn)
        finally:
            self.sqs.delete_queue(QueueUrl=self.queue_url)
