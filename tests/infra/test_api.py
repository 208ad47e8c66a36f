"""REST API, usage plan, Lambda, task table: what a reviewer checks."""

from __future__ import annotations

import json

import pytest

from infra.api import ACCESS_LOG_FIELDS
from sdeks.api.environment import api_environment
from sdeks.config import TASK_TABLE_KEY, TASK_TABLE_TTL_ATTRIBUTE, resource_layout
from tests.infra.helpers import actions_on, logical_id, statements_of

pytestmark = pytest.mark.slow


def _paths(raw: dict) -> dict[str, str]:
    """logical id of each AWS::ApiGateway::Resource → its full path."""
    resources = {k: v["Properties"] for k, v in raw["Resources"].items() if v["Type"] == "AWS::ApiGateway::Resource"}

    def path(lid: str) -> str:
        props = resources[lid]
        parent = props["ParentId"]
        prefix = path(parent["Ref"]) if "Ref" in parent else ""
        return f"{prefix}/{props['PathPart']}"

    return {lid: path(lid) for lid in resources}


def test_routes_require_an_api_key(synth_default):
    raw = synth_default.raw
    paths = _paths(raw)
    methods = {}
    for m in synth_default.resources("AWS::ApiGateway::Method").values():
        props = m["Properties"]
        if props["HttpMethod"] == "OPTIONS":
            continue
        methods[(props["HttpMethod"], paths[props["ResourceId"]["Ref"]])] = props
    assert set(methods) == {
        ("POST", "/v1alpha2"),
        ("GET", "/v1alpha2/tasks/{id}"),
        ("POST", "/v1alpha2/tasks/{id}/cancel"),
        ("GET", "/v1alpha2/runtimes"),
    }
    for props in methods.values():
        assert props["ApiKeyRequired"] is True
        assert props["Integration"]["Type"] == "AWS_PROXY"
        assert props["RequestValidatorId"]
    post = methods[("POST", "/v1alpha2")]
    assert "application/json" in post["RequestModels"]
    assert methods[("POST", "/v1alpha2/tasks/{id}/cancel")]["RequestParameters"] == {"method.request.path.id": True}
    # ?wait=N and ?presign pass through (optional); the handler validates them
    for route in (("POST", "/v1alpha2"), ("GET", "/v1alpha2/tasks/{id}")):
        params = methods[route]["RequestParameters"]
        assert params["method.request.querystring.wait"] is False
        assert params["method.request.querystring.presign"] is False
    validator = next(iter(synth_default.resources("AWS::ApiGateway::RequestValidator").values()))["Properties"]
    assert validator["ValidateRequestBody"] is True
    model = next(iter(synth_default.resources("AWS::ApiGateway::Model").values()))["Properties"]
    assert model["Schema"]["required"] == ["task"]


def test_usage_plan_throttle_and_quota(synth_any):
    api = synth_any.config.api
    plan = next(iter(synth_any.resources("AWS::ApiGateway::UsagePlan").values()))["Properties"]
    assert plan["Throttle"] == {"RateLimit": api.throttle.rate_limit, "BurstLimit": api.throttle.burst_limit}
    assert plan["Quota"] == {"Limit": api.quota.limit, "Period": api.quota.period}
    assert len(plan["ApiStages"]) == 1
    assert len(synth_any.resources("AWS::ApiGateway::ApiKey")) == 1
    assert len(synth_any.resources("AWS::ApiGateway::UsagePlanKey")) == 1


def test_stage_traces_and_logs_json_without_the_key(synth_default):
    stage = next(iter(synth_default.resources("AWS::ApiGateway::Stage").values()))["Properties"]
    assert stage["TracingEnabled"] is True
    fmt = stage["AccessLogSetting"]["Format"]
    assert json.loads(fmt) == ACCESS_LOG_FIELDS
    assert '$context.identity.apiKey"' not in fmt and "$context.identity.apiKey," not in fmt
    assert all(v != "$context.identity.apiKey" for v in ACCESS_LOG_FIELDS.values())
    assert stage["AccessLogSetting"]["DestinationArn"]
    settings = stage["MethodSettings"][0]
    assert settings["DataTraceEnabled"] is False


def test_gateway_errors_use_the_contract_shape(synth_default):
    responses = synth_default.resources("AWS::ApiGateway::GatewayResponse").values()
    types = {r["Properties"]["ResponseType"] for r in responses}
    assert {"BAD_REQUEST_BODY", "INVALID_API_KEY", "THROTTLED", "QUOTA_EXCEEDED", "DEFAULT_5XX"} <= types
    for r in responses:
        template = r["Properties"]["ResponseTemplates"]["application/json"]
        assert template.startswith('{"error": {"code": ')


