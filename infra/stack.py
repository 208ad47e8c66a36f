"""The sdeks stack: storage, messaging, task table, API and (optionally) the EKS cluster."""

from __future__ import annotations

import json
import os
from pathlib import Path

import aws_cdk as cdk
from constructs import Construct

from infra.api import Api
from infra.messaging import Messaging
from infra.nag import apply_nag, suppress_findings
from infra.observability import Observability
from infra.storage import Storage
from infra.table import TaskTable
from infra.webhooks import Webhooks
from sdeks.config import Config, resource_layout
from sdeks.config.outputs import StackOutput, model_location

REPO_ROOT = Path(__file__).resolve().parents[1]


def cdk_json_context() -> dict:
    """The feature flags of cdk.json, for apps not started by the CDK CLI (``python app.py``, tests).

    Context given by the CLI (``CDK_CONTEXT_JSON``) still wins over these.
    """
    return dict(json.loads((REPO_ROOT / "cdk.json").read_text()).get("context", {}))


class SdeksStack(cdk.Stack):
    def __init__(self, scope: Construct, cid: str, *, config: Config, with_cluster: bool = True, **kwargs) -> None:
        super().__init__(scope, cid, **kwargs)
        self.config = config
        self.layout = resource_layout(config)
        self.storage = Storage(self, "Storage", config=config)
        self.messaging = Messaging(self, "Messaging", layout=self.layout)
        self.tasks = TaskTable(self, "TaskTable", layout=self.layout)
        self.api = Api(
            self,
            "Api",
            config=config,
            tasks_topic=self.messaging.tasks_topic,
            table=self.tasks.table,
            output_bucket=self.storage.output_bucket,
            runtime_queues={name: rq.queue for name, rq in self.messaging.runtime_queues.items()},
        )
        self.webhooks = Webhooks(
            self, "Webhooks", layout=self.layout, results_topic=self.messaging.results_topic, table=self.tasks.table
        )
        self.cluster = None
        if with_cluster:
            from infra.cluster import Cluster

            self.cluster = Cluster(
                self,
                "Cluster",
                config=config,
                layout=self.layout,
                storage=self.storage,
                messaging=self.messaging,
                table=self.tasks.table,
            )
        self.observability = Observability(
            self,
            "Observability",
            config=config,
            layout=self.layout,
            api=self.api,
            messaging=self.messaging,
            cluster=self.cluster,
        )
        for key, value in config.tags.items():
            cdk.Tags.of(self).add(key, value)
        cdk.Tags.of(self).add("sdeks:project", config.project)
        self._outputs(config)

    def _outputs(self, config: Config) -> None:
        """What a user (and ``sdeks models`` / ``sdeks smoke``) needs after deploy, under stable keys."""

        def output(key: StackOutput, value: str, description: str) -> None:
            cdk.CfnOutput(self, key.value, key=key.value, value=value, description=description)

        output(StackOutput.API_URL, self.api.rest_api.url, "REST API base URL (tasks: POST <ApiUrl>v1alpha2)")
        output(
            StackOutput.API_KEY_ID,
            self.api.api_key.key_id,
            "default API key; its value: aws apigateway get-api-key --include-value --api-key <id>",
        )
        output(StackOutput.OUTPUT_BUCKET, self.storage.output_bucket.bucket_name, "generated images and infos")
        output(StackOutput.RESULTS_TOPIC_ARN, self.messaging.results_topic.topic_arn, "completion events")
        output(StackOutput.TASK_TABLE_NAME, self.tasks.table.table_name, "task status rows")
        if self.storage.created_model_bucket is not None:
            output(
                StackOutput.MODEL_BUCKET,
                self.storage.created_model_bucket.bucket_name,
                "model bucket created by the stack (sdeks models push)",
            )
        locations = {
            runtime.name: {
                "location": model_location(
                    self.storage.model_bucket_for(config, runtime.name).bucket_name, runtime.model.prefix
                ),
                "checkpoint": runtime.model.checkpoint,
            }
            for runtime in config.runtimes
        }
        output(
            StackOutput.MODEL_LOCATIONS,
            self.to_json_string(locations),
            "where each runtime reads its models (mounted as /models) and the checkpoint it loads",
        )


def build_app(app: cdk.App, config: Config, *, with_cluster: bool | None = None) -> SdeksStack:
    """Add the stack (and cdk-nag) to ``app``. Context ``cluster=false`` leaves the EKS part out."""
    if with_cluster is None:
        with_cluster = str(app.node.try_get_context("cluster") or "true").lower() not in ("false", "0", "no")
    env = cdk.Environment(
        account=os.environ.get("CDK_DEFAULT_ACCOUNT"),
        region=config.region or os.environ.get("CDK_DEFAULT_REGION"),
    )
    stack = SdeksStack(
        app,
        config.project,
        config=config,
        with_cluster=with_cluster,
        env=env,
        description=f"sdeks ({config.project}): asynchronous Stable Diffusion inference on EKS",
    )
    suppress_findings(stack)
    apply_nag(app)
    return stack
