"""REST API: API key + usage plan, request validation, access logs, X-Ray, and the API Lambda."""

from __future__ import annotations

import json

from aws_cdk import Duration, RemovalPolicy
from aws_cdk import aws_apigateway as apigw
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_sns as sns
from aws_cdk import aws_sqs as sqs
from constructs import Construct

from infra.bundle import build_api_bundle
from sdeks.api.environment import api_environment
from sdeks.config import Config
from sdeks.contract import API_VERSION, CLAIMS_PREFIX, ErrorCode

STAGE_NAME = "prod"
LAMBDA_HANDLER = "handler.handler"

# Access log line: who called what, how it went. Never the API key itself (apiKeyId is its id).
ACCESS_LOG_FIELDS = {
    "requestId": "$context.requestId",
    "extendedRequestId": "$context.extendedRequestId",
    "requestTime": "$context.requestTime",
    "ip": "$context.identity.sourceIp",
    "userAgent": "$context.identity.userAgent",
    "apiKeyId": "$context.identity.apiKeyId",
    "httpMethod": "$context.httpMethod",
    "resourcePath": "$context.resourcePath",
    "path": "$context.path",
    "status": "$context.status",
    "protocol": "$context.protocol",
    "requestLength": "$context.requestLength",
    "responseLength": "$context.responseLength",
    "responseLatency": "$context.responseLatency",
    "integrationStatus": "$context.integration.status",
    "integrationLatency": "$context.integration.latency",
    "errorMessage": "$context.error.message",
    "xrayTraceId": "$context.xrayTraceId",
}

# API Gateway's own errors, in the contract's error shape {"error": {"code", "message", "details"}}.
GATEWAY_ERRORS: dict[str, tuple[apigw.ResponseType, ErrorCode, str | None]] = {
    "BadRequestBody": (apigw.ResponseType.BAD_REQUEST_BODY, ErrorCode.VALIDATION_ERROR, None),
    "InvalidApiKey": (apigw.ResponseType.INVALID_API_KEY, ErrorCode.FORBIDDEN, None),
    "UnknownRoute": (apigw.ResponseType.MISSING_AUTHENTICATION_TOKEN, ErrorCode.NOT_FOUND, "404"),
    "Throttled": (apigw.ResponseType.THROTTLED, ErrorCode.THROTTLED, None),
    "QuotaExceeded": (apigw.ResponseType.QUOTA_EXCEEDED, ErrorCode.QUOTA_EXCEEDED, None),
    "TooLarge": (apigw.ResponseType.REQUEST_TOO_LARGE, ErrorCode.PAYLOAD_TOO_LARGE, None),
    "Default4xx": (apigw.ResponseType.DEFAULT_4_XX, ErrorCode.CLIENT_ERROR, None),
    "Default5xx": (apigw.ResponseType.DEFAULT_5_XX, ErrorCode.SERVER_ERROR, None),
}

SUBMIT_MODEL_SCHEMA = apigw.JsonSchema(
    schema=apigw.JsonSchemaVersion.DRAFT4,
    title="SubmitTask",
    type=apigw.JsonSchemaType.OBJECT,
    required=["task"],
    properties={"task": apigw.JsonSchema(type=apigw.JsonSchemaType.OBJECT)},
)
"""A coarse gate only: the Lambda validates the task with sdeks.contract and names each bad field."""


