"""Dashboard, alarms, alarm topic, pod logs and the CloudWatch observability add-on, from the synthesized template."""

from __future__ import annotations

import json

import pytest

from infra.observability import ADDON_NAME, ADDON_NAMESPACE, ADDON_SERVICE_ACCOUNT
from queue_agent import emf
from sdeks.config import resource_layout
from tests.fixtures.infra import synth_config
from tests.infra.helpers import actions_on, as_list, is_tls_only, logical_id, statements_of

pytestmark = pytest.mark.slow

OPS_CONFIG = """
project: opsdemo
observability:
  log_retention_days: 7
  alarm_email: oncall@example.com
  oldest_message_alarm_s: 120
  addon_version: v4.4.0-eksbuild.1
runtimes:
  - name: fast
  - name: slow
    gpu: {instance_families: [p4d]}
"""


@pytest.fixture(scope="module")
def synth_ops(tmp_path_factory):
    path = tmp_path_factory.mktemp("cfg") / "ops.yaml"
    path.write_text(OPS_CONFIG)
    return synth_config(path, tmp_path_factory.mktemp("cdk-ops"))


@pytest.fixture(scope="module")
def synth_no_cluster(tmp_path_factory):
    path = tmp_path_factory.mktemp("cfg") / "ops.yaml"
    path.write_text(OPS_CONFIG)
    return synth_config(path, tmp_path_factory.mktemp("cdk-nocluster"), context={"cluster": "false"})


def named_log_groups(synth) -> dict[str, tuple[str, dict]]:
    """Log group name → (logical id, properties), for the groups that have a fixed name."""
    return {
        g["Properties"]["LogGroupName"]: (k, g["Properties"])
        for k, g in synth.resources("AWS::Logs::LogGroup").items()
        if "LogGroupName" in g["Properties"]
    }


def alarms(synth) -> dict[str, dict]:
    return {a["Properties"]["AlarmName"]: a["Properties"] for a in synth.resources("AWS::CloudWatch::Alarm").values()}


def topic_id(synth) -> str:
    return logical_id(synth.raw, "AWS::SNS::Topic", TopicName=f"{synth.config.project}-alarms")


def dashboard(synth) -> dict:
    """The dashboard body with CloudFormation references rendered as ``<LogicalId>``."""
    (resource,) = synth.resources("AWS::CloudWatch::Dashboard").values()
    body = resource["Properties"]["DashboardBody"]
    parts = body["Fn::Join"][1] if isinstance(body, dict) else [body]
    text = "".join(p if isinstance(p, str) else f"<{p.get('Ref') or p['Fn::GetAtt'][0]}>" for p in parts)
    return json.loads(text)


def metric_lines(widget: dict) -> list[list]:
    return widget["properties"].get("metrics", [])


def widget(body: dict, title: str) -> dict:
    found = [w for w in body["widgets"] if w.get("properties", {}).get("title") == title]
    assert len(found) == 1, [w.get("properties", {}).get("title") for w in body["widgets"]]
    return found[0]


# --- alarm topic ------------------------------------------------------------------------------------


def test_alarm_topic_is_kms_encrypted_tls_only_and_cloudwatch_may_use_its_key(synth_any):
    raw = synth_any.raw
    topic = raw["Resources"][topic_id(synth_any)]["Properties"]
    key_id = topic["KmsMasterKeyId"]["Fn::GetAtt"][0]
    key = raw["Resources"][key_id]["Properties"]
    assert key["EnableKeyRotation"] is True
    cloudwatch = [
        s for s in key["KeyPolicy"]["Statement"] if s.get("Principal") == {"Service": "cloudwatch.amazonaws.com"}
    ]
    assert cloudwatch and set(as_list(cloudwatch[0]["Action"])) == {"kms:Decrypt", "kms:GenerateDataKey*"}
    policies = [
        p["Properties"]["PolicyDocument"]["Statement"]
        for p in synth_any.resources("AWS::SNS::TopicPolicy").values()
        if {"Ref": topic_id(synth_any)} in p["Properties"]["Topics"]
    ]
    assert policies and is_tls_only(policies[0])


