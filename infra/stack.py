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
        cdk.CfnOutput(self, "OutputBucket", value=self.storage.output_bucket.bucket_name)
        cdk.CfnOutput(self, "ResultsTopicArn", value=self.messaging.results_topic.topic_arn)
        cdk.CfnOutput(self, "TaskTableName", value=self.tasks.table.table_name)


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
