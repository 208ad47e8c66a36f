"""cdk-nag AwsSolutions at app level, and every accepted finding with its reason.

cdk-nag 3 runs as a CDK policy-validation plugin (``Validations.of(app).add_plugins``);
findings are acknowledged with ``Validations.of(construct).acknowledge`` on the
narrowest construct, one acknowledgment per finding id
(``AwsSolutions-IAM5[Resource::<Logical.Arn>/_claims/*]``), never a rule in bulk.
With ``write_suppressions_to_cloud_formation`` each acknowledgment and its reason
also lands in the resource's template Metadata (audit trail).
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import aws_cdk as cdk
from aws_cdk import aws_iam as iam
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
    _storage(stack)
    _api(stack)
    _webhooks(stack)
    if stack.cluster is not None:
        _cluster(stack)
        _observability(stack)


def _storage(stack: SdeksStack) -> None:
    acknowledge(
        stack.storage.access_logs,
        "S1",
        "This is the log bucket (S3 server access logs, VPC flow logs); logging it into itself would loop.",
    )


def _api(stack: SdeksStack) -> None:
    api = stack.api
    policy = api.role.node.find_child("DefaultPolicy")
    acknowledge_wildcards(
        policy,
        policy.document,
        {
            "ClaimChecks": "PutObject is limited to the claim-check prefix (_claims/); keys are task ids, unknown"
            " in advance.",
            "PresignOutputs": "GetObject on the output bucket's objects only, to presign result URLs under any task"
            " prefix.",
            "": "X-Ray PutTraceSegments/PutTelemetryRecords support no resource-level permissions (tracing=ACTIVE).",
        },
    )
    acknowledge(
        api.function,
        "L1",
        "Pinned to python3.12: the bundled pydantic-core wheel is built for cp312 (infra/bundle.py).",
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


def _webhooks(stack: SdeksStack) -> None:
    hooks = stack.webhooks
    acknowledge(
        hooks.function,
        "L1",
        "Pinned to python3.12: the bundled pydantic-core wheel is built for cp312 (infra/bundle.py).",
    )
    acknowledge(
        hooks.secret,
        "SMG4",
        "The webhook signing secret is shared with every receiver, which verifies with it; an automatic rotation"
        " would break their verification unannounced. Rotate by hand with receivers (docs/api.md, Webhooks).",
    )


def flatten(value) -> str:
    """cdk-nag's rendering of a resolved CloudFormation value (utils/flatten-cfn-reference)."""
    if isinstance(value, str):
        return value.replace("${", "<").replace("}", ">")
    if isinstance(value, dict):
        if "Fn::Join" in value:
            delimiter, items = value["Fn::Join"]
            return delimiter.join(flatten(i) for i in items)
        if "Fn::Sub" in value:
            return flatten(value["Fn::Sub"])
        if "Fn::GetAtt" in value:
            resource, attribute = value["Fn::GetAtt"]
            return f"<{flatten(resource)}.{flatten(attribute)}>"
        if "Ref" in value:
            return f"<{flatten(value['Ref'])}>"
    return json.dumps(value, separators=(",", ":"))


def wildcard_findings(document: iam.PolicyDocument, scope: IConstruct) -> dict[str, list[str]]:
    """IAM5 finding ids (``Resource::...`` / ``Action::...``) of a policy document, by statement Sid."""
    resolved = cdk.Stack.of(scope).resolve(document)
    out: dict[str, list[str]] = {}
    for statement in resolved.get("Statement", []):
        if statement.get("Effect") != "Allow":
            continue
        found = out.setdefault(statement.get("Sid", ""), [])
        for action in _as_list(statement.get("Action")):
            if "*" in action:
                found.append(f"Action::{action}")
        for resource in _as_list(statement.get("Resource")):
            flat = flatten(resource)
            if "*" in flat:
                found.append(f"Resource::{flat}")
    return out


def acknowledge_wildcards(scope: IConstruct, document, reasons: dict[str, str]) -> None:
    """Acknowledge each wildcard finding of ``document`` with the reason given for its statement.

    ``reasons`` maps a statement Sid (or a Sid prefix; ``""`` for statements without one) to
    the reason. A wildcard in a statement without a reason stays a finding (and fails the nag test).
    """
    for sid, findings in wildcard_findings(document, scope).items():
        keys = [k for k in reasons if sid.startswith(k) and (k or not sid)]
        if keys:
            reason = reasons[max(keys, key=len)]
            for finding in findings:
                acknowledge(scope, f"IAM5[{finding}]", reason)


def acknowledge_managed_policies(role: IConstruct, reason: str, allowed: tuple[str, ...] | None = None) -> None:
    """IAM4 acknowledgment for each AWS managed policy attached to ``role`` (restricted to ``allowed`` names)."""
    cfn = role.node.default_child if not isinstance(role, iam.CfnRole) else role
    stack = cdk.Stack.of(role)
    for arn in _as_list(stack.resolve(cfn.managed_policy_arns)):
        flat = flatten(arn)
        if allowed is None or flat.rsplit("/", 1)[-1] in allowed:
            acknowledge(role, f"IAM4[Policy::{flat}]", reason)


