"""cdk-nag AwsSolutions at app level, and every accepted finding with its reason.

cdk-nag 3 runs as a CDK policy-validation plugin (``Validations.of(app).add_plugins``);
findings are acknowledged with ``Validations.of(construct).acknowledge`` on the
narrowest construct, one acknowledgment per finding id
(``AwsSolutions-IAM5[Resource::<Logical.Arn>/_claims/*]``), never a rule in bulk.
With ``write_suppressions_to_cloud_formation`` each acknowledgment and its reason
also lands in the resource's template Metadata (audit trail).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import aws_cdk as cdk
from cdk_nag import AwsSolutionsChecks
from constructs import IConstruct

if TYPE_CHECKING:
    from infra.stack import SdeksStack

PLUGIN = "AwsSolutions"


def apply_nag(app: cdk.App) -> None:
    cdk.Validations.of(app).add_plugins(
        AwsSolutionsChecks(app, verbose=True, write_suppressions_to_cloud_formation=True)
    )


def acknowledge(scope: IConstruct, rule: str, reason: str) -> None:
    cdk.Validations.of(scope).acknowledge(cdk.Acknowledgment(id=f"AwsSolutions-{rule}", reason=reason))


def arn_of(resource: IConstruct) -> str:
    """How cdk-nag spells ``Fn::GetAtt [X, Arn]`` in a finding id: ``<X.Arn>``."""
    cfn = resource.node.default_child if not isinstance(resource, cdk.CfnElement) else resource
    stack = cdk.Stack.of(resource)
    return f"<{stack.resolve(stack.get_logical_id(cfn))}.Arn>"


def suppress_findings(stack: SdeksStack) -> None:
    _api(stack)
    if stack.cluster is not None:
        from infra.cluster import suppress_cluster_findings

        suppress_cluster_findings(stack)


def _api(stack: SdeksStack) -> None:
    api = stack.api
    policy = api.role
    bucket = arn_of(stack.storage.output_bucket) if stack.storage.output_bucket_created else None
    if bucket:
        acknowledge(
            policy,
            f"IAM5[Resource::{bucket}/_claims/*]",
            "PutObject is limited to the claim-check prefix; object keys are task ids, unknown in advance.",
        )
        acknowledge(
            policy,
            f"IAM5[Resource::{bucket}/*]",
            "GetObject on the output bucket's objects only, to presign result URLs of any task prefix.",
        )
    acknowledge(
        policy,
        "IAM5[Resource::*]",
        "X-Ray PutTraceSegments/PutTelemetryRecords support no resource-level permissions (added by tracing=ACTIVE).",
    )
    acknowledge(
        api.function,
        "L1",
        "Pinned to python3.12: the bundled pydantic-core/PyYAML wheels are built for cp312 (infra/bundle.py).",
    )
    acknowledge(
        api.rest_api,
        "IAM4[Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/AmazonAPIGatewayPushToCloudWatchLogs]",
        "API Gateway's account-level CloudWatch role; AWS's managed policy is the documented one for it.",
    )
    for rule in ("APIG4", "COG4"):
        acknowledge(
            api.rest_api,
            rule,
            "Clients authenticate with an API key (x-api-key) and a usage plan, as the AWS Stable Diffusion on EKS"
            " clients do; no IAM/Cognito authorizer by design (docs/deploy.md).",
        )
    acknowledge(
        api.rest_api,
        "APIG3",
        "No WAF web ACL by default (cost): API key + usage-plan throttle/quota limit abuse; attach a web ACL to the"
        " stage per deployment if needed (docs/deploy.md).",
    )