def test_lambda_runtime_env_and_tracing(synth_any):
    config = synth_any.config
    layout = resource_layout(config)
    raw = synth_any.raw
    fn = next(
        v["Properties"]
        for v in synth_any.resources("AWS::Lambda::Function").values()
        if v["Properties"].get("Handler") == "handler.handler"
    )
    assert fn["Runtime"] == "python3.12"
    assert fn["TracingConfig"] == {"Mode": "Active"}
    env = fn["Environment"]["Variables"]
    assert json.loads(env["SDEKS_RUNTIMES"]) == config.runtime_types
    assert env["SDEKS_TASKS_TOPIC_ARN"] == {
        "Ref": logical_id(raw, "AWS::SNS::Topic", TopicName=layout.tasks_topic_name)
    }
    assert env["SDEKS_TASK_TABLE"] == {"Ref": logical_id(raw, "AWS::DynamoDB::Table", TableName=layout.task_table_name)}
    assert env["SDEKS_OUTPUT_BUCKET"]
    assert int(env["SDEKS_PRESIGN_EXPIRES_S"]) > 0
    # status rows live as long as the outputs they point at
    assert env["SDEKS_STATUS_TTL_DAYS"] == str(config.output.expire_days)
    # each runtime's queue URL (a queued task's depth), resolved by CloudFormation into the JSON object
    queue_urls = env["SDEKS_QUEUE_URLS"]["Fn::Join"][1]
    for rq in layout.runtimes:
        queue = logical_id(raw, "AWS::SQS::Queue", QueueName=rq.queue_name)
        assert {"Ref": queue} in queue_urls, rq.runtime.name
    # exactly the settings the handler reads, from the one function local mode and the tests use
    assert set(env) == set(api_environment(config, tasks_topic_arn="t", task_table="t", output_bucket="b"))


def test_lambda_asset_bundles_sdeks_and_linux_wheels(synth_default):
    fn = next(
        v
        for v in synth_default.resources("AWS::Lambda::Function").values()
        if v["Properties"].get("Handler") == "handler.handler"
    )
    key = fn["Properties"]["Code"]["S3Key"]
    manifest = json.loads((synth_default.outdir / f"{synth_default.stack.artifact_id}.assets.json").read_text())
    asset = synth_default.outdir / manifest["files"][key.removesuffix(".zip")]["source"]["path"]
    assert (asset / "handler.py").is_file(), "handler.handler must resolve at the asset root"
    assert (asset / "sdeks" / "contract" / "__init__.py").is_file()
    assert (asset / "sdeks" / "api" / "handler.py").is_file()
    assert (asset / "pydantic").is_dir() and (asset / "pydantic_settings").is_dir()
    assert (asset / "aws_lambda_powertools" / "event_handler").is_dir()
    # lean: what the handler never imports stays out of the bundle
    assert not (asset / "yaml").exists() and not (asset / "sdeks" / "config").exists()
    assert not (asset / "sdeks" / "local").exists() and not (asset / "sdeks" / "cli").exists()
    cores = list((asset / "pydantic_core").glob("_pydantic_core.cpython-312-x86_64-linux-gnu.so"))
    assert cores, "pydantic-core must be the Lambda (cp312, manylinux x86_64) build"
    assert not list(asset.rglob("__pycache__"))


def test_lambda_permissions_are_scoped(synth_default):
    raw = synth_default.raw
    layout = resource_layout(synth_default.config)
    fn = next(
        v["Properties"]
        for v in synth_default.resources("AWS::Lambda::Function").values()
        if v["Properties"].get("Handler") == "handler.handler"
    )
    role = fn["Role"]["Fn::GetAtt"][0]
    allowed = actions_on(statements_of(raw, role))
    topic = logical_id(raw, "AWS::SNS::Topic", TopicName=layout.tasks_topic_name)
    table = logical_id(raw, "AWS::DynamoDB::Table", TableName=layout.task_table_name)
    bucket = next(iter(k for k in synth_default.resources("AWS::S3::Bucket") if k.startswith("StorageOutput")))
    assert allowed["sns:Publish"] == [{"Ref": topic}]
    for action in ("dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:UpdateItem"):
        assert allowed[action] == [{"Fn::GetAtt": [table, "Arn"]}]
    assert allowed["s3:PutObject"] == [{"Fn::Join": ["", [{"Fn::GetAtt": [bucket, "Arn"]}, "/_claims/*"]]}]
    assert allowed["s3:GetObject"] == [{"Fn::Join": ["", [{"Fn::GetAtt": [bucket, "Arn"]}, "/*"]]}]
    # the depth of exactly the runtimes' task queues (not their DLQs, not the webhook queue), nothing else of SQS
    queues = sorted(logical_id(raw, "AWS::SQS::Queue", QueueName=rq.queue_name) for rq in layout.runtimes)
    assert sorted(arn["Fn::GetAtt"][0] for arn in allowed["sqs:GetQueueAttributes"]) == queues
    assert all(arn["Fn::GetAtt"][1] == "Arn" for arn in allowed["sqs:GetQueueAttributes"])
    data = {a for a in allowed if a.split(":")[0] in ("s3", "sns", "sqs", "dynamodb")}
    assert data == {
        "sqs:GetQueueAttributes",
        "sns:Publish",
        "dynamodb:GetItem",
        "dynamodb:PutItem",
        "dynamodb:UpdateItem",
        "s3:PutObject",
        "s3:GetObject",
    }


def test_task_table(synth_any):
    layout = resource_layout(synth_any.config)
    tables = synth_any.resources("AWS::DynamoDB::Table")
    assert len(tables) == 1
    props = next(iter(tables.values()))["Properties"]
    assert props["TableName"] == layout.task_table_name
    assert props["KeySchema"] == [{"AttributeName": TASK_TABLE_KEY, "KeyType": "HASH"}]
    assert props["AttributeDefinitions"] == [{"AttributeName": TASK_TABLE_KEY, "AttributeType": "S"}]
    assert props["BillingMode"] == "PAY_PER_REQUEST"
    assert props["PointInTimeRecoverySpecification"]["PointInTimeRecoveryEnabled"] is True
    assert props["TimeToLiveSpecification"] == {"AttributeName": TASK_TABLE_TTL_ATTRIBUTE, "Enabled": True}
    assert props["SSESpecification"]["SSEEnabled"] is True
