"""Where operator commands act: a local stack (``.sdeks/local.json``) or a deployed stack by name.

Both resolve to the same :class:`OpsTarget` — AWS clients plus the names and URLs
of one deployment's queues, DLQs, task table and output bucket — so ``sdeks dlq``
and ``sdeks top`` run the same code against moto and against AWS.

A deployed stack is found by its name (the config's ``project``, which is the
CloudFormation stack name): the bucket and table come from the stack's outputs,
the queues from the names :func:`sdeks.config.resource_layout` gives them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from sdeks.config import Config, resource_layout
from sdeks.local.state import pid_alive, read_state, state_path


class TargetError(RuntimeError):
    """The deployment or runtime cannot be found; the message says what to do."""


@dataclass(frozen=True)
class RuntimeRef:
    """One runtime's queues (and, in local mode, its runtime server for live progress)."""

    name: str
    queue_url: str
    dlq_url: str
    runtime_url: str | None = None


@dataclass
class OpsTarget:
    label: str
    sqs: Any
    s3: Any
    table: Any
    output_bucket: str
    runtimes: dict[str, RuntimeRef] = field(default_factory=dict)
    local: bool = False

    def runtime(self, name: str) -> RuntimeRef:
        try:
            return self.runtimes[name]
        except KeyError:
            known = ", ".join(sorted(self.runtimes)) or "none"
            raise TargetError(f"unknown runtime {name!r} in {self.label}; runtimes: {known}") from None

    def queue_arn(self, queue_url: str) -> str:
        attrs = self.sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])
        return attrs["Attributes"]["QueueArn"]


def local_target(root: Path | None = None) -> OpsTarget:
    """The running local stack of ``root`` (default: the current directory)."""
    from sdeks.local.provision import local_session

    state = read_state(state_path(root))
    if state is None or not pid_alive(state.supervisor_pid):
        raise TargetError("no local stack is running here (.sdeks/local.json); run `sdeks local up` or pass --stack")
    session = local_session(state.region)
    endpoint = state.aws_endpoint_url
    return OpsTarget(
        label="the local stack",
        sqs=session.client("sqs", endpoint_url=endpoint),
        s3=session.client("s3", endpoint_url=endpoint),
        table=session.resource("dynamodb", endpoint_url=endpoint).Table(state.task_table),
        output_bucket=state.output_bucket,
        runtimes={
            name: RuntimeRef(name, rt.queue_url, rt.dlq_url, rt.runtime_url) for name, rt in state.runtimes.items()
        },
        local=True,
    )


def deployed_target(stack_name: str, config: Config, region: str | None = None, session: Any = None) -> OpsTarget:
    """A deployed stack: its outputs for bucket and table, the config's runtimes for the queues.

    ``config`` supplies the runtime names; its ``project`` is replaced by ``stack_name``
    (the stack is named after the project it was deployed with).
    """
    import boto3

    config = config.model_copy(update={"project": stack_name})
    session = session or boto3.session.Session(region_name=region or config.region)
    cfn, sqs = session.client("cloudformation"), session.client("sqs")
    try:
        stacks = cfn.describe_stacks(StackName=stack_name)["Stacks"]
    except ClientError as exc:
        raise TargetError(f"stack {stack_name!r} not found: {_reason(exc)}") from None
    except BotoCoreError as exc:
        raise TargetError(f"cannot reach CloudFormation: {exc}") from None
    outputs = {o["OutputKey"]: o["OutputValue"] for o in stacks[0].get("Outputs", [])}
    missing = [key for key in ("OutputBucket", "TaskTableName") if key not in outputs]
    if missing:
        raise TargetError(f"stack {stack_name!r} has no output {', '.join(missing)}; is it an sdeks stack?")
    runtimes = {}
    for rq in resource_layout(config).runtimes:
        try:
            queue_url = sqs.get_queue_url(QueueName=rq.queue_name)["QueueUrl"]
            dlq_url = sqs.get_queue_url(QueueName=rq.dlq_name)["QueueUrl"]
        except ClientError as exc:
            raise TargetError(
                f"runtime {rq.runtime.name!r}: queue {rq.queue_name} not found ({_reason(exc)}); "
                "does --config list the runtimes this stack was deployed with?"
            ) from None
        runtimes[rq.runtime.name] = RuntimeRef(rq.runtime.name, queue_url, dlq_url)
    return OpsTarget(
        label=f"stack {stack_name}",
        sqs=sqs,
        s3=session.client("s3"),
        table=session.resource("dynamodb").Table(outputs["TaskTableName"]),
        output_bucket=outputs["OutputBucket"],
        runtimes=runtimes,
    )


def _reason(exc: ClientError) -> str:
    error = exc.response.get("Error", {})
    return error.get("Message") or error.get("Code") or "error"


def resolve_target(stack: str | None, config_file: Path | None = None, region: str | None = None) -> OpsTarget:
    """``--stack NAME`` → that deployed stack (runtimes from ``config_file``); else the local stack here."""
    if stack is None:
        return local_target()
    from sdeks.config import ConfigError, load_config

    try:
        config = load_config(config_file)
    except ConfigError as exc:
        raise TargetError(str(exc)) from None
    return deployed_target(stack, config, region)
