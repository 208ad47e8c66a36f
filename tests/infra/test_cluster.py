"""EKS cluster, Karpenter, KEDA, Mountpoint for S3, one sd-on-eks release per runtime, and their IAM."""

from __future__ import annotations

import json

import pytest

from infra.cluster import KARPENTER_VERSION, KEDA_VERSION
from sdeks.config import resource_layout
from tests.infra.helpers import DATA_SERVICES, actions_on, as_list, logical_id, policy_statements

pytestmark = pytest.mark.slow

HELM = "Custom::AWSCDK-EKS-HelmChart"


def _releases(synth) -> dict[str, dict]:
    return {r["Properties"]["Release"]: r["Properties"] for r in synth.resources(HELM).values()}


def _render(value) -> str:
    if isinstance(value, str):
        return value
    if "Fn::Join" in value:
        delimiter, items = value["Fn::Join"]
        return delimiter.join(_render(i) for i in items)
    if "Ref" in value:
        return f"<{value['Ref']}>"
    if "Fn::GetAtt" in value:
        return "<{}.{}>".format(*value["Fn::GetAtt"])
    if "Fn::Sub" in value and isinstance(value["Fn::Sub"], str):
        return value["Fn::Sub"]  # ${AWS::AccountId}-style pseudo parameters stay as written
    raise AssertionError(f"unexpected intrinsic in helm values: {value}")


def _values(release: dict) -> dict:
    """Chart values with references rendered as ``<LogicalId>`` / ``<LogicalId.Attr>``."""
    return json.loads(_render(release["Values"]))


def _role_statements(synth, role_id: str) -> list[dict]:
    out = []
    for res in synth.raw["Resources"].values():
        if res["Type"] == "AWS::IAM::Policy" and {"Ref": role_id} in res["Properties"].get("Roles", []):
            out += res["Properties"]["PolicyDocument"]["Statement"]
    return out


def _association_roles(synth) -> dict[tuple[str, str], str]:
    return {
        (a["Properties"]["Namespace"], a["Properties"]["ServiceAccount"]): a["Properties"]["RoleArn"]["Fn::GetAtt"][0]
        for a in synth.resources("AWS::EKS::PodIdentityAssociation").values()
    }


def test_cluster_version_system_nodes_and_addons(synth_default):
    config = synth_default.config
    cluster = next(iter(synth_default.resources("AWS::EKS::Cluster").values()))["Properties"]
    assert cluster["Version"] == config.cluster.kubernetes_version
    assert cluster["Name"] == config.project
    logging = cluster["Logging"]["ClusterLogging"]["EnabledTypes"]
    assert {t["Type"] for t in logging} == {"api", "audit", "authenticator", "controllerManager", "scheduler"}
    groups = list(synth_default.resources("AWS::EKS::Nodegroup").values())
    assert len(groups) == 1
    group = groups[0]["Properties"]
    assert group["CapacityType"] == "ON_DEMAND"
    assert group["InstanceTypes"] == [config.cluster.system_instance_type]
    assert group["ScalingConfig"]["DesiredSize"] == config.cluster.system_nodes
    addons = {a["Properties"]["AddonName"] for a in synth_default.resources("AWS::EKS::Addon").values()}
    assert addons == {
        "eks-pod-identity-agent",
        "aws-mountpoint-s3-csi-driver",
        "amazon-cloudwatch-observability",
        "vpc-cni",
    }


def test_kubectl_provider_uses_the_layer_of_the_cluster_version(synth_default):
    layers = synth_default.resources("AWS::Lambda::LayerVersion")
    version = synth_default.config.cluster.kubernetes_version
    assert any(f"kubectl {version}" in json.dumps(v["Properties"]).lower() for v in layers.values())