def _as_list(value) -> list:
    if value is None:
        return []
    return value if isinstance(value, list) else [value]


KARPENTER_REASONS = {
    "AllowScopedEC2InstanceAccessActions": "Karpenter launches from any AMI/snapshot/subnet/security group its"
    " EC2NodeClass selects (resolved at run time); upstream Karpenter v1 controller policy.",
    "AllowScopedEC2LaunchTemplateAccessActions": "Launch templates Karpenter created: conditioned on"
    " kubernetes.io/cluster/<name>=owned and a karpenter.sh/nodepool tag (upstream policy).",
    "AllowScopedEC2InstanceActionsWithTags": "Instances/fleets/volumes Karpenter creates have ids unknown in"
    " advance; the request must carry this cluster's ownership and nodepool tags (upstream policy).",
    "AllowScopedResourceCreationTagging": "Tagging only at creation by RunInstances/CreateFleet/CreateLaunchTemplate"
    " with this cluster's ownership tags (upstream policy).",
    "AllowScopedResourceTagging": "Tags only instances owned by this cluster, only the nodeclaim/Name keys"
    " (upstream policy).",
    "AllowScopedDeletion": "Terminates only instances/launch templates tagged as owned by this cluster and a"
    " nodepool (upstream policy).",
    "AllowRegionalReadActions": "EC2 Describe* actions support no resource-level permissions; limited to this"
    " region by aws:RequestedRegion.",
    "AllowSSMReadActions": "Reads the public AMI parameters under /aws/service/* (Bottlerocket alias resolution).",
    "AllowPricingReadActions": "pricing:GetProducts supports no resource-level permissions.",
    "AllowScopedInstanceProfile": "Instance profiles Karpenter manages have generated names; conditioned on this"
    " cluster's ownership, region and ec2nodeclass tags (upstream policy).",
    "AllowInstanceProfileReadActions": "Read-only lookup of the instance profiles Karpenter generated.",
}

RUNTIME_REASONS = {
    "WriteOutputs": "Outputs are written under task-chosen prefixes (<prefix>/<id>/...) of the output bucket only;"
    " GetObject reads claim-checked task bodies.",
    "ReadModels": "Read-only access to the runtime's model prefix; checkpoint names are chosen per task.",
    "ReadAllowedInputs": "Read-only access to the input buckets the config allows (init images by s3:// URL).",
}


def _cluster(stack: SdeksStack) -> None:
    from infra.cluster import NODE_MANAGED_POLICIES  # the cluster module loads only when the stack has one

    c = stack.cluster
    eks_cluster = c.cluster
    kubectl = eks_cluster.node.find_child("KubectlProvider")
    internal = (
        "CDK-internal kubectl provider (aws_eks_v2 KubectlProvider) that applies the helm charts; its roles,"
        " managed policies and asset-bucket read permissions are defined by aws-cdk-lib, not configurable."
    )
    acknowledge(
        kubectl.node.find_child("Handler"),
        "L1",
        "The kubectl handler's runtime is chosen by aws-cdk-lib (aws_eks_v2 KubectlProvider), not configurable.",
    )
    for child in kubectl.node.find_all():
        if isinstance(child, iam.CfnRole):
            acknowledge_managed_policies(child.node.scope, internal)
        elif isinstance(child, iam.CfnPolicy):
            acknowledge_wildcards(child.node.scope, child.policy_document, {"": internal})
    acknowledge_managed_policies(
        eks_cluster.role,
        "AmazonEKSClusterPolicy is the documented policy of the EKS cluster service role.",
        ("AmazonEKSClusterPolicy",),
    )
    acknowledge_managed_policies(
        c.system_nodes.role,
        "The EKS-documented managed policies of a node role (kubelet, VPC CNI, image pulls).",
        NODE_MANAGED_POLICIES,
    )
    acknowledge_managed_policies(
        c.node_role,
        "The EKS-documented managed policies of a Karpenter node role (kubelet, VPC CNI, image pulls, SSM for"
        " Bottlerocket's control container).",
        NODE_MANAGED_POLICIES,
    )
    acknowledge_wildcards(c.karpenter_policy, c.karpenter_policy.document, KARPENTER_REASONS)
    acknowledge(
        c.interruption_queue,
        "SQS3",
        "Karpenter's interruption queue holds EventBridge notices useful for minutes (retention 5 min); a DLQ would"
        " only keep stale events.",
    )
    for role in [c.s3_csi_role, *c.runtime_roles.values()]:
        policy = role.node.find_child("DefaultPolicy")
        acknowledge_wildcards(policy, policy.document, RUNTIME_REASONS)


OBSERVABILITY_REASONS = {
    "NodeMetadata": "ec2:DescribeInstances/DescribeTags/DescribeVolumes support no resource-level permissions; the"
    " add-on's CloudWatch agent reads node metadata (instance type, EBS volumes) for Container Insights.",
}


def _observability(stack: SdeksStack) -> None:
    policy = stack.observability.agent_role.node.find_child("DefaultPolicy")
    acknowledge_wildcards(policy, policy.document, OBSERVABILITY_REASONS)