def test_e_mail_subscription_only_when_configured(synth_default, synth_ops):
    def email_subscriptions(synth):
        return [
            s["Properties"]
            for s in synth.resources("AWS::SNS::Subscription").values()
            if s["Properties"]["Protocol"] == "email"
        ]

    assert email_subscriptions(synth_default) == []
    (subscription,) = email_subscriptions(synth_ops)
    assert subscription["Endpoint"] == "oncall@example.com"
    assert subscription["TopicArn"] == {"Ref": topic_id(synth_ops)}


# --- alarms -----------------------------------------------------------------------------------------


def test_every_alarm_notifies_the_alarm_topic_on_alarm_and_on_ok(synth_any):
    topic = {"Ref": topic_id(synth_any)}
    project = synth_any.config.project
    names = set(alarms(synth_any))
    expected = {f"{project}-api-5xx", f"{project}-api-lambda-errors"}
    for rq in resource_layout(synth_any.config).runtimes:
        expected |= {f"{project}-{rq.runtime.name}-dlq-not-empty", f"{project}-{rq.runtime.name}-oldest-message"}
    assert names == expected
    for alarm in alarms(synth_any).values():
        assert alarm["AlarmActions"] == [topic] and alarm["OKActions"] == [topic]
        assert alarm["TreatMissingData"] == "notBreaching"
        assert len(alarm["AlarmDescription"]) > 40, "each alarm says what it means"


def test_queue_alarms_watch_each_runtimes_dlq_and_oldest_message(synth_ops):
    raw, found = synth_ops.raw, alarms(synth_ops)
    for rq in resource_layout(synth_ops.config).runtimes:
        dlq = logical_id(raw, "AWS::SQS::Queue", QueueName=rq.dlq_name)
        queue = logical_id(raw, "AWS::SQS::Queue", QueueName=rq.queue_name)
        not_empty = found[f"opsdemo-{rq.runtime.name}-dlq-not-empty"]
        assert not_empty["MetricName"] == "ApproximateNumberOfMessagesVisible"
        assert not_empty["Dimensions"] == [{"Name": "QueueName", "Value": {"Fn::GetAtt": [dlq, "QueueName"]}}]
        assert (not_empty["Threshold"], not_empty["ComparisonOperator"]) == (1, "GreaterThanOrEqualToThreshold")
        oldest = found[f"opsdemo-{rq.runtime.name}-oldest-message"]
        assert oldest["MetricName"] == "ApproximateAgeOfOldestMessage"
        assert oldest["Dimensions"] == [{"Name": "QueueName", "Value": {"Fn::GetAtt": [queue, "QueueName"]}}]
        assert (oldest["Threshold"], oldest["ComparisonOperator"]) == (120, "GreaterThanThreshold")
    assert found["opsdemo-api-5xx"]["MetricName"] == "5XXError"
    assert found["opsdemo-api-5xx"]["Namespace"] == "AWS/ApiGateway"
    errors = found["opsdemo-api-lambda-errors"]
    assert (errors["Namespace"], errors["MetricName"], errors["Statistic"]) == ("AWS/Lambda", "Errors", "Sum")


def test_oldest_message_threshold_defaults_from_config(synth_default):
    assert alarms(synth_default)["sdeks-sdruntime-oldest-message"]["Threshold"] == 900


# --- logs and the add-on ----------------------------------------------------------------------------


def test_pod_logs_and_task_metrics_land_in_per_deployment_log_groups_with_retention(synth_default, synth_ops):
    for synth, days in ((synth_default, 30), (synth_ops, 7)):
        project = synth.config.project
        groups = {name: props for name, (_, props) in named_log_groups(synth).items()}
        wanted = {f"/aws/containerinsights/{project}/{k}" for k in ("application", "dataplane", "host", "performance")}
        wanted.add(emf.metrics_log_group(project))
        assert wanted <= set(groups)
        for name in wanted:
            assert groups[name]["RetentionInDays"] == days, name