def test_karpenter_release_queue_and_rules(synth_default):
    raw = synth_default.raw
    karpenter = _releases(synth_default)["karpenter"]
    assert karpenter["Repository"] == "oci://public.ecr.aws/karpenter/karpenter"
    assert karpenter["Version"] == KARPENTER_VERSION == "1.14.1"
    assert karpenter["Namespace"] == "kube-system"
    queue_id = logical_id(raw, "AWS::SQS::Queue", QueueName="sdeks-karpenter")
    settings = _values(karpenter)["settings"]
    assert settings["interruptionQueue"] == f"<{queue_id}.QueueName>"
    assert settings["clusterName"].startswith("<ClusterEks")
    rules = list(synth_default.resources("AWS::Events::Rule").values())
    detail_types = {d for r in rules for d in r["Properties"]["EventPattern"]["detail-type"]}
    assert detail_types == {
        "AWS Health Event",
        "EC2 Spot Instance Interruption Warning",
        "EC2 Instance Rebalance Recommendation",
        "EC2 Instance State-change Notification",
    }
    for r in rules:
        assert r["Properties"]["Targets"][0]["Arn"] == {"Fn::GetAtt": [queue_id, "Arn"]}
    roles = _association_roles(synth_default)
    assert ("kube-system", "karpenter") in roles
    allowed = actions_on(_role_statements(synth_default, roles[("kube-system", "karpenter")]))
    assert allowed["sqs:ReceiveMessage"] == [{"Fn::GetAtt": [queue_id, "Arn"]}]
    assert "ec2:RunInstances" in allowed and "iam:PassRole" in allowed


def test_node_role_access_entry_and_discovery_tags(synth_default):
    raw = synth_default.raw
    entries = [e["Properties"] for e in synth_default.resources("AWS::EKS::AccessEntry").values()]
    node = next(e for e in entries if e.get("Type") == "EC2_LINUX")
    node_role = node["PrincipalArn"]["Fn::GetAtt"][0]
    assert raw["Resources"][node_role]["Properties"]["AssumeRolePolicyDocument"]["Statement"][0]["Principal"] == {
        "Service": "ec2.amazonaws.com"
    }
    name = synth_default.config.project

    def tagged(props: dict) -> bool:
        return {"Key": "karpenter.sh/discovery", "Value": name} in props.get("Tags", [])

    subnets = synth_default.resources("AWS::EC2::Subnet").values()
    private = [s for s in subnets if not s["Properties"].get("MapPublicIpOnLaunch")]
    assert private and all(tagged(s["Properties"]) for s in private)
    groups = [g for g in synth_default.resources("AWS::EC2::SecurityGroup").values() if tagged(g["Properties"])]
    assert len(groups) == 1


def test_keda_release_and_role(synth_any):
    layout = resource_layout(synth_any.config)
    keda = _releases(synth_any)["keda"]
    assert keda["Repository"] == "https://kedacore.github.io/charts"
    assert keda["Version"] == KEDA_VERSION and KEDA_VERSION.startswith("2.20.")
    roles = _association_roles(synth_any)
    statements = _role_statements(synth_any, roles[("keda", "keda-operator")])
    allowed = actions_on(statements)
    assert set(allowed) == {"sqs:GetQueueAttributes"}
    queues = {logical_id(synth_any.raw, "AWS::SQS::Queue", QueueName=rq.queue_name) for rq in layout.runtimes}
    assert {r["Fn::GetAtt"][0] for r in allowed["sqs:GetQueueAttributes"]} == queues


def test_one_sd_on_eks_release_per_runtime_with_values(synth_any):
    raw = synth_any.raw
    config = synth_any.config
    layout = resource_layout(config)
    releases = _releases(synth_any)
    assert set(releases) == {"karpenter", "keda"} | {f"{config.project}-{r.name}" for r in config.runtimes}
    topic = logical_id(raw, "AWS::SNS::Topic", TopicName=layout.results_topic_name)
    table = logical_id(raw, "AWS::DynamoDB::Table", TableName=layout.task_table_name)
    output = next(k for k in synth_any.resources("AWS::S3::Bucket") if k.startswith("StorageOutput"))
    for rq in layout.runtimes:
        release = releases[f"{config.project}-{rq.runtime.name}"]
        assert "ChartAssetURL" in release
        assert release["Namespace"] == config.project
        values = _values(release)
        queue = logical_id(raw, "AWS::SQS::Queue", QueueName=rq.queue_name)
        assert values["agent"]["queueUrl"] == f"<{queue}>"
        assert values["agent"]["outputBucket"] == f"<{output}>"
        assert values["agent"]["resultsTopicArn"] == f"<{topic}>"
        assert values["agent"]["taskTable"] == f"<{table}>"
        assert values["runtime"]["name"] == rq.runtime.name
        assert values["scaling"]["maxReplicas"] == rq.runtime.scaling.max_replicas
        assert values["nodePool"]["instanceFamilies"] == rq.runtime.gpu.instance_families
        assert values["nodePool"]["capacityTypes"] == rq.runtime.gpu.capacity_types
        assert values["nodePool"]["amiAlias"] == config.cluster.bottlerocket_alias
        assert values["serviceAccount"]["name"] == f"{config.project}-{rq.runtime.name}"


