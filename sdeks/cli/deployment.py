"""What the CLI needs of a stack, from its CloudFormation outputs or from a local stack's state file.

A deployed stack is read with boto3 and the caller's credentials (``describe-stacks`` by the keys of
:class:`sdeks.config.outputs.StackOutput`; the API key's value from API Gateway). A local stack is
read from ``.sdeks/local.json`` and reached on its moto endpoint with the local credentials.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
from botocore.exceptions import BotoCoreError, ClientError

from sdeks.config.outputs import StackOutput
from sdeks.local.provision import local_session
from sdeks.local.state import read_state, state_path


class DeploymentError(RuntimeError):
    """The stack cannot be found or lacks what a command needs; the message says which."""


@dataclass(frozen=True)
class ModelLocation:
    bucket: str
    prefix: str
    checkpoint: str | None = None

    @property
    def uri(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}/"

    @classmethod
    def parse(cls, uri: str, checkpoint: str | None = None) -> ModelLocation:
        if not uri.startswith("s3://"):
            raise DeploymentError(f"not an s3:// model location: {uri!r}")
        bucket, _, prefix = uri.removeprefix("s3://").partition("/")
        return cls(bucket, prefix.strip("/"), checkpoint)


@dataclass(frozen=True)
class Deployment:
    name: str
    region: str | None
    endpoint_url: str | None = None
    """Set for a local stack (its moto server); None for AWS."""
    outputs: dict[str, str] = field(default_factory=dict)
    api_key: str | None = None

    def session(self) -> boto3.session.Session:
        if self.endpoint_url:
            return local_session(self.region or "us-east-1")
        return boto3.session.Session(region_name=self.region)

    def client(self, service: str) -> Any:
        return self.session().client(service, endpoint_url=self.endpoint_url)

    def output(self, key: StackOutput) -> str:
        try:
            return self.outputs[key.value]
        except KeyError:
            raise DeploymentError(
                f"{self.name} has no output {key.value} (a stack deployed by an older version? redeploy it)"
            ) from None

    def model_locations(self) -> dict[str, ModelLocation]:
        try:
            data = json.loads(self.output(StackOutput.MODEL_LOCATIONS))
            return {
                runtime: ModelLocation.parse(entry["location"], entry.get("checkpoint"))
                for runtime, entry in data.items()
            }
        except (ValueError, TypeError, KeyError, AttributeError):
            raise DeploymentError(f"{self.name}: output {StackOutput.MODEL_LOCATIONS.value} is not readable") from None

    def model_location(self, runtime: str) -> ModelLocation:
        locations = self.model_locations()
        if runtime not in locations:
            known = ", ".join(sorted(locations)) or "none"
            raise DeploymentError(f"{self.name} has no runtime {runtime!r}; its runtimes: {known}")
        return locations[runtime]


def from_stack(stack: str, region: str | None = None) -> Deployment:
    """Read a deployed stack's outputs (and the API key's value when the stack has one)."""
    session = boto3.session.Session(region_name=region)
    try:
        found = session.client("cloudformation").describe_stacks(StackName=stack)["Stacks"]
    except ClientError as exc:
        raise DeploymentError(f"stack {stack!r}: {exc.response['Error'].get('Message', exc)}") from None
    except BotoCoreError as exc:
        raise DeploymentError(f"cannot read stack {stack!r}: {exc}") from None
    outputs = {o["OutputKey"]: o["OutputValue"] for o in found[0].get("Outputs", [])}
    api_key = None
    if StackOutput.API_KEY_ID.value in outputs:
        try:
            api_key = session.client("apigateway").get_api_key(
                apiKey=outputs[StackOutput.API_KEY_ID.value], includeValue=True
            )["value"]
        except (ClientError, BotoCoreError, KeyError):
            api_key = None  # commands that need it say so
    return Deployment(stack, session.region_name, None, outputs, api_key)


def from_local(root: Path | None = None) -> Deployment:
    """The local stack started by ``sdeks local up`` in ``root`` (default: the current directory)."""
    state = read_state(state_path(root))
    if state is None:
        raise DeploymentError("no local stack found (.sdeks/local.json); run `sdeks local up`")
    outputs = {
        StackOutput.API_URL.value: state.api_url,
        StackOutput.OUTPUT_BUCKET.value: state.output_bucket,
        StackOutput.RESULTS_TOPIC_ARN.value: state.results_topic_arn,
        StackOutput.TASK_TABLE_NAME.value: state.task_table,
    }
    return Deployment("the local stack", state.region, state.aws_endpoint_url, outputs, state.api_key)
