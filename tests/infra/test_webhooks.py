"""The webhook deliverer in the synthesized stack: queue + DLQ on the results topic, secret, Lambda, IAM."""

from __future__ import annotations

import json

import pytest

from infra.bundle import WEBHOOKS_HANDLER
from sdeks.config import resource_layout
from sdeks.webhook_retries import max_receives
from sdeks.webhook_secret import GENERATED_LENGTH
from tests.infra.helpers import actions_on, as_list, is_tls_only, logical_id, statements_of

pytestmark = pytest.mark.slow


def deliverer(synth) -> tuple[str, dict]:
    [(lid, fn)] = [
        (k, v["Properties"])
        for k, v in synth.resources("AWS::Lambda::Function").items()
        if v["Properties"].get("Handler") == WEBHOOKS_HANDLER
    ]
    return lid, fn


def test_queue_and_dlq_follow_the_layout(synth_default):
    raw = synth_default.raw
    hooks = resource_layout(synth_default.config).webhooks
    qid = logical_id(raw, "AWS::SQS::Queue", QueueName=hooks.queue_name)
    did = logical_id(raw, "AWS::SQS::Queue", QueueName=hooks.dlq_name)
    queue, dlq = raw["Resources"][qid]["Properties"], raw["Resources"][did]["Properties"]
    assert queue["RedrivePolicy"] == {"deadLetterTargetArn": {"Fn::GetAtt": [did, "Arn"]}, "maxReceiveCount": 10}
    assert max_receives() == 10
    assert queue["VisibilityTimeout"] == hooks.visibility_timeout_s
    assert dlq["MessageRetentionPeriod"] == hooks.dlq_retention_s == 14 * 24 * 3600
    assert queue["SqsManagedSseEnabled"] is True and dlq["SqsManagedSseEnabled"] is True
    policies = [
        p["Properties"]
        for p in synth_default.resources("AWS::SQS::QueuePolicy").values()
        if {"Ref": qid} in p["Properties"]["Queues"] or {"Ref": did} in p["Properties"]["Queues"]
    ]
    assert len(policies) == 2 and all(is_tls_only(p["PolicyDocument"]["Statement"]) for p in policies)


def test_queue_takes_every_results_event_raw_from_the_results_topic_only(synth_default):
    raw = synth_default.raw
    layout = resource_layout(synth_default.config)
    qid = logical_id(raw, "AWS::SQS::Queue", QueueName=layout.webhooks.queue_name)
    results = logical_id(raw, "AWS::SNS::Topic", TopicName=layout.results_topic_name)
    [sub] = [
        s["Properties"]
        for s in synth_default.resources("AWS::SNS::Subscription").values()
        if s["Properties"]["Endpoint"] == {"Fn::GetAtt": [qid, "Arn"]}
    ]
    assert sub["TopicArn"] == {"Ref": results} and sub["Protocol"] == "sqs"
    assert sub["RawMessageDelivery"] is True and "FilterPolicy" not in sub
    [policy] = [
        p["Properties"]
        for p in synth_default.resources("AWS::SQS::QueuePolicy").values()
        if p["Properties"]["Queues"] == [{"Ref": qid}]
    ]
    [allow] = [s for s in policy["PolicyDocument"]["Statement"] if s["Effect"] == "Allow"]
    assert as_list(allow["Action"]) == ["sqs:SendMessage"]
    assert allow["Condition"]["ArnEquals"]["aws:SourceArn"] == {"Ref": results}


def test_secret_is_generated_with_a_standard_webhooks_compatible_alphabet(synth_default):
    hooks = resource_layout(synth_default.config).webhooks
    sid = logical_id(synth_default.raw, "AWS::SecretsManager::Secret", Name=hooks.secret_name)
    generate = synth_default.raw["Resources"][sid]["Properties"]["GenerateSecretString"]
    assert generate == {"ExcludePunctuation": True, "IncludeSpace": False, "PasswordLength": GENERATED_LENGTH}
    assert GENERATED_LENGTH % 4 == 0  # letters and digits in groups of 4: valid base64 key bytes