def test_observability_add_on_runs_container_insights_with_gpu_metrics_logs_and_the_emf_listener(synth_ops):
    addons = synth_ops.resources("AWS::EKS::Addon").values()
    (addon,) = [a for a in addons if a["Properties"]["AddonName"] == ADDON_NAME]
    props = addon["Properties"]
    assert props["AddonVersion"] == "v4.4.0-eksbuild.1"
    values = json.loads(props["ConfigurationValues"])
    collected = values["agent"]["config"]["logs"]["metrics_collected"]
    assert collected["kubernetes"] == {"enhanced_container_insights": True, "accelerated_compute_metrics": True}
    assert collected["emf"] == {}, "the queue agents' EMF records go to this listener"
    assert "application_signals" not in collected
    assert values["containerLogs"] == {"enabled": True}
    depends = set(addon["DependsOn"])
    groups = {lid for name, (lid, _) in named_log_groups(synth_ops).items() if "/opsdemo/" in name}
    assert groups <= depends, "log groups (with retention) exist before Fluent Bit could create them"


def test_add_on_service_account_has_a_pod_identity_role_limited_to_its_log_groups(synth_ops):
    raw = synth_ops.raw
    (association,) = [
        a["Properties"]
        for a in synth_ops.resources("AWS::EKS::PodIdentityAssociation").values()
        if a["Properties"]["Namespace"] == ADDON_NAMESPACE
    ]
    assert association["ServiceAccount"] == ADDON_SERVICE_ACCOUNT
    role_id = association["RoleArn"]["Fn::GetAtt"][0]
    trust = raw["Resources"][role_id]["Properties"]["AssumeRolePolicyDocument"]["Statement"]
    assert all(s["Principal"] == {"Service": "pods.eks.amazonaws.com"} for s in trust)
    granted = actions_on(statements_of(raw, role_id))
    groups = [
        {"Fn::GetAtt": [lid, "Arn"]}
        for name, (lid, _) in named_log_groups(synth_ops).items()
        if name.startswith("/aws/containerinsights/opsdemo/")
    ]
    assert len(groups) == 5
    for action in ("logs:CreateLogGroup", "logs:CreateLogStream", "logs:PutLogEvents", "logs:DescribeLogStreams"):
        assert sorted(map(json.dumps, granted[action])) == sorted(map(json.dumps, groups)), action
    assert set(granted) == {
        "logs:CreateLogGroup",
        "logs:CreateLogStream",
        "logs:PutLogEvents",
        "logs:DescribeLogStreams",
        "ec2:DescribeInstances",
        "ec2:DescribeTags",
        "ec2:DescribeVolumes",
    }
    assert not raw["Resources"][role_id]["Properties"].get("ManagedPolicyArns"), "no CloudWatchAgentServerPolicy"


# --- dashboard --------------------------------------------------------------------------------------


def test_one_dashboard_per_deployment_with_every_section(synth_ops):
    (resource,) = synth_ops.resources("AWS::CloudWatch::Dashboard").values()
    assert resource["Properties"]["DashboardName"] == "opsdemo-operations"
    body = dashboard(synth_ops)
    titles = {w["properties"].get("title") for w in body["widgets"]}
    assert {
        "API requests",
        "API 4xx / 5xx",
        "alarms",
        "queue depth (waiting, in flight)",
        "age of oldest message (s)",
        "DLQ depth",
        "task outcomes per minute",
        "queue wait p50 / p95 (s)",
        "run time p50 / p95 (s)",
        "end to end p50 / p95 (s)",
        "GPU utilisation % (DCGM, all GPU nodes)",
        "GPU instance vCPUs by capacity type (account-wide, AWS/Usage)",
    } <= titles
    assert len(widget(body, "alarms")["properties"]["alarms"]) == len(alarms(synth_ops))