def test_runtime_roles_are_scoped_to_their_queue(synth_two_runtimes):
    synth = synth_two_runtimes
    raw = synth.raw
    config = synth.config
    layout = resource_layout(config)
    roles = _association_roles(synth)
    topic = logical_id(raw, "AWS::SNS::Topic", TopicName=layout.results_topic_name)
    table = logical_id(raw, "AWS::DynamoDB::Table", TableName=layout.task_table_name)
    for rq in layout.runtimes:
        allowed = actions_on(_role_statements(synth, roles[(config.project, f"{config.project}-{rq.runtime.name}")]))
        queue = logical_id(raw, "AWS::SQS::Queue", QueueName=rq.queue_name)
        for action in ("sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:ChangeMessageVisibility"):
            assert allowed[action] == [{"Fn::GetAtt": [queue, "Arn"]}]
        assert "sqs:SendMessage" not in allowed
        assert allowed["sns:Publish"] == [{"Ref": topic}]
        assert allowed["dynamodb:UpdateItem"] == [{"Fn::GetAtt": [table, "Arn"]}]
        # the agent reads the status row to see a client's cancel (before and while a task runs)
        assert allowed["dynamodb:GetItem"] == [{"Fn::GetAtt": [table, "Arn"]}]
        assert any(f"/{rq.runtime.model.prefix}/*" in json.dumps(r) for r in allowed["s3:GetObject"])


def test_no_wildcard_data_actions_and_no_star_resources_for_data(synth_any):
    problems = []
    for lid, statement in policy_statements(synth_any.raw):
        if statement.get("Effect") != "Allow":
            continue
        actions = as_list(statement["Action"])
        resources = as_list(statement.get("Resource", []))
        cdk_internal = "KubectlProvider" in lid
        for action in actions:
            service = action.split(":")[0]
            if action == "*" or (service in DATA_SERVICES and "*" in action and not cdk_internal):
                problems.append(f"{lid}: wildcard action {action}")
            if service in DATA_SERVICES and "*" in resources:
                problems.append(f"{lid}: {action} on Resource '*'")
    assert not problems, "\n".join(problems)


def _association_ids(synth) -> dict[tuple[str, str], str]:
    return {
        (a["Properties"]["Namespace"], a["Properties"]["ServiceAccount"]): lid
        for lid, a in synth.resources("AWS::EKS::PodIdentityAssociation").items()
    }


def test_every_release_waits_for_the_identities_its_pods_use(synth_any):
    """A pod started before its Pod Identity association runs with the node role (issue 14, point 4)."""
    config = synth_any.config
    layout = resource_layout(config)
    ids = _association_ids(synth_any)
    keda, csi = ids[("keda", "keda-operator")], ids[("kube-system", "s3-csi-driver-sa")]
    needs = {
        "karpenter": {ids[("kube-system", "karpenter")]},
        "keda": {keda},
        **{r.release_name: {ids[(layout.namespace, r.service_account)], keda, csi} for r in layout.releases},
    }
    releases = {r["Properties"]["Release"]: r for r in synth_any.resources(HELM).values()}
    assert set(releases) == set(needs)
    for name, associations in needs.items():
        depends = set(as_list(releases[name].get("DependsOn", [])))
        assert associations <= depends, f"{name} does not wait for {associations - depends}"
    addon = next(
        a for a in synth_any.resources("AWS::EKS::Addon").values() if "mountpoint" in a["Properties"]["AddonName"]
    )
    assert csi in as_list(addon.get("DependsOn", []))


def test_releases_are_spot_safe(synth_any):
    """Issue 14.5 in the template: grace inside the spot notice, one GPU size per pod, no mid-task consolidation."""
    import yaml

    from sdeks.config.helm_values import CHART_DIR

    chart_defaults = yaml.safe_load((CHART_DIR / "values.yaml").read_text())
    margin = chart_defaults["agent"]["terminationMarginSeconds"]
    assert chart_defaults["nodePool"]["consolidationPolicy"] == "WhenEmpty"
    releases = _releases(synth_any)
    for release in resource_layout(synth_any.config).releases:
        values = _values(releases[release.release_name])
        assert values["agent"]["shutdownGraceSeconds"] == release.runtime.shutdown_grace_s
        assert values["agent"]["shutdownGraceSeconds"] + margin < 120
        assert values["runtime"]["gpus"] == release.runtime.gpu.per_pod == 1
        assert "consolidationPolicy" not in values["nodePool"]  # the chart's WhenEmpty applies
