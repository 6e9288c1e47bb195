"""infra/template.yaml: lint, SAM transform, least-privilege IAM, and what the code expects to be declared.

Also the readers of ``streamer.deploy.template`` that the local stack builds itself from.
"""

from __future__ import annotations

import copy
import json
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from streamer.deploy import template as T

ROOT = Path(__file__).resolve().parents[2]
INFRA = ROOT / "infra"
TEMPLATE_PATH = INFRA / "template.yaml"
STATEMACHINES = ROOT / "statemachines"
ASL_FILES = sorted(STATEMACHINES.glob("*.asl.json"))

HANDLERS = {
    "ConnectFunction": "streamer.handlers.connect.handler",
    "DisconnectFunction": "streamer.handlers.disconnect.handler",
    "RouterFunction": "streamer.handlers.router.handler",
    "StreamRouterFunction": "streamer.handlers.stream_router.handler",
    "StepRunnerFunction": "streamer.handlers.step_runner.handler",
    "NotifyFunction": "streamer.handlers.notify.handler",
    "ExecutionEventsFunction": "streamer.handlers.execution_events.handler",
    "ReconcilerFunction": "streamer.handlers.reconciler.handler",
}

# Actions AWS authorizes only on Resource "*" (no resource-level permissions), and so the only ones a
# statement with Resource "*" may hold:
RESOURCE_STAR_ALLOWED = {
    # DynamoDB Streams: ListStreams is not scoped to a table or stream
    # (https://docs.aws.amazon.com/service-authorization/latest/reference/list_amazondynamodb.html).
    "dynamodb:ListStreams",
    # CloudWatch Logs vended-log delivery, which Step Functions logging needs
    # (https://docs.aws.amazon.com/step-functions/latest/dg/cw-logs.html#cloudwatch-iam-policy).
    "logs:CreateLogDelivery",
    "logs:GetLogDelivery",
    "logs:UpdateLogDelivery",
    "logs:DeleteLogDelivery",
    "logs:ListLogDeliveries",
    "logs:PutResourcePolicy",
    "logs:DescribeResourcePolicies",
    "logs:DescribeLogGroups",
}

# AWS managed policies SAM attaches by itself; no other managed policy may appear.
MANAGED_POLICIES_ALLOWED = {
    # Lambda writing its own logs (SAM adds it to every function role).
    "arn:aws:iam::aws:policy/service-role/AWSLambdaBasicExecutionRole",
    # Tracing: Active / Enabled — X-Ray PutTraceSegments etc. have no resource-level permissions.
    "arn:aws:iam::aws:policy/AWSXrayWriteOnlyAccess",
}


@pytest.fixture(scope="module")
def tpl() -> dict[str, Any]:
    return T.load_template(TEMPLATE_PATH)


@pytest.fixture(scope="module")
def resources(tpl: dict[str, Any]) -> dict[str, Any]:
    return tpl["Resources"]  # type: ignore[no-any-return]


# ----------------------------------------------------------------------------------------- cfn-lint


def _cfn_lint(template: Path) -> None:
    """No error, warning or informational match. Rules ignored on purpose live in infra/.cfnlintrc (if any),
    each with a comment why."""
    rc = INFRA / ".cfnlintrc"
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; from cfnlint.runner import main; sys.exit(main())",
            *(["--config-file", str(rc)] if rc.exists() else []),
            "--format",
            "json",
            "--non-zero-exit-code",
            "informational",
            "--",
            str(template),
        ],
        cwd=INFRA,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert proc.returncode == 0 and proc.stdout.strip() == "[]", f"cfn-lint:\n{proc.stdout}\n{proc.stderr}"


def test_cfn_lint_reports_nothing() -> None:
    _cfn_lint(TEMPLATE_PATH)


def test_loaded_template_lints_as_well(tpl: dict[str, Any], tmp_path: Path) -> None:
    """``load_template`` keeps every intrinsic (``!Condition`` included): its JSON, with the ASL files
    inlined as packaging would, is the same template to cfn-lint."""
    path = tmp_path / "packaged.json"
    path.write_text(json.dumps(_sam_input(tpl)), encoding="utf-8")
    _cfn_lint(path)


def test_cfnlintrc_ignores_are_documented() -> None:
    import yaml

    rc = INFRA / ".cfnlintrc"
    config = yaml.safe_load(rc.read_text(encoding="utf-8")) or {}
    assert "I" in config.get("include_checks", []), "informational rules must stay on"
    lines = rc.read_text(encoding="utf-8").splitlines()
    for rule in config.get("ignore_checks") or []:
        (i,) = [n for n, line in enumerate(lines) if re.search(rf"\b{re.escape(rule)}\b", line)]
        commented = "#" in lines[i] or (i > 0 and lines[i - 1].strip().startswith("#"))
        assert commented, f"infra/.cfnlintrc ignores {rule} without saying why"


# ----------------------------------------------------------------------------------------- SAM


def _sam_input(tpl: dict[str, Any]) -> dict[str, Any]:
    """What `sam deploy` sends after packaging: S3 code, and the ASL inlined where its file exists."""
    t = copy.deepcopy(tpl)
    t["Globals"]["Function"]["CodeUri"] = "s3://streamer-artifacts/lambda.zip"
    for logical_id, spec in T.state_machines(tpl, TEMPLATE_PATH).items():
        props = t["Resources"][logical_id]["Properties"]
        del props["DefinitionUri"]
        if spec.definition_path.exists():
            props["Definition"] = json.loads(spec.definition_path.read_text(encoding="utf-8"))
        else:  # not written yet: an S3 placeholder, as packaging would leave it
            props["DefinitionUri"] = f"s3://streamer-artifacts/{spec.workflow}.asl.json"
    return t