def test_api_and_queue_widgets(synth_ops):
    body = dashboard(synth_ops)
    api = [line[:2] for line in metric_lines(widget(body, "API 4xx / 5xx"))]
    assert api == [["AWS/ApiGateway", "4XXError"], ["AWS/ApiGateway", "5XXError"]]
    depth = metric_lines(widget(body, "queue depth (waiting, in flight)"))
    queue_names = {
        f"<{logical_id(synth_ops.raw, 'AWS::SQS::Queue', QueueName=f'opsdemo-{rt}')}>" for rt in ("fast", "slow")
    }
    assert {(line[1], line[3]) for line in depth} == {
        (metric, queue)
        for queue in queue_names
        for metric in ("ApproximateNumberOfMessagesVisible", "ApproximateNumberOfMessagesNotVisible")
    }
    age = widget(body, "age of oldest message (s)")
    assert age["properties"]["annotations"]["horizontal"][0]["value"] == 120
    assert {line[1] for line in metric_lines(widget(body, "DLQ depth"))} == {"ApproximateNumberOfMessagesVisible"}
    assert len(metric_lines(widget(body, "DLQ depth"))) == 2


def test_task_widgets_use_the_agents_emf_names_and_dimensions(synth_ops):
    body = dashboard(synth_ops)
    outcomes = metric_lines(widget(body, "task outcomes per minute"))
    seen = set()
    for line in outcomes:
        namespace, name, *dims, options = line
        assert namespace == emf.NAMESPACE
        assert dict(zip(dims[::2], dims[1::2], strict=True)).keys() == set(emf.DIMENSIONS)
        assert dict(zip(dims[::2], dims[1::2], strict=True))[emf.DIMENSION_PROJECT] == "opsdemo"
        assert options["stat"] == "Sum" and options["period"] == 60
        seen.add((dict(zip(dims[::2], dims[1::2], strict=True))[emf.DIMENSION_RUNTIME], name))
    assert seen == {(rt, m) for rt in ("fast", "slow") for m in emf.OUTCOME_METRICS.values()}
    for title, metric in (("queue wait", emf.QUEUE_WAIT), ("run time", emf.RUN_TIME), ("end to end", emf.END_TO_END)):
        lines = metric_lines(widget(body, f"{title} p50 / p95 (s)"))
        assert {(line[1], line[-1]["stat"]) for line in lines} == {(metric, "p50"), (metric, "p95")}
        assert len(lines) == 4  # two runtimes × two percentiles


def test_gpu_widgets(synth_ops):
    body = dashboard(synth_ops)
    gpu = metric_lines(widget(body, "GPU utilisation % (DCGM, all GPU nodes)"))
    assert {(line[0], line[1], line[2], line[3]) for line in gpu} == {
        ("ContainerInsights", "node_gpu_utilization", "ClusterName", "opsdemo"),
        ("ContainerInsights", "node_gpu_memory_utilization", "ClusterName", "opsdemo"),
    }
    usage = metric_lines(widget(body, "GPU instance vCPUs by capacity type (account-wide, AWS/Usage)"))
    classes = {line[line.index("Class") + 1] for line in usage}
    assert classes == {"G/Spot", "G/OnDemand", "P/Spot", "P/OnDemand"}, "g* (default) and p4d families"


def test_without_a_cluster_alarms_and_dashboard_stay_and_the_cluster_parts_go(synth_no_cluster):
    assert synth_no_cluster.resources("AWS::EKS::Addon") == {}
    assert not [name for name in named_log_groups(synth_no_cluster) if "/containerinsights/" in name]
    assert len(alarms(synth_no_cluster)) == 6
    titles = {w["properties"].get("title") for w in dashboard(synth_no_cluster)["widgets"]}
    assert "task outcomes per minute" in titles and not any("GPU" in (t or "") for t in titles)
    assert synth_no_cluster.nag_violations() == [] and synth_no_cluster.synth_error is None


def test_ops_config_is_nag_and_lint_clean(synth_ops):
    from cfnlint.api import ManualArgs, lint_file

    assert synth_ops.nag_violations() == [] and synth_ops.synth_error is None
    matches = lint_file(synth_ops.template_path, ManualArgs(regions=["us-east-1"]))
    assert not [m for m in matches if m.rule.severity == "error"]