class Api(Construct):
    """The front door: the API Lambda (its role, logs, environment) behind a REST API with a key and usage plan."""

    def __init__(
        self,
        scope: Construct,
        cid: str,
        *,
        config: Config,
        tasks_topic: sns.ITopic,
        table: dynamodb.ITable,
        output_bucket: s3.IBucket,
        runtime_queues: dict[str, sqs.IQueue],
    ) -> None:
        """``runtime_queues`` (runtime name → its task queue): the depth a queued task's status reports."""
        super().__init__(scope, cid)
        self.function_log_group = logs.LogGroup(
            self, "FunctionLogs", retention=logs.RetentionDays.ONE_MONTH, removal_policy=RemovalPolicy.DESTROY
        )
        self.role = self._role(config.project, tasks_topic, table, output_bucket, runtime_queues)
        self.function = self._function(config, tasks_topic, table, output_bucket, runtime_queues)
        self.access_log_group = logs.LogGroup(
            self, "AccessLogs", retention=logs.RetentionDays.THREE_MONTHS, removal_policy=RemovalPolicy.DESTROY
        )
        self.rest_api = self._rest_api(config.project)
        self._routes(apigw.LambdaIntegration(self.function, proxy=True))
        self._usage_plan(config)

    def _role(
        self,
        project: str,
        tasks_topic: sns.ITopic,
        table: dynamodb.ITable,
        output_bucket: s3.IBucket,
        runtime_queues: dict[str, sqs.IQueue],
    ) -> iam.Role:
        """Least privilege: its own log group, publish to the tasks topic, its table rows, claim checks, presigning,
        and the depth (attributes only) of the runtimes' task queues."""
        role = iam.Role(
            self,
            "FunctionRole",
            assumed_by=iam.ServicePrincipal("lambda.amazonaws.com"),
            description=f"{project} API Lambda: publish tasks, task rows, claim checks",
        )
        statements = [
            iam.PolicyStatement(
                sid="Logs",
                actions=["logs:CreateLogStream", "logs:PutLogEvents"],
                resources=[self.function_log_group.log_group_arn],
            ),
            iam.PolicyStatement(sid="PublishTasks", actions=["sns:Publish"], resources=[tasks_topic.topic_arn]),
            iam.PolicyStatement(
                sid="TaskRows",
                actions=["dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:UpdateItem"],
                resources=[table.table_arn],
            ),
            iam.PolicyStatement(
                sid="ClaimChecks",
                actions=["s3:PutObject"],
                resources=[output_bucket.arn_for_objects(f"{CLAIMS_PREFIX}*")],
            ),
            iam.PolicyStatement(
                sid="PresignOutputs", actions=["s3:GetObject"], resources=[output_bucket.arn_for_objects("*")]
            ),
            iam.PolicyStatement(
                sid="QueueDepth",
                actions=["sqs:GetQueueAttributes"],
                resources=[queue.queue_arn for _, queue in sorted(runtime_queues.items())],
            ),
        ]
        for statement in statements:
            role.add_to_policy(statement)
        return role

    def _function(
        self,
        config: Config,
        tasks_topic: sns.ITopic,
        table: dynamodb.ITable,
        output_bucket: s3.IBucket,
        runtime_queues: dict[str, sqs.IQueue],
    ) -> lambda_.Function:
        return lambda_.Function(
            self,
            "Function",
            description=f"{config.project} API: validate, record and enqueue tasks; task status",
            runtime=lambda_.Runtime.PYTHON_3_12,
            architecture=lambda_.Architecture.X86_64,
            handler=LAMBDA_HANDLER,
            code=lambda_.Code.from_asset(str(build_api_bundle())),
            memory_size=512,
            timeout=Duration.seconds(29),
            tracing=lambda_.Tracing.ACTIVE,
            role=self.role,
            log_group=self.function_log_group,
            logging_format=lambda_.LoggingFormat.JSON,  # Powertools writes JSON lines; Lambda keeps them as they are
            environment=api_environment(
                config,
                tasks_topic_arn=tasks_topic.topic_arn,
                task_table=table.table_name,
                output_bucket=output_bucket.bucket_name,
                queue_urls={name: queue.queue_url for name, queue in runtime_queues.items()},
            ),
        )

    def _rest_api(self, project: str) -> apigw.RestApi:
        rest_api = apigw.RestApi(
            self,
            "RestApi",
            rest_api_name=f"{project}-api",
            description=f"{project}: asynchronous Stable Diffusion tasks ({API_VERSION})",
            endpoint_types=[apigw.EndpointType.REGIONAL],
            api_key_source_type=apigw.ApiKeySourceType.HEADER,
            cloud_watch_role=True,
            cloud_watch_role_removal_policy=RemovalPolicy.RETAIN,
            deploy_options=apigw.StageOptions(
                stage_name=STAGE_NAME,
                tracing_enabled=True,
                metrics_enabled=True,
                logging_level=apigw.MethodLoggingLevel.ERROR,
                data_trace_enabled=False,  # request bodies (prompts, images) stay out of execution logs
                access_log_destination=apigw.LogGroupLogDestination(self.access_log_group),
                access_log_format=apigw.AccessLogFormat.custom(json.dumps(ACCESS_LOG_FIELDS)),
            ),
            default_method_options=apigw.MethodOptions(api_key_required=True),
        )
        for rid, (rtype, code, status) in GATEWAY_ERRORS.items():
            rest_api.add_gateway_response(
                rid,
                type=rtype,
                status_code=status,
                templates={
                    "application/json": (
                        f'{{"error": {{"code": "{code}", "message": $context.error.messageString, "details": null}}}}'
                    )
                },
            )
        return rest_api

    def _routes(self, integration: apigw.LambdaIntegration) -> None:
        submit_model = self.rest_api.add_model(
            "SubmitTaskModel", content_type="application/json", schema=SUBMIT_MODEL_SCHEMA
        )
        # Body (against the model, when the method has one) and declared parameters.
        validator = self.rest_api.add_request_validator(
            "Validator",
            request_validator_name="body-and-parameters",
            validate_request_body=True,
            validate_request_parameters=True,
        )
        # POST /v1alpha2 (API Gateway also routes /v1alpha2/ here: a trailing slash names the same resource).
        version = self.rest_api.root.add_resource(API_VERSION)
        optional_query = {f"method.request.querystring.{name}": False for name in ("wait", "presign")}
        version.add_method(
            "POST",
            integration,
            api_key_required=True,
            request_validator=validator,
            request_models={"application/json": submit_model},
            request_parameters=optional_query,
        )
        task = version.add_resource("tasks").add_resource("{id}")
        task.add_method(
            "GET",
            integration,
            api_key_required=True,
            request_validator=validator,
            request_parameters={"method.request.path.id": True, **optional_query},
        )
        # POST /v1alpha2/tasks/{id}/cancel: the Lambda's conditional UpdateItem on the task row (TaskRows)
        task.add_resource("cancel").add_method(
            "POST",
            integration,
            api_key_required=True,
            request_validator=validator,
            request_parameters={"method.request.path.id": True},
        )
        version.add_resource("runtimes").add_method(
            "GET", integration, api_key_required=True, request_validator=validator
        )

    def _usage_plan(self, config: Config) -> None:
        project = config.project
        self.api_key = self.rest_api.add_api_key("ApiKey", api_key_name=f"{project}-default")
        self.usage_plan = self.rest_api.add_usage_plan(
            "UsagePlan",
            name=f"{project}-default",
            throttle=apigw.ThrottleSettings(
                rate_limit=config.api.throttle.rate_limit, burst_limit=config.api.throttle.burst_limit
            ),
            quota=apigw.QuotaSettings(limit=config.api.quota.limit, period=apigw.Period[config.api.quota.period]),
        )
        self.usage_plan.add_api_stage(stage=self.rest_api.deployment_stage)
        self.usage_plan.add_api_key(self.api_key)