def _translate(tpl: dict[str, Any], parameters: dict[str, Any] | None = None) -> dict[str, Any]:
    import boto3
    from samtranslator.parser.parser import Parser
    from samtranslator.translator.translator import Translator

    # The managed-policy loader is only consulted for policies named by their short name; the template
    # names none, so an empty map is the whole "fake loader".
    translator = Translator({}, Parser(), boto_session=boto3.session.Session(region_name="us-east-1"))
    out: dict[str, Any] = translator.translate(
        _sam_input(tpl), parameters or {}, get_managed_policy_map=lambda: {}
    )
    return out


@pytest.fixture(scope="module")
def translated(tpl: dict[str, Any]) -> dict[str, Any]:
    return _translate(tpl)


def test_sam_transform_succeeds(translated: dict[str, Any]) -> None:
    types = {r["Type"] for r in translated["Resources"].values()}
    assert "AWS::Lambda::Function" in types
    assert "AWS::StepFunctions::StateMachine" in types
    assert not any(t.startswith("AWS::Serverless::") for t in types)
    for logical_id in HANDLERS:
        fn = translated["Resources"][logical_id]
        assert fn["Type"] == "AWS::Lambda::Function"
        assert fn["Properties"]["Runtime"] == "python3.12"
        assert fn["Properties"]["Architectures"] == ["arm64"]
        assert fn["Properties"]["TracingConfig"] == {"Mode": "Active"}


def test_sam_transform_with_a_secret(tpl: dict[str, Any]) -> None:
    params = {"JwtSecretArn": "arn:aws:ssm:us-east-1:123456789012:parameter/streamer/jwt"}
    assert "ConnectFunctionRole" in _translate(tpl, params)["Resources"]


# ----------------------------------------------------------------------------------------- IAM