def test_lambda_is_fed_by_the_queue_with_partial_batch_failures(synth_default):
    raw = synth_default.raw
    hooks = resource_layout(synth_default.config).webhooks
    lid, fn = deliverer(synth_default)
    assert fn["Runtime"] == "python3.12"
    assert fn["Timeout"] * 6 <= hooks.visibility_timeout_s
    [mapping] = [
        m["Properties"]
        for m in synth_default.resources("AWS::Lambda::EventSourceMapping").values()
        if m["Properties"]["FunctionName"] == {"Ref": lid}
    ]
    qid = logical_id(raw, "AWS::SQS::Queue", QueueName=hooks.queue_name)
    assert mapping["EventSourceArn"] == {"Fn::GetAtt": [qid, "Arn"]}
    assert mapping["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    assert mapping["BatchSize"] * 10 < fn["Timeout"]  # each try's 10 s receiver timeout fits
    assert mapping["ScalingConfig"]["MaximumConcurrency"] >= 2
    env = fn["Environment"]["Variables"]
    assert env["SDEKS_WEBHOOK_QUEUE_URL"] == {"Ref": qid}
    assert env["SDEKS_WEBHOOK_SECRET_ID"] == {
        "Ref": logical_id(raw, "AWS::SecretsManager::Secret", Name=hooks.secret_name)
    }
    table = logical_id(raw, "AWS::DynamoDB::Table", TableName=resource_layout(synth_default.config).task_table_name)
    assert env["SDEKS_TASK_TABLE"] == {"Ref": table}
    assert "SDEKS_WEBHOOK_ALLOW_LOOPBACK" not in env  # loopback receivers are for local mode only
    assert "VpcConfig" not in fn  # receivers are public; the deliverer needs no way into the VPC


def test_lambda_may_read_its_row_and_secret_and_work_its_queue_nothing_more(synth_default):
    raw = synth_default.raw
    layout = resource_layout(synth_default.config)
    _, fn = deliverer(synth_default)
    role = fn["Role"]["Fn::GetAtt"][0]
    allowed = actions_on(statements_of(raw, role))
    qid = logical_id(raw, "AWS::SQS::Queue", QueueName=layout.webhooks.queue_name)
    table = logical_id(raw, "AWS::DynamoDB::Table", TableName=layout.task_table_name)
    secret = logical_id(raw, "AWS::SecretsManager::Secret", Name=layout.webhooks.secret_name)
    logs = next(k for k in synth_default.resources("AWS::Logs::LogGroup") if k.startswith("WebhooksFunctionLogs"))
    assert allowed == {
        "logs:CreateLogStream": [{"Fn::GetAtt": [logs, "Arn"]}],
        "logs:PutLogEvents": [{"Fn::GetAtt": [logs, "Arn"]}],
        "dynamodb:GetItem": [{"Fn::GetAtt": [table, "Arn"]}],
        "secretsmanager:GetSecretValue": [{"Ref": secret}],
        "sqs:ChangeMessageVisibility": [{"Fn::GetAtt": [qid, "Arn"]}],
        "sqs:DeleteMessage": [{"Fn::GetAtt": [qid, "Arn"]}],
        "sqs:GetQueueAttributes": [{"Fn::GetAtt": [qid, "Arn"]}],
        "sqs:GetQueueUrl": [{"Fn::GetAtt": [qid, "Arn"]}],
        "sqs:ReceiveMessage": [{"Fn::GetAtt": [qid, "Arn"]}],
    }
    assert not raw["Resources"][role]["Properties"].get("ManagedPolicyArns")


def test_lambda_asset_holds_the_deliverer_sdeks_and_linux_wheels(synth_default):
    _, fn = deliverer(synth_default)
    manifest = json.loads((synth_default.outdir / f"{synth_default.stack.artifact_id}.assets.json").read_text())
    asset = synth_default.outdir / manifest["files"][fn["Code"]["S3Key"].removesuffix(".zip")]["source"]["path"]
    assert (asset / "webhooks" / "lambda_handler.py").is_file()
    assert (asset / "sdeks" / "netguard.py").is_file() and (asset / "sdeks" / "contract" / "webhook.py").is_file()
    for package in ("httpx", "httpcore", "h11", "pydantic", "pydantic_settings"):
        assert (asset / package).is_dir(), package
    assert not (asset / "yaml").exists() and not (asset / "sdeks" / "config").exists()  # lean: no config loader
    assert list((asset / "pydantic_core").glob("_pydantic_core.cpython-312-x86_64-linux-gnu.so"))
    assert not list(asset.rglob("__pycache__")) and not (asset / "tests").exists()


def test_secret_and_function_findings_are_acknowledged_with_reasons(synth_default):
    assert synth_default.nag_violations() == []
    hooks = synth_default.stack.webhooks
    for construct, rule in ((hooks.secret, "AwsSolutions-SMG4"), (hooks.function, "AwsSolutions-L1")):
        cfn = construct.node.default_child
        suppressed = synth_default.raw["Resources"][
            synth_default.stack.resolve(synth_default.stack.get_logical_id(cfn))
        ]
        reasons = {r["id"]: r["reason"] for r in suppressed["Metadata"]["cdk_nag"]["rules_to_suppress"]}
        assert len(reasons[rule]) > 40
