"""The pieces behind the edges, each on its own: the Origin rule, the exposure rule, the JWKS refetch bound of
the pinned pyjwt, the fault injectors (seeded, repeatable, retried by botocore like real faults), the Lambda
endpoint's Content-Length and fault rules, the Management API's close and liveness calls."""

from __future__ import annotations

import json
import socket
import threading
import tomllib
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import boto3
import jwt
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError, ReadTimeoutError
from cryptography.hazmat.primitives.asymmetric import rsa
from moto import mock_aws
from packaging.version import Version

from streamer.aws.connections import ConnectionManager
from streamer.errors import SendError
from streamer.faults import DATA_PATH_SERVICES, AwsFaults, FaultRule, InjectedFault, LambdaFaults
from streamer.local.exposure import exposure_refusal, is_loopback
from streamer.origins import local_origins, origin_allowed

ROOT = Path(__file__).resolve().parents[2]

# ------------------------------------------------------------------------------------------ origins


@pytest.mark.parametrize(
    ("headers", "allowed"),
    [
        ({"Origin": "https://app.example.com"}, True),
        ({"origin": "https://app.example.com"}, True),  # header names are case-insensitive
        ({"Origin": "https://app.example.com.evil.example"}, False),
        ({"Origin": "https://evil.example"}, False),
        ({"Origin": "null"}, False),
        ({"Origin": "http://app.example.com"}, False),
        ({"Origin": "https://app.example.com/"}, False),
        ({"Origin": "https://app.example.com, https://app.example.com"}, False),
        ({"Origin": "https://app.example.com", "ORIGIN": "https://evil.example"}, False),
        ({}, True),
        (None, True),
    ],
)
def test_origin_allowed(headers: dict[str, str] | None, allowed: bool) -> None:
    assert origin_allowed(headers, ["https://app.example.com"]) is allowed


def test_a_missing_origin_can_be_refused() -> None:
    assert origin_allowed({}, ["https://app.example.com"], allow_missing=False) is False


def test_local_origins() -> None:
    assert local_origins("127.0.0.1", 8765) == (
        "http://127.0.0.1:8765",
        "http://localhost:8765",
    )
    assert local_origins("::1", 1) == ("http://127.0.0.1:1", "http://[::1]:1", "http://localhost:1")
    assert local_origins("192.0.2.7", 80) == ("http://192.0.2.7:80",)


# ----------------------------------------------------------------------------------------- exposure