def _statements(node: Any) -> Iterator[dict[str, Any]]:
    """Every policy statement under ``node``, both branches of ``Fn::If`` included."""
    if isinstance(node, dict):
        if "Effect" in node and ("Action" in node or "NotAction" in node):
            yield node
            return
        for value in node.values():
            yield from _statements(value)
    elif isinstance(node, list):
        for value in node:
            yield from _statements(value)


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def _roles(translated: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {k: r for k, r in translated["Resources"].items() if r["Type"] == "AWS::IAM::Role"}


def _role_statements(role: dict[str, Any]) -> list[dict[str, Any]]:
    return list(_statements(role["Properties"].get("Policies", [])))


def test_every_function_and_state_machine_has_its_own_role(translated: dict[str, Any]) -> None:
    roles = _roles(translated)
    for logical_id in [*HANDLERS, *T.state_machines(None, TEMPLATE_PATH)]:
        assert f"{logical_id}Role" in roles


def test_no_wildcard_actions(translated: dict[str, Any]) -> None:
    for name, role in _roles(translated).items():
        for st in _role_statements(role):
            assert "NotAction" not in st and "NotResource" not in st, (name, st)
            assert st["Effect"] == "Allow", (name, st)
            for action in _as_list(st["Action"]):
                assert isinstance(action, str) and "*" not in action, (name, action)


def test_resource_star_only_where_aws_has_no_resource_level_permissions(translated: dict[str, Any]) -> None:
    for name, role in _roles(translated).items():
        for st in _role_statements(role):
            if "*" in _as_list(st["Resource"]):
                extra = set(_as_list(st["Action"])) - RESOURCE_STAR_ALLOWED
                assert not extra, f"{name}: Resource '*' for {sorted(extra)}"


def test_only_expected_managed_policies(translated: dict[str, Any]) -> None:
    for name, role in _roles(translated).items():
        arns = set(role["Properties"].get("ManagedPolicyArns", []))
        assert arns <= MANAGED_POLICIES_ALLOWED, (name, arns - MANAGED_POLICIES_ALLOWED)


def _grants(translated: dict[str, Any], role: str) -> set[tuple[str, str]]:
    """``{(action, resource)}`` of a role, resources rendered compactly (``ConnectionsTable.Arn`` …)."""

    def render(resource: Any) -> str:
        if isinstance(resource, str):
            return resource
        if "Fn::GetAtt" in resource:
            return ".".join(resource["Fn::GetAtt"])
        if "Ref" in resource:
            return "Ref:" + resource["Ref"]
        if "Fn::Sub" in resource:
            sub = resource["Fn::Sub"]
            return sub if isinstance(sub, str) else sub[0] + json.dumps(sub[1], sort_keys=True)
        return json.dumps(resource, sort_keys=True)

    out: set[tuple[str, str]] = set()
    for st in _role_statements(_roles(translated)[role]):
        for action in _as_list(st["Action"]):
            for resource in _as_list(st["Resource"]):
                out.add((action, render(resource)))
    return out


EXECUTE_API = (
    "arn:${AWS::Partition}:execute-api:${AWS::Region}:${AWS::AccountId}:${WebSocketApi}/${StageName}"
    "/POST/@connections/*"
)
# Exact state machines (``${AWS::StackName}-*`` would also match a sibling stack's, e.g. streamer-staging-*).
EXECUTIONS = {
    f"arn:${{AWS::Partition}}:states:${{AWS::Region}}:${{AWS::AccountId}}:execution:${{{sm}StateMachine.Name}}:*"
    for sm in ("Echo", "Textstats")
}
STATE_MACHINES = {"Ref:EchoStateMachine", "Ref:TextstatsStateMachine"}
QUOTAS = "QuotasTable.Arn"
BY_USER = "${ConnectionsTable.Arn}/index/by_user"
CONN, REQ, EVT = "ConnectionsTable.Arn", "RequestsTable.Arn", "EventsTable.Arn"
# A progress event: its seq claimed on the request item (UpdateItem), then put at that seq (PutItem). The
# terminal event is the request item itself (one conditional UpdateItem). No transaction.
EVENT_WRITER = {("dynamodb:UpdateItem", REQ), ("dynamodb:PutItem", EVT)}
PUSHER = {
    ("dynamodb:Query", BY_USER),
    ("dynamodb:DeleteItem", CONN),  # gone (410) connections are removed while pushing
    ("execute-api:ManageConnections", EXECUTE_API),
}

EXPECTED_GRANTS: dict[str, set[tuple[str, str]]] = {
    "ConnectFunction": {
        ("dynamodb:PutItem", CONN),
        ("ssm:GetParameter", "Ref:JwtSecretArn"),  # only when JwtSecretArn is an SSM parameter
        ("secretsmanager:GetSecretValue", "Ref:JwtSecretArn"),  # only when it is a secret
        ("kms:Decrypt", "Ref:JwtSecretKmsKeyArn"),  # only with a customer-managed key
        ("dynamodb:GetItem", QUOTAS),  # the connection quota (streamer.quotas)
        ("dynamodb:UpdateItem", QUOTAS),
        ("dynamodb:BatchGetItem", CONN),  # stale reservations are checked against the rows
        ("execute-api:ManageConnections", EXECUTE_API.replace("/POST/", "/GET/")),  # … and API Gateway
    },
    "DisconnectFunction": {("dynamodb:DeleteItem", CONN)},
    "RouterFunction": {
        ("dynamodb:GetItem", CONN),
        ("dynamodb:UpdateItem", CONN),
        ("dynamodb:DeleteItem", CONN),
        ("dynamodb:Query", BY_USER),
        ("dynamodb:GetItem", REQ),
        ("dynamodb:PutItem", REQ),
        ("dynamodb:UpdateItem", REQ),
        ("execute-api:ManageConnections", EXECUTE_API),
        ("execute-api:ManageConnections", EXECUTE_API.replace("/POST/", "/DELETE/")),  # token expired: close
        ("dynamodb:GetItem", QUOTAS),
        ("dynamodb:UpdateItem", QUOTAS),
        ("dynamodb:BatchGetItem", REQ),
    }
    | {("states:StopExecution", e) for e in EXECUTIONS}
    | {("dynamodb:Query", EVT)},  # resume reads the log
    "StreamRouterFunction": {
        ("dynamodb:DescribeStream", "RequestsTable.StreamArn"),
        ("dynamodb:GetRecords", "RequestsTable.StreamArn"),
        ("dynamodb:GetShardIterator", "RequestsTable.StreamArn"),
        ("dynamodb:ListStreams", "*"),
        ("dynamodb:UpdateItem", REQ),  # mark_running; the terminal write of a request that cannot start
        ("sqs:SendMessage", "StreamDeadLetterQueue.Arn"),
    }
    | {("states:StartExecution", sm) for sm in STATE_MACHINES}
    | {("states:StopExecution", e) for e in EXECUTIONS}
    | {("states:DescribeExecution", e) for e in EXECUTIONS}  # ExecutionAlreadyExists: is it this request's?
    | PUSHER,
    "StepRunnerFunction": EVENT_WRITER | PUSHER,
    "NotifyFunction": EVENT_WRITER | PUSHER,
    "ExecutionEventsFunction": {
        ("dynamodb:GetItem", REQ),
        ("dynamodb:UpdateItem", REQ),
        # EventInvokeConfig's on-failure destination (SAM adds the grant for it).
        ("sqs:SendMessage", "StreamDeadLetterQueue.Arn"),
    }
    # An execution input over 248 KiB is left out of the EventBridge event: read it from the execution.
    | {("states:DescribeExecution", e) for e in EXECUTIONS}
    | PUSHER,
    "ReconcilerFunction": {
        ("dynamodb:GetItem", REQ),
        ("dynamodb:UpdateItem", REQ),
        ("dynamodb:Query", "${RequestsTable.Arn}/index/by_open"),
    }
    | {("states:StartExecution", sm) for sm in STATE_MACHINES}
    | {("states:DescribeExecution", e) for e in EXECUTIONS}
    | {("states:StopExecution", e) for e in EXECUTIONS}
    | PUSHER,
}


@pytest.mark.parametrize("function", sorted(EXPECTED_GRANTS))
def test_function_grants_are_exactly_what_it_uses(translated: dict[str, Any], function: str) -> None:
    assert _grants(translated, f"{function}Role") == EXPECTED_GRANTS[function]


def test_jwt_secret_grants_are_conditional(translated: dict[str, Any]) -> None:
    policies = _roles(translated)["ConnectFunctionRole"]["Properties"]["Policies"]
    conditional = {p["Fn::If"][0] for p in policies if "Fn::If" in p}
    assert conditional == {"JwtSecretInSsm", "JwtSecretInSecretsManager", "HasJwtSecretKmsKey"}


@pytest.mark.parametrize(
    ("arn", "service"),
    [
        ("", ""),
        ("arn:aws:ssm:eu-west-1:123456789012:parameter/streamer/jwt", "ssm"),
        ("arn:aws:secretsmanager:eu-west-1:123456789012:secret:streamer-jwt-AbCdEf", "secretsmanager"),
    ],
)
def test_jwt_secret_service_condition(tpl: dict[str, Any], arn: str, service: str) -> None:
    """The conditions pick the service out of the ARN, and stay valid for an empty parameter."""
    expr = tpl["Conditions"]["JwtSecretInSsm"]["Fn::Equals"][0]
    assert T.resolve_intrinsics(expr, {"JwtSecretArn": arn}) == service
    pattern = tpl["Parameters"]["JwtSecretArn"]["AllowedPattern"]
    assert re.match(pattern, arn)


def test_state_machine_roles_invoke_only_the_two_functions(translated: dict[str, Any]) -> None:
    for logical_id in T.state_machines(None, TEMPLATE_PATH):
        statements = _role_statements(_roles(translated)[f"{logical_id}Role"])
        invoked = {
            st["Resource"]["Fn::Sub"][1]["functionName"]["Ref"]
            for st in statements
            if "lambda:InvokeFunction" in _as_list(st["Action"])
        }
        assert invoked == {"StepRunnerFunction", "NotifyFunction"}
        actions = {a for st in statements for a in _as_list(st["Action"])}
        assert {a for a in actions if not a.startswith("logs:")} == {"lambda:InvokeFunction"}


# ----------------------------------------------------------------------------------------- declared


def test_functions_and_handlers(tpl: dict[str, Any]) -> None:
    specs = T.functions(tpl)
    assert {k: s.handler for k, s in specs.items()} == HANDLERS
    assert specs["RouterFunction"].timeout == 10
    assert specs["StepRunnerFunction"].timeout == 900
    for spec in specs.values():
        assert spec.runtime == "python3.12"
        assert spec.architectures == ("arm64",)
        assert spec.module.startswith("streamer.handlers.") and spec.attribute == "handler"
        env = spec.environment
        assert env["STREAMER_CONNECTIONS_TABLE"] == {"Ref": "ConnectionsTable"}
        assert env["STREAMER_REQUESTS_TABLE"] == {"Ref": "RequestsTable"}
        assert env["STREAMER_EVENTS_TABLE"] == {"Ref": "EventsTable"}
        assert {"POWERTOOLS_SERVICE_NAME", "POWERTOOLS_LOG_LEVEL", "STREAMER_APIGW_ENDPOINT"} <= set(env)
        assert {
            "STREAMER_JWT_ALGORITHMS",
            "STREAMER_JWT_SECRET_ARN",
            "STREAMER_JWT_JWKS_URL",
            "STREAMER_JWT_ISSUER",
            "STREAMER_JWT_AUDIENCE",
        } <= set(env)


def test_environment_resolves_to_what_the_code_reads(tpl: dict[str, Any]) -> None:
    env = T.resolve_intrinsics(
        T.functions(tpl)["RouterFunction"].environment,
        {
            **T.parameter_defaults(tpl),
            "AWS::Partition": "aws",
            "AWS::Region": "eu-west-1",
            "AWS::URLSuffix": "amazonaws.com",
            "AWS::AccountId": "123456789012",
            "AWS::StackName": "streamer",
            "WebSocketApi": "abc123",
            "ConnectionsTable": "c",
            "RequestsTable": "r",
            "EventsTable": "e",
            "QuotasTable": "q",
        },
    )
    assert env["STREAMER_APIGW_ENDPOINT"] == "https://abc123.execute-api.eu-west-1.amazonaws.com/prod"
    prefix = env["STREAMER_STATE_MACHINE_ARN_PREFIX"]
    assert prefix == "arn:aws:states:eu-west-1:123456789012:stateMachine:streamer-"
    # Each state machine's Name is the prefix's tail + its workflow, so prefix + workflow is its ARN.
    for spec in T.state_machines(tpl, TEMPLATE_PATH).values():
        assert re.fullmatch(r"[A-Za-z0-9_-]+", spec.workflow)

    from streamer.config import Settings

    settings = Settings.from_env(env)
    assert (settings.connections_table, settings.requests_table, settings.events_table) == ("c", "r", "e")
    assert settings.state_machine_arn("echo") == prefix + "echo"


def test_tables_keep_their_key_schemas(tpl: dict[str, Any]) -> None:
    tables = T.table_definitions(tpl)
    assert set(tables) == {"ConnectionsTable", "RequestsTable", "EventsTable", "QuotasTable"}
    assert tables["QuotasTable"]["KeySchema"] == [{"AttributeName": "user_id", "KeyType": "HASH"}]
    assert tables["ConnectionsTable"]["KeySchema"] == [{"AttributeName": "connection_id", "KeyType": "HASH"}]
    gsi = tables["ConnectionsTable"]["GlobalSecondaryIndexes"]
    assert [(g["IndexName"], g["KeySchema"]) for g in gsi] == [
        ("by_user", [{"AttributeName": "user_id", "KeyType": "HASH"}])
    ]
    assert tables["RequestsTable"]["KeySchema"] == [
        {"AttributeName": "user_id", "KeyType": "HASH"},
        {"AttributeName": "request_id", "KeyType": "RANGE"},
    ]
    assert tables["RequestsTable"]["StreamSpecification"] == {
        "StreamEnabled": True,
        "StreamViewType": "NEW_AND_OLD_IMAGES",
    }
    assert tables["EventsTable"]["KeySchema"] == [
        {"AttributeName": "request_key", "KeyType": "HASH"},
        {"AttributeName": "seq", "KeyType": "RANGE"},
    ]
    for name, spec in tables.items():
        if name != "QuotasTable":  # one item per user, rebuilt from the others: nothing expires
            assert spec["TimeToLiveSpecification"] == {"AttributeName": "expires_at", "Enabled": True}


def test_websocket_routes(tpl: dict[str, Any], resources: dict[str, Any]) -> None:
    assert T.websocket_routes(tpl) == {
        "$connect": "ConnectFunction",
        "$disconnect": "DisconnectFunction",
        "$default": "RouterFunction",
    }
    assert T.route_selection_expression(tpl) == "$request.body.action"
    # Two-way $default: the router's last reply is its integration response (STREAMER_REPLY_ROUTE_RESPONSE).
    assert T.websocket_route_responses(tpl) == {"$default"}
    assert T.functions(tpl)["RouterFunction"].environment["STREAMER_REPLY_ROUTE_RESPONSE"] == "$default"
    for res in resources.values():
        if res["Type"] == "AWS::ApiGatewayV2::Route":
            assert res["Properties"]["AuthorizationType"] == "NONE"  # $connect checks the JWT itself
        if res["Type"] == "AWS::ApiGatewayV2::Integration":
            assert res["Properties"]["IntegrationType"] == "AWS_PROXY"
    stage = resources["Stage"]["Properties"]
    assert stage["AutoDeploy"] is True
    assert {"ThrottlingRateLimit", "ThrottlingBurstLimit"} <= set(stage["DefaultRouteSettings"])
    permissions = {
        res["Properties"]["FunctionName"]["Ref"]
        for res in resources.values()
        if res["Type"] == "AWS::Lambda::Permission"
        and res["Properties"]["Principal"] == "apigateway.amazonaws.com"
    }
    assert permissions == set(T.websocket_routes(tpl).values())


def test_stream_mapping(tpl: dict[str, Any], resources: dict[str, Any]) -> None:
    assert T.stream_mappings(tpl) == [
        T.StreamMapping(
            function="StreamRouterFunction",
            table="RequestsTable",
            batch_size=10,
            maximum_retry_attempts=5,
            bisect_batch_on_function_error=True,
            function_response_types=("ReportBatchItemFailures",),
            maximum_record_age_seconds=3600,
            filters=(
                {"eventName": ["INSERT"]},
                {"eventName": ["MODIFY"], "dynamodb": {"NewImage": {"status": {"S": ["CANCELLED"]}}}},
            ),
        )
    ]
    (esm,) = [r["Properties"] for r in resources.values() if r["Type"] == "AWS::Lambda::EventSourceMapping"]
    assert esm["StartingPosition"] == "TRIM_HORIZON"
    assert esm["MaximumRecordAgeInSeconds"] > 0
    # Nothing is silently dropped: what exhausts its retries goes to a queue kept for 14 days.
    dlq = esm["DestinationConfig"]["OnFailure"]["Destination"]["Fn::GetAtt"][0]
    assert resources[dlq]["Type"] == "AWS::SQS::Queue"
    assert resources[dlq]["Properties"]["MessageRetentionPeriod"] == 14 * 24 * 3600


def test_executions_that_end_badly_reach_the_execution_events_function(
    tpl: dict[str, Any], resources: dict[str, Any]
) -> None:
    rules = T.event_rules(tpl)
    assert list(rules) == ["ExecutionEndedRule"]
    rule = rules["ExecutionEndedRule"]
    prefix = tpl["Globals"]["Function"]["Environment"]["Variables"]["STREAMER_STATE_MACHINE_ARN_PREFIX"]
    # Exactly the statuses the handler acts on, for exactly the state machines the code considers its own.
    assert rule.pattern == {
        "source": ["aws.states"],
        "detail-type": ["Step Functions Execution Status Change"],
        "detail": {"status": ["FAILED", "TIMED_OUT", "ABORTED"], "stateMachineArn": [{"prefix": prefix}]},
    }
    from streamer.aws.executions import ENDING_STATUSES

    assert set(rule.pattern["detail"]["status"]) == ENDING_STATUSES
    assert rule.targets == (T.EventTarget("ExecutionEventsFunction", 185, 86400, "StreamDeadLetterQueue"),)
    # EventBridge may invoke the function, only for this rule.
    (perm,) = [
        r["Properties"]
        for r in resources.values()
        if r["Type"] == "AWS::Lambda::Permission" and r["Properties"]["Principal"] == "events.amazonaws.com"
    ]
    assert perm["FunctionName"] == {"Ref": "ExecutionEventsFunction"}
    assert perm["SourceArn"] == {"Fn::GetAtt": ["ExecutionEndedRule", "Arn"]}
    # Nothing is dropped silently: undeliverable events (EventBridge) and events the function failed on
    # (Lambda's asynchronous retries) go to the dead-letter queue, which lets only this rule send to it.
    fn = resources["ExecutionEventsFunction"]["Properties"]
    assert fn["EventInvokeConfig"]["DestinationConfig"]["OnFailure"] == {
        "Type": "SQS",
        "Destination": {"Fn::GetAtt": ["StreamDeadLetterQueue", "Arn"]},
    }
    (policy,) = [r["Properties"] for r in resources.values() if r["Type"] == "AWS::SQS::QueuePolicy"]
    assert policy["Queues"] == [{"Ref": "StreamDeadLetterQueue"}]
    (statement,) = policy["PolicyDocument"]["Statement"]
    assert statement["Principal"] == {"Service": "events.amazonaws.com"}
    assert statement["Action"] == "sqs:SendMessage"
    assert statement["Condition"] == {"ArnEquals": {"aws:SourceArn": {"Fn::GetAtt": ["ExecutionEndedRule", "Arn"]}}}


def test_state_machines_are_wired_to_the_step_runner_and_notify(
    tpl: dict[str, Any], resources: dict[str, Any]
) -> None:
    machines = T.state_machines(tpl, TEMPLATE_PATH)
    assert {m.workflow for m in machines.values()} >= {"echo", "textstats"}
    for logical_id, spec in machines.items():
        assert spec.substitutions == {
            "StepRunnerFunctionArn": "StepRunnerFunction",
            "NotifyFunctionArn": "NotifyFunction",
        }
        assert spec.definition_path == STATEMACHINES / f"{spec.workflow}.asl.json"
        props = resources[logical_id]["Properties"]
        assert props["Logging"]["Level"] == "ALL"
        assert props["Tracing"] == {"Enabled": True}


def test_outputs(tpl: dict[str, Any]) -> None:
    outputs = tpl["Outputs"]
    assert outputs["WebSocketUrl"]["Value"]["Fn::Sub"].startswith("wss://${WebSocketApi}.execute-api.")
    assert "ManagementApiEndpoint" in outputs
    for logical_id in T.state_machines(tpl, TEMPLATE_PATH):
        assert "/states/home" in outputs[f"{logical_id}ConsoleUrl"]["Value"]["Fn::Sub"]
    for table in T.table_definitions(tpl):
        assert "/dynamodbv2/home" in outputs[f"{table}ConsoleUrl"]["Value"]["Fn::Sub"]


# ----------------------------------------------------------------------------------------- statemachines/


def _asl_params() -> list[Any]:
    if not ASL_FILES:
        return [pytest.param(None, marks=pytest.mark.skip(reason="statemachines/ has no *.asl.json yet"))]
    return [pytest.param(p, id=p.name) for p in ASL_FILES]


@pytest.mark.parametrize("asl", _asl_params())
def test_every_asl_file_has_a_state_machine(tpl: dict[str, Any], asl: Path) -> None:
    by_path = {spec.definition_path: spec for spec in T.state_machines(tpl, TEMPLATE_PATH).values()}
    spec = by_path.get(asl.resolve())
    assert spec is not None, f"no AWS::Serverless::StateMachine has DefinitionUri ../statemachines/{asl.name}"
    assert asl.name == f"{spec.workflow}.asl.json"
    # Every ${Var} the definition uses is substituted by the template.
    used = set(re.findall(r"\$\{([A-Za-z0-9_]+)\}", asl.read_text(encoding="utf-8")))
    unsubstituted = sorted(used - set(spec.substitutions))
    assert not unsubstituted, f"{asl.name}: {unsubstituted} are not in DefinitionSubstitutions"


def test_every_state_machine_has_its_asl_file(tpl: dict[str, Any]) -> None:
    missing = sorted(
        str(spec.definition_path.relative_to(ROOT))
        for spec in T.state_machines(tpl, TEMPLATE_PATH).values()
        if not spec.definition_path.exists()
    )
    if missing and not ASL_FILES:
        pytest.skip(f"statemachines/ is empty for now; the template expects {missing}")
    assert not missing


# ----------------------------------------------------------------------------------------- readers


def test_readers_default_to_the_checkout_template() -> None:
    assert T.default_template_path() == TEMPLATE_PATH
    assert set(T.functions()) == set(HANDLERS)
    assert T.websocket_routes()["$default"] == "RouterFunction"
    assert T.stream_mappings()[0].table == "RequestsTable"
    assert set(T.state_machines()) == set(T.state_machines(None, TEMPLATE_PATH))
    assert set(T.event_rules()) == {"ExecutionEndedRule"}


SYNTHETIC = """
Transform: AWS::Serverless-2016-10-31
Globals:
  Function:
    Runtime: python3.12
    Timeout: 7
    Environment: { Variables: { A: "1", B: !Ref Table } }
Resources:
  Table:
    Type: AWS::DynamoDB::Table
    Properties:
      KeySchema: [{ AttributeName: k, KeyType: HASH }]
      StreamSpecification: { StreamViewType: NEW_IMAGE }
  Api:
    Type: AWS::ApiGatewayV2::Api
    Properties: { ProtocolType: WEBSOCKET, RouteSelectionExpression: "$request.body.type" }
  Integ:
    Type: AWS::ApiGatewayV2::Integration
    Properties:
      ApiId: !Ref Api
      IntegrationType: AWS_PROXY
      IntegrationUri: !Join ["", ["arn:aws:apigateway:r:lambda:path/fns/", !GetAtt Fn.Arn, "/invocations"]]
  Route:
    Type: AWS::ApiGatewayV2::Route
    Properties: { ApiId: !Ref Api, RouteKey: ping, Target: !Join ["/", [integrations, !Ref Integ]] }
  Fn:
    Type: AWS::Serverless::Function
    Properties:
      Handler: pkg.mod.fn
      MemorySize: 2048
      Environment: { Variables: { B: override, C: !Sub "${AWS::Region}-x" } }
      Events:
        S:
          Type: DynamoDB
          Properties: { Stream: !GetAtt Table.StreamArn, StartingPosition: LATEST, BatchSize: 3 }
        Q:
          Type: SQS
          Properties: { Queue: arn:aws:sqs:r:1:q }
  Plain:
    Type: AWS::Lambda::Function
    Properties: { Handler: a.b }
  Machine:
    Type: AWS::Serverless::StateMachine
    Properties:
      Name: !Sub "${AWS::StackName}-flow"
      DefinitionUri: sm/flow.json
      DefinitionSubstitutions: { FnArn: !GetAtt Fn.Arn, PlainArn: !Ref Plain }
"""


def test_readers_on_a_synthetic_template(tmp_path: Path) -> None:
    path = tmp_path / "t.yaml"
    path.write_text(SYNTHETIC, encoding="utf-8")
    tpl = T.load_template(path)
    fns = T.functions(tpl)
    assert fns["Fn"] == T.FunctionSpec(
        handler="pkg.mod.fn",
        timeout=7,
        memory=2048,
        environment={"A": "1", "B": "override", "C": {"Fn::Sub": "${AWS::Region}-x"}},
        runtime="python3.12",
    )
    assert fns["Plain"] == T.FunctionSpec(handler="a.b", timeout=3, memory=128)  # no Globals, Lambda defaults
    assert T.websocket_routes(tpl) == {"ping": "Fn"}
    assert T.route_selection_expression(tpl) == "$request.body.type"
    assert T.stream_mappings(tpl) == [T.StreamMapping("Fn", "Table", 3, -1, False, (), starting_position="LATEST")]
    assert T.state_machines(tpl, path) == {
        "Machine": T.StateMachineSpec(
            "flow", tmp_path / "sm" / "flow.json", {"FnArn": "Fn", "PlainArn": "Plain"}
        )
    }


EVENT_RULES = """
Transform: AWS::Serverless-2016-10-31
Resources:
  Queue: { Type: AWS::SQS::Queue }
  Fn:
    Type: AWS::Serverless::Function
    Properties:
      Handler: pkg.mod.fn
      Runtime: python3.12
      Events:
        Ended:
          Type: EventBridgeRule
          Properties:
            Pattern: { source: [aws.states] }
            RetryPolicy: { MaximumRetryAttempts: 4 }
        "Off": # quoted: a bare Off is YAML 1.1's false, and SAM wants string ids
          Type: CloudWatchEvent
          Properties: { Pattern: { source: [aws.states] }, State: DISABLED }
        Timer:
          Type: Schedule
          Properties: { Schedule: rate(1 minute) }
  Plain:
    Type: AWS::Lambda::Function
    Properties: { Handler: a.b }
  JsonRule:
    Type: AWS::Events::Rule
    Properties:
      EventPattern: '{"source": ["aws.states"], "detail": {"status": ["FAILED"]}}'
      Targets:
        - { Id: a, Arn: !GetAtt Plain.Arn, DeadLetterConfig: { Arn: !GetAtt Queue.Arn } }
        - { Id: b, Arn: !GetAtt Queue.Arn }
  OnlyAQueue:
    Type: AWS::Events::Rule
    Properties:
      EventPattern: { source: [aws.s3] }
      Targets: [{ Id: q, Arn: !GetAtt Queue.Arn }]
  Disabled:
    Type: AWS::Events::Rule
    Properties:
      State: DISABLED
      EventPattern: { source: [aws.states] }
      Targets: [{ Id: f, Arn: !GetAtt Plain.Arn }]
  OtherBus:
    Type: AWS::Events::Rule
    Properties:
      EventBusName: custom
      EventPattern: { source: [aws.states] }
      Targets: [{ Id: f, Arn: !GetAtt Plain.Arn }]
  Scheduled:
    Type: AWS::Events::Rule
    Properties:
      ScheduleExpression: rate(5 minutes)
      Targets: [{ Id: f, Arn: !GetAtt Plain.Arn }]
"""


def test_event_rules_reader(tmp_path: Path) -> None:
    """Enabled default-bus rules with a pattern and function targets: AWS::Events::Rule and SAM events."""
    rules = T.event_rules(T.load_template(_write(tmp_path, EVENT_RULES)))
    assert rules == {
        "JsonRule": T.EventRule(
            {"source": ["aws.states"], "detail": {"status": ["FAILED"]}},
            (T.EventTarget("Plain", None, None, "Queue"),),
        ),
        "FnEnded": T.EventRule({"source": ["aws.states"]}, (T.EventTarget("Fn", 4, None, None),)),
    }


def test_state_machine_name_must_carry_the_stack_prefix(tmp_path: Path) -> None:
    tpl = T.load_template(_write(tmp_path, SYNTHETIC.replace('"${AWS::StackName}-flow"', "flow")))
    with pytest.raises(ValueError, match="Name must be"):
        T.state_machines(tpl, tmp_path / "t.yaml")


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "t.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_resolve_intrinsics() -> None:
    refs = {"AWS::Region": "eu-west-1", "Api": "abc", "Fn.Arn": "arn:fn", "P": "a,b"}
    assert T.resolve_intrinsics({"Fn::Sub": "wss://${Api}.${AWS::Region}/${!Literal}"}, refs) == (
        "wss://abc.eu-west-1/${Literal}"
    )
    assert T.resolve_intrinsics({"Fn::Sub": ["${X}-${Api}", {"X": {"Ref": "P"}}]}, refs) == "a,b-abc"
    assert T.resolve_intrinsics({"Fn::GetAtt": ["Fn", "Arn"]}, refs) == "arn:fn"
    assert T.resolve_intrinsics({"Fn::Join": ["/", ["x", {"Ref": "Api"}]]}, refs) == "x/abc"
    assert T.resolve_intrinsics({"Fn::Select": [1, {"Fn::Split": [",", {"Ref": "P"}]}]}, refs) == "b"
    assert T.resolve_intrinsics({"K": [{"Ref": "Api"}, 3]}, refs) == {"K": ["abc", 3]}
    with pytest.raises(KeyError):
        T.resolve_intrinsics({"Ref": "Missing"}, refs)
    with pytest.raises(ValueError, match="Fn::If"):
        T.resolve_intrinsics({"Fn::If": ["C", 1, 2]}, refs)


def test_short_form_tags_load_as_long_form(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        "Conditions:\n  A: !Equals [x, y]\n  B: !And [!Condition A, !Not [!Condition A]]\n"
        "Resources:\n  R: { Type: X, Properties: { P: !GetAtt Fn.Arn, Q: !Ref Y, S: !Sub '${Y}' } }\n",
    )
    tpl = T.load_template(path)
    assert tpl["Conditions"]["B"] == {"Fn::And": [{"Condition": "A"}, {"Fn::Not": [{"Condition": "A"}]}]}
    assert tpl["Resources"]["R"]["Properties"] == {
        "P": {"Fn::GetAtt": ["Fn", "Arn"]},
        "Q": {"Ref": "Y"},
        "S": {"Fn::Sub": "${Y}"},
    }


def test_code_uri_is_where_the_build_writes(tpl: dict[str, Any]) -> None:
    from streamer.deploy.build import ARTIFACT_DIR

    assert (INFRA / tpl["Globals"]["Function"]["CodeUri"]).resolve() == (INFRA.parent / ARTIFACT_DIR).resolve()


def test_samconfig_deploys_this_template() -> None:
    import tomllib

    config = tomllib.loads((INFRA / "samconfig.toml").read_text(encoding="utf-8"))
    deploy = config["default"]["deploy"]["parameters"]
    assert (INFRA / deploy["template_file"]).resolve() == TEMPLATE_PATH
    assert "CAPABILITY_IAM" in deploy["capabilities"].split()
    assert config["default"]["global"]["parameters"]["stack_name"]


def test_user_data_outlives_the_stack(resources: dict[str, Any]) -> None:
    for table in ("RequestsTable", "EventsTable"):
        assert resources[table]["DeletionPolicy"] == "Retain"
        assert resources[table]["UpdateReplacePolicy"] == "Retain"


def test_deployment_needs_jwt_key_material(tpl: dict[str, Any]) -> None:
    (assertion,) = tpl["Rules"]["JwtKeyMaterial"]["Assertions"]
    checked = {c["Fn::Not"][0]["Fn::Equals"][0]["Ref"] for c in assertion["Assert"]["Fn::Or"]}
    assert checked == {"JwtSecretArn", "JwtJwksUrl"}


def test_an_invalid_sam_template_is_rejected_with_sams_reason(tmp_path: Path) -> None:
    """The readers see the template through SAM's own transform: what SAM rejects, they reject."""
    tpl = T.load_template(_write(tmp_path, SYNTHETIC.replace("    Runtime: python3.12\n", "", 1)))
    with pytest.raises(ValueError, match=r"SAM rejects it: .*Runtime and Handler needs to be present"):
        T.functions(tpl)


def test_translation_is_plain_cloudformation_and_callers_get_their_own_copy(tmp_path: Path) -> None:
    tpl = T.load_template(_write(tmp_path, SYNTHETIC))
    first = T.translate(tpl)
    assert first["Resources"]["Fn"]["Type"] == "AWS::Lambda::Function"
    assert first["Resources"]["FnS"]["Type"] == "AWS::Lambda::EventSourceMapping"  # from the function's Events
    # The local definition path travels through the transform as the placeholder S3 location's key.
    assert first["Resources"]["Machine"]["Properties"]["DefinitionS3Location"] == {
        "Bucket": T.LOCAL_BUCKET,
        "Key": "sm/flow.json",
    }
    first["Resources"].clear()
    assert "Fn" in T.translate(tpl)["Resources"]
    assert tpl["Resources"]["Fn"]["Type"] == "AWS::Serverless::Function"  # the input is left as written
    plain = {"Resources": {"Q": {"Type": "AWS::SQS::Queue"}}}
    assert T.translate(plain) == plain and T.translate(plain) is not plain
