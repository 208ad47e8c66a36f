"""Events on the results topic (completions, starts of runs), with message attributes ``runtime`` and ``status``."""

from __future__ import annotations

from typing import Any

from queue_agent.errors import AWS_ERRORS, aws_error
from sdeks.contract import CompletionEvent, Timings


def build_event(
    *,
    task_id: str,
    runtime: str,
    status: str,
    attempt: int,
    context: Any = None,
    image_url: list[str] | None = None,
    image_urls: list[str] | None = None,
    output_url: str | None = None,
    error: str | None = None,
    timings: Timings | None = None,
) -> CompletionEvent:
    return CompletionEvent(
        id=task_id,
        runtime=runtime,
        status=status,  # type: ignore[arg-type]
        result=status == "succeeded",
        image_url=image_url or [],
        image_urls=image_urls,
        output_url=output_url,
        context=context,
        error=error,
        attempt=max(1, attempt),
        timings=timings,
    )


def encode(event: CompletionEvent) -> bytes:
    return event.model_dump_json().encode()


class Publisher:
    def __init__(self, sns: Any, topic_arn: str) -> None:
        self.sns = sns
        self.topic_arn = topic_arn

    def publish(self, body: bytes, runtime: str, status: str) -> None:
        try:
            self.sns.publish(
                TopicArn=self.topic_arn,
                Message=body.decode(),
                MessageAttributes={
                    "runtime": {"DataType": "String", "StringValue": runtime or "unknown"},
                    "status": {"DataType": "String", "StringValue": status},
                },
            )
        except AWS_ERRORS as exc:
            raise aws_error("publishing the event failed", exc) from None