@pytest.mark.parametrize(
    ("host", "loopback"),
    [("127.0.0.1", True), ("127.5.5.5", True), ("::1", True), ("[::1]", True), ("localhost", True),
     ("0.0.0.0", False), ("::", False), ("192.0.2.1", False), ("example.com", False)],
)  # fmt: skip
def test_is_loopback(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


def test_exposure_refusal() -> None:
    assert exposure_refusal("127.0.0.1", {}) is None
    assert exposure_refusal("0.0.0.0", {"STREAMER_JWT_SECRET": "x" * 40}) is None
    reason = exposure_refusal("0.0.0.0", {})
    assert reason is not None and "PUBLIC development secret" in reason


# --------------------------------------------------------------------------------- pyjwt and JWKS


def test_pyjwt_is_pinned_to_a_version_that_bounds_jwks_refetches() -> None:
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    (spec,) = [d for d in deps if d.startswith("pyjwt")]
    assert ">=2.15.1" in spec
    assert Version(jwt.__version__) >= Version("2.15.1")


class _Jwks:
    def __init__(self, jwk: dict[str, Any]) -> None:
        self.hits = 0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                outer.hits += 1
                body = json.dumps({"keys": [jwk]}).encode()
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/jwks.json"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture
def jwks_server(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[_Jwks, rsa.RSAPrivateKey]]:
    for name in ("http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key()))
    jwk.update({"kid": "good", "alg": "RS256", "use": "sig"})
    server = _Jwks(jwk)
    yield server, key
    server.server.shutdown()
    server.server.server_close()


def test_unknown_kids_do_not_refetch_the_jwks_each_time(jwks_server: tuple[_Jwks, Any]) -> None:
    from streamer.auth import AuthConfig, Authenticator, AuthError

    server, key = jwks_server
    auth = Authenticator(AuthConfig(algorithms=("RS256",), jwks_url=server.url))
    import time

    now = int(time.time())
    good = jwt.encode({"sub": "u", "iat": now, "exp": now + 60}, key, algorithm="RS256", headers={"kid": "good"})
    assert auth.verify(good).user_id == "u"
    for i in range(100):
        forged = jwt.encode({"sub": "u", "iat": now, "exp": now + 60}, key, algorithm="RS256", headers={"kid": f"k{i}"})
        with pytest.raises(AuthError):
            auth.verify(forged)
    assert server.hits <= 2  # the first fetch, and at most one forced refresh within the cooldown


# ---------------------------------------------------------------------------------- AWS fault hooks


def _ddb(attempts: int = 1) -> Any:
    return boto3.client(
        "dynamodb", region_name="us-east-1", config=Config(retries={"mode": "standard", "total_max_attempts": attempts})
    )


@pytest.mark.parametrize(
    ("kind", "code", "status"),
    [
        ("throttle", "ThrottlingException", 400),
        ("ddb_throttle", "ProvisionedThroughputExceededException", 400),
        ("limit", "LimitExceededException", 429),
        ("5xx", "InternalServerError", 500),
        ("unavailable", "ServiceUnavailable", 503),
        ("gone", "GoneException", 410),
    ],
)
def test_each_fault_kind_is_what_the_service_would_answer(kind: str, code: str, status: int) -> None:
    with mock_aws():
        client = _ddb()
        AwsFaults([FaultRule("dynamodb", "ListTables", 1.0, (kind,))]).attach(client)
        with pytest.raises(ClientError) as info:
            client.list_tables()
        assert info.value.response["Error"]["Code"] == code
        assert info.value.response["ResponseMetadata"]["HTTPStatusCode"] == status


def test_timeouts_are_transport_errors_and_other_operations_pass() -> None:
    with mock_aws():
        client = _ddb()
        faults = AwsFaults([FaultRule("dynamodb", "ListTables", 1.0, ("timeout",))])
        faults.attach(client)
        with pytest.raises(ReadTimeoutError):
            client.list_tables()
        client.describe_limits()  # another operation: untouched
        assert faults.injected == {"dynamodb.ListTables:timeout": 1} and faults.calls == 2


def test_faults_are_seeded_and_retried_by_botocore() -> None:
    def run(seed: int) -> tuple[dict[str, int], int, list[str]]:
        with mock_aws():
            client = _ddb(attempts=6)
            faults = AwsFaults([FaultRule("dynamodb", "*", 0.2, ("throttle", "5xx", "timeout"))], seed=seed)
            faults.attach(client)
            outcomes = []
            for _ in range(40):
                try:
                    client.list_tables()
                    outcomes.append("ok")
                except (ClientError, ReadTimeoutError) as exc:  # six faults in a row: retries exhausted
                    outcomes.append(type(exc).__name__)
            return faults.injected, faults.calls, outcomes

    first, second, other = run(7), run(7), run(8)
    assert first == second and first != other  # one seed, one sequence
    injected, calls, outcomes = first
    assert sum(injected.values()) > 0 and calls == outcomes.count("ok") + sum(injected.values())  # retried …
    assert outcomes.count("ok") >= 38  # … and botocore's standard mode absorbed (nearly) all of them


def test_fault_rules_are_checked() -> None:
    with pytest.raises(ValueError, match="rate"):
        FaultRule(rate=1.5)
    with pytest.raises(ValueError, match="unknown fault kinds"):
        FaultRule(kinds=("meteor",))


def test_the_management_api_close_and_liveness(mgmt_api: Any) -> None:
    faults = AwsFaults([FaultRule("apigatewaymanagementapi", "GetConnection", 1.0, ("5xx",))], enabled=False)
    manager = ConnectionManager(mgmt_api.url, max_retries=0)
    faults.attach(manager.client)
    mgmt_api.open("c1")
    assert manager.close("c1") is True
    assert manager.close("c1") is False  # already gone (410)
    assert mgmt_api.deleted == ["c1"]
    faults.enabled = True
    with pytest.raises(SendError):
        manager.alive("c1")  # API Gateway cannot tell: the caller decides
    faults.rules = [FaultRule("apigatewaymanagementapi", "DeleteConnection", 1.0, ("limit",))]
    with pytest.raises(SendError):
        manager.close("c2")
    faults.rules = [FaultRule("apigatewaymanagementapi", "*", 1.0, ("timeout",))]
    with pytest.raises(SendError):
        manager.close("c2")
    with pytest.raises(SendError):
        manager.alive("c2")


# ------------------------------------------------------------------------------ Lambda endpoint faults


def test_lambda_fault_specs() -> None:
    assert LambdaFaults.parse(None) is None and LambdaFaults.parse(" ") is None
    faults = LambdaFaults.parse("exit:StepRunnerFunction:3,raise:RouterFunction:*")
    assert faults is not None and faults.rules == [("exit", "StepRunnerFunction", 3), ("raise", "RouterFunction", 0)]
    for bad in ("boom:F:1", "exit:F:0", "exit::1", "exit:F:x", "exit"):
        with pytest.raises(ValueError, match="STREAMER_TEST_FAULTS"):
            LambdaFaults.parse(bad)


def test_exit_rules_are_used_one_per_endpoint_process() -> None:
    """A restarted endpoint (its supervisor sets STREAMER_LOCAL_RESTARTS) counts invocations from its start and
    takes the next exit rule: ``exit:F:40,exit:F:300`` kills it exactly twice, not at every 40th invocation."""
    spec = "exit:F:40,raise:G:*,exit:F:300"
    env = {"STREAMER_TEST_FAULTS": spec}
    first, second, third = (LambdaFaults.from_env({**env, "STREAMER_LOCAL_RESTARTS": str(n)}) for n in (0, 1, 2))
    assert LambdaFaults.from_env(env) == first
    assert first is not None and first.rules == [("exit", "F", 40), ("raise", "G", 0)]
    assert second is not None and second.rules == [("raise", "G", 0), ("exit", "F", 300)]
    assert third is not None and third.rules == [("raise", "G", 0)]
    assert LambdaFaults.parse("exit:F:1", restarts=1) is None


def test_lambda_faults_exit_on_the_nth_invocation_and_raise_on_every() -> None:
    exits: list[int] = []
    faults = LambdaFaults([("exit", "Step", 2), ("raise", "Router", 0)], exit=exits.append)
    faults.before_invoke("Step")
    assert exits == []
    faults.before_invoke("Step")
    assert exits == [137]
    for _ in range(3):
        with pytest.raises(InjectedFault):
            faults.before_invoke("Router")
    faults.before_invoke("Other")
    assert faults.counts == {"Step": 2, "Router": 3, "Other": 1}


def test_aws_fault_specs() -> None:
    spec = "aws:0.2:7:throttle+5xx+timeout,exit:StepRunnerFunction:40"
    faults = AwsFaults.parse(spec)
    assert faults is not None and faults.seed == 7
    assert faults.rules == [FaultRule(s, "*", 0.2, ("throttle", "5xx", "timeout")) for s in DATA_PATH_SERVICES]
    lambda_faults = LambdaFaults.parse(spec)  # each reads its own rules
    assert lambda_faults is not None and lambda_faults.rules == [("exit", "StepRunnerFunction", 40)]
    assert LambdaFaults.parse("aws:0.5:1") is None and AwsFaults.parse("exit:F:1") is None
    assert AwsFaults.parse(None) is None
    default = AwsFaults.parse(" aws:1:0 ")
    assert default is not None and {r.kinds for r in default.rules} == {FaultRule.kinds}
    for bad in ("aws", "aws:x:1", "aws:0.2:y", "aws:2:1", "aws:0.2:1:meteor", "aws:0.2:1:", "aws:0.1:1,aws:0.2:2"):
        with pytest.raises(ValueError, match="STREAMER_TEST_FAULTS"):
            AwsFaults.parse(bad)


def test_an_installed_aws_rule_fails_its_share_of_a_sessions_calls() -> None:
    """Installed on a session (as the local Lambda endpoint installs it on boto3's default session): the data
    path's clients created from it afterwards fail about the configured share of their calls, the same calls
    for the same seed; another service's client and another session's are untouched."""

    def run(seed: int) -> tuple[list[bool], int, AwsFaults]:
        with mock_aws():
            faults = AwsFaults.parse(f"aws:0.2:{seed}")
            assert faults is not None
            session = boto3.session.Session(region_name="us-east-1")
            faults.install(session)
            no_retries = Config(retries={"max_attempts": 0, "mode": "standard"})
            ddb, sfn = session.client("dynamodb", config=no_retries), session.client("stepfunctions", config=no_retries)
            failed = []
            for i in range(500):
                try:
                    ddb.list_tables() if i % 2 else sfn.list_state_machines()
                    failed.append(False)
                except (ClientError, ReadTimeoutError):
                    failed.append(True)
            session.client("sts").get_caller_identity()
            boto3.session.Session(region_name="us-east-1").client("dynamodb").list_tables()
            untouched = faults.calls
            return failed, untouched, faults

    first, calls, faults = run(3)
    assert first == run(3)[0] and first != run(4)[0]  # one seed, one sequence
    assert 0.15 <= sum(first) / len(first) <= 0.25
    # The STS call was seen and passed (no rule for it); the other session's call was never seen.
    assert faults.total_injected == sum(first) and calls == 501
    assert {key.split(".")[0] for key in faults.injected} == {"dynamodb", "sfn"}


def _endpoint(monkeypatch: pytest.MonkeyPatch, spec: str | None) -> Any:
    from streamer.deploy.template import FunctionSpec
    from streamer.local.lambda_endpoint import LambdaEndpoint

    if spec is None:
        monkeypatch.delenv("STREAMER_TEST_FAULTS", raising=False)
    else:
        monkeypatch.setenv("STREAMER_TEST_FAULTS", spec)
    specs = {"Echo": FunctionSpec(handler=lambda event, context: {"echo": event})}
    server = LambdaEndpoint(("127.0.0.1", 0), specs, enforce_timeouts=False)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def _raw(server: Any, head: bytes) -> str:
    host, port = server.server_address[:2]
    with socket.create_connection((host, port), timeout=10) as sock:
        sock.sendall(head)
        return sock.recv(4096).decode(errors="replace")


def test_lambda_endpoint_refuses_bad_content_lengths_without_reading(monkeypatch: pytest.MonkeyPatch) -> None:
    server = _endpoint(monkeypatch, None)
    try:
        path = b"POST /2015-03-31/functions/Echo/invocations HTTP/1.1\r\nHost: x\r\n"
        assert _raw(server, path + b"Content-Length: 99999999999\r\n\r\n").startswith("HTTP/1.1 413")
        assert _raw(server, path + b"Content-Length: -5\r\n\r\n").startswith("HTTP/1.1 400")
        assert _raw(server, path + b"Content-Length: ten\r\n\r\n").startswith("HTTP/1.1 400")
        assert _raw(server, path + b"Transfer-Encoding: chunked\r\n\r\n").startswith("HTTP/1.1 400")
        ok = _raw(server, path + b"Content-Length: 2\r\n\r\n{}")
        assert ok.startswith("HTTP/1.1 200") and f"Content-Length: {len(json.dumps({'echo': {}}))}" in ok
    finally:
        server.shutdown()
        server.server_close()


def test_lambda_endpoint_injected_crash(monkeypatch: pytest.MonkeyPatch) -> None:
    server = _endpoint(monkeypatch, "raise:Echo:2")
    try:
        assert server.invoke("Echo", {}) == (True, {"echo": {}})
        ok, body = server.invoke("Echo", {})
        assert not ok and body["errorType"] == "InjectedFault"
        assert server.invoke("Echo", {})[0]
    finally:
        server.shutdown()
        server.server_close()


# ------------------------------------------------------------------------------------------ template


@pytest.fixture(scope="module")
def template() -> dict[str, Any]:
    from streamer.deploy.template import load_template

    return load_template(ROOT / "infra" / "template.yaml")


def test_execution_data_stays_out_of_the_logs_by_default(template: dict[str, Any]) -> None:
    assert template["Parameters"]["StateMachineLogExecutionData"]["Default"] == "false"
    machines = [r for r in template["Resources"].values() if r["Type"] == "AWS::Serverless::StateMachine"]
    assert machines
    for machine in machines:
        logging_ = machine["Properties"]["Logging"]
        assert logging_["IncludeExecutionData"] == {"Fn::If": ["LogExecutionData", True, False]}


def test_every_function_has_an_unreserved_by_default_concurrency_parameter(template: dict[str, Any]) -> None:
    functions = {k: r for k, r in template["Resources"].items() if r["Type"] == "AWS::Serverless::Function"}
    assert len(functions) >= 7
    for logical_id, fn in functions.items():
        name = logical_id.removesuffix("Function")
        if isinstance(fn["Properties"].get("ReservedConcurrentExecutions"), int):
            continue  # fixed by design (the reconciler: one sweep at a time)
        assert template["Parameters"][f"{name}ReservedConcurrency"]["Default"] == -1
        assert fn["Properties"]["ReservedConcurrentExecutions"] == {
            "Fn::If": [f"Reserve{name}", {"Ref": f"{name}ReservedConcurrency"}, {"Ref": "AWS::NoValue"}]
        }


def test_no_resource_pattern_matches_a_sibling_stack(template: dict[str, Any]) -> None:
    """``${AWS::StackName}-*`` in an IAM resource also matches ``<stack>-staging-*``."""
    text = json.dumps(template)
    assert "${AWS::StackName}-*" not in text


def test_quota_defaults_match_the_settings(template: dict[str, Any]) -> None:
    from streamer.config import Settings

    params, d = template["Parameters"], Settings()
    assert params["MaxConnectionsPerUser"]["Default"] == d.max_connections_per_user == 10
    assert params["MaxRequestsInFlightPerUser"]["Default"] == d.max_requests_in_flight_per_user == 100
    assert params["MaxMessagesPerSecondPerUser"]["Default"] == d.max_messages_per_second_per_user == 20
    env = {"STREAMER_ALLOWED_ORIGINS": " https://a.example , https://b.example,", "STREAMER_ALLOW_MISSING_ORIGIN": "no"}
    s = Settings.from_env(env)
    assert s.allowed_origins == ("https://a.example", "https://b.example") and s.allow_missing_origin is False
