"""The handlers' metrics (CloudWatch EMF on stdout), their log correlation and the tracer, on moto.

A whole request goes through the real handlers — ``$connect``, ``$default`` (submit), the stream router with
the request's INSERT record, the step runner and notify called by moto's Step Functions interpreter through
the local Lambda endpoint — and the EMF documents they print are parsed and checked against
``docs/observability.md``; so are the log lines they write, which must all carry the request's id.
"""

from __future__ import annotations

import io
import json
import logging
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import jwt
import pytest

from streamer import metrics
from streamer.deploy.template import FunctionSpec
from streamer.handlers import _runtime, connect, notify, router, stream_router
from streamer.local.lambda_endpoint import LambdaContext
from tests.functional.conftest import load_event

SECRET = "functional-test-secret-0123456789abcdef"
CID = "Mtr1cs0AAdIZIAMC="
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def wired(service: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("STREAMER_JWT_SECRET", SECRET)
    monkeypatch.setenv("STREAMER_JWT_ISSUER", "https://issuer.test")
    monkeypatch.setenv("STREAMER_JWT_AUDIENCE", "streamer")
    for name in ("STREAMER_JWT_ALGORITHMS", "STREAMER_JWT_JWKS_URL", metrics.LOCAL_FILE_ENV, "POWERTOOLS_METRICS_DISABLED"):
        monkeypatch.delenv(name, raising=False)
    connect.get_authenticator.cache_clear()
    _runtime.set_service(service)
    yield
    _runtime.reset()
    connect.get_authenticator.cache_clear()


def ctx(name: str) -> LambdaContext:
    """The context the Lambda runtime passes (the local endpoint's own class)."""
    return LambdaContext(name, FunctionSpec(handler="x.y", timeout=30), str(uuid.uuid4()), "us-east-1", "123456789012")


def token(**over: Any) -> str:
    now = int(time.time())
    claims = {"sub": "alice", "iat": now, "exp": now + 600, "iss": "https://issuer.test", "aud": "streamer"}
    claims.update(over)
    return jwt.encode({k: v for k, v in claims.items() if v is not None}, SECRET, algorithm="HS256")


def connect_event(tok: str | None, cid: str = CID) -> dict[str, Any]:
    ev = load_event("connect", requestContext={"connectionId": cid})
    ev["headers"].pop("Sec-WebSocket-Protocol", None)
    ev["headers"].pop("Origin", None)
    if tok is not None:
        ev["headers"]["Sec-WebSocket-Protocol"] = f"streamer.v1, bearer.{tok}"
    return ev


def message(body: Any, cid: str = CID) -> dict[str, Any]:
    return load_event("message", body=json.dumps(body), requestContext={"connectionId": cid})


def emf(out: str) -> list[dict[str, Any]]:
    """The EMF documents among the lines printed on stdout."""
    return [json.loads(line) for line in out.splitlines() if line.startswith('{"_aws"')]


def values(docs: list[dict[str, Any]], name: str, **dims: str) -> list[float]:
    """Every value of metric ``name`` whose document has these dimension values."""
    out: list[float] = []
    for d in docs:
        names = {m["Name"] for c in d["_aws"]["CloudWatchMetrics"] for m in c["Metrics"]}
        if name in names and all(d.get(k) == v for k, v in dims.items()):
            out.extend(d[name])
    return out


@pytest.fixture
def log_lines() -> Iterator[Callable[[], list[dict[str, Any]]]]:
    """The JSON log lines the handlers wrote so far in the test, formatted by their Powertools formatter."""
    logger = _runtime.get_logger()
    buf = io.StringIO()
    handler = logging.StreamHandler(buf)
    handler.setFormatter(logger.registered_formatter)
    logger.addHandler(handler)
    yield lambda: [json.loads(line) for line in buf.getvalue().splitlines()]
    logger.removeHandler(handler)


def insert_record(ddb: Any) -> dict[str, Any]:
    """The requests stream's INSERT record of the one stored request (view type NEW_AND_OLD_IMAGES)."""
    (item,) = ddb.scan(TableName="streamer-requests")["Items"]
    return {
        "eventID": uuid.uuid4().hex,
        "eventName": "INSERT",
        "eventSource": "aws:dynamodb",
        "awsRegion": "us-east-1",
        "dynamodb": {
            "Keys": {k: item[k] for k in ("pk", "sk") if k in item},
            "NewImage": item,
            "SequenceNumber": "100",
            "StreamViewType": "NEW_AND_OLD_IMAGES",
        },
    }


# ------------------------------------------------------------------------------------- a whole request


def test_a_request_emits_the_documented_metrics_and_its_log_lines_share_its_request_id(
    service: Any,
    ddb: Any,
    mgmt_api: Any,
    capsys: pytest.CaptureFixture[str],
    log_lines: Callable[[], list[dict[str, Any]]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from streamer.testing import LocalWorkflows

    monkeypatch.setenv("POWERTOOLS_METRICS_NAMESPACE", "streamer-test")
    assert connect.handler(connect_event(token()), ctx("ConnectFunction"))["statusCode"] == 200
    mgmt_api.open(CID)
    with LocalWorkflows(sink=service, notify=notify.handler) as local:
        local.deploy("echo")
        router.handler(message({"action": "submit", "workflow": "echo", "payload": {"message": "hi"}}), ctx("RouterFunction"))
        (ack,) = mgmt_api.received(CID)
        rid = ack["request_id"]
        out = stream_router.handler({"Records": [insert_record(ddb)]}, ctx("StreamRouterFunction"))
        assert out == {"batchItemFailures": []}
        deadline = time.monotonic() + 30
        while service.requests.get("alice", rid).status.value not in ("SUCCEEDED", "FAILED"):
            assert time.monotonic() < deadline, "the execution did not end"
            time.sleep(0.05)
        router.handler(message({"action": "status", "request_id": rid}), ctx("RouterFunction"))
    frames = mgmt_api.received(CID)
    assert frames[-2]["type"] == "result" and frames[-1]["type"] == "status"

    docs = emf(capsys.readouterr().out)
    # The shape CloudWatch reads: namespace, dimension sets, metric definitions, values at the top level.
    for d in docs:
        (directive,) = d["_aws"]["CloudWatchMetrics"]
        assert directive["Namespace"] == "streamer-test"
        assert isinstance(d["_aws"]["Timestamp"], int)
        assert all(["service", *s[1:]] == s for s in directive["Dimensions"]) and d["service"] == "streamer"
        for m in directive["Metrics"]:
            assert m["Unit"] in ("Count", "Milliseconds") and isinstance(d[m["Name"]], list)
    by_workflow = [
        d
        for d in docs
        if d.get("workflow") == "echo" and d["_aws"]["CloudWatchMetrics"][0]["Dimensions"] == [["service"], ["service", "workflow"]]
    ]
    assert values(by_workflow, "RequestsSubmitted") == [1.0]
    assert values(by_workflow, "RequestsStarted") == [1.0]
    assert values(by_workflow, "RequestsSucceeded") == [1.0]
    assert values(docs, "RequestsFailed") == []
    (duration,) = values(by_workflow, "RequestDuration")
    assert 0 <= duration <= 30_000
    assert values(docs, "ProgressEventsPushed", workflow="echo") == [1.0] * len(
        [f for f in frames if f["type"] == "progress"]
    )
    assert values(docs, "StepAttempts", step="echo") == [1.0]
    (step_ms,) = values(docs, "StepDuration", step="echo")
    assert step_ms >= 0
    assert values(docs, "StreamRecords", outcome="started") == [1.0]

    # One search by request_id finds the request's lines in every handler it went through.
    lines = log_lines()
    mine = [line for line in lines if line.get("request_id") == rid]
    assert {line["function_name"] for line in mine} >= {
        "RouterFunction",
        "StreamRouterFunction",
        "StepRunnerFunction",
        "NotifyFunction",
    }
    for line in mine:
        assert isinstance(line["cold_start"], bool) and line["function_request_id"]
        assert line.get("workflow") == "echo" or line["function_name"] == "RouterFunction"
    # Every line of the invocations that work on the request carries its id (the connect has none yet).
    for line in lines:
        if line.get("function_name") in ("StreamRouterFunction", "StepRunnerFunction", "NotifyFunction"):
            assert line.get("request_id") == rid, line
    (connected,) = [line for line in lines if line["message"] == "connected"]
    assert "request_id" not in connected and connected["function_name"] == "ConnectFunction"


# ------------------------------------------------------------------------------------- one metric each


@pytest.mark.parametrize(
    ("tok", "reason", "status"),
    [
        (None, "no_token", 401),
        ("not-a-jwt", "malformed", 401),
        ("expired", "expired", 401),
        ("bad-signature", "invalid_signature", 401),
        ("wrong-audience", "invalid_claims", 401),
    ],
)
def test_refused_connects_are_counted_by_reason(
    tok: str | None, reason: str, status: int, capsys: pytest.CaptureFixture[str]
) -> None:
    now = int(time.time())
    tokens = {
        "expired": token(iat=now - 4000, exp=now - 3600),
        "bad-signature": jwt.encode({"sub": "a", "iat": now, "exp": now + 60}, "x" * 40, algorithm="HS256"),
        "wrong-audience": token(aud="someone-else"),
    }
    resp = connect.handler(connect_event(tokens.get(tok or "", tok)), ctx("ConnectFunction"))
    assert resp["statusCode"] == status
    docs = emf(capsys.readouterr().out)
    assert values(docs, "ConnectsRefused", reason=reason) == [1.0]
    (doc,) = [d for d in docs if "ConnectsRefused" in d]
    assert doc["_aws"]["CloudWatchMetrics"][0]["Dimensions"] == [["service"], ["service", "reason"]]
    assert reason in metrics.CONNECT_REFUSAL_REASONS


def test_a_scope_refusal_is_forbidden_and_a_malformed_event_bad_request(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STREAMER_JWT_REQUIRED_SCOPE", "streamer:connect")
    connect.get_authenticator.cache_clear()
    assert connect.handler(connect_event(token()), ctx("ConnectFunction"))["statusCode"] == 403
    assert connect.handler({"requestContext": {}}, ctx("ConnectFunction"))["statusCode"] == 400
    docs = emf(capsys.readouterr().out)
    assert values(docs, "ConnectsRefused", reason="forbidden") == [1.0]
    assert values(docs, "ConnectsRefused", reason="bad_request") == [1.0]


def test_refusal_reasons_stay_a_bounded_set() -> None:
    for text in ("missing claim: exp", "invalid claim: iat", "invalid issuer"):
        assert metrics.connect_refusal_reason(text) == "invalid_claims"
    assert metrics.connect_refusal_reason("anything new and unforeseen") == "invalid"
    assert metrics.connect_refusal_reason(None) == "no_token"
    assert metrics.connect_refusal_reason("insufficient scope", 403) == "forbidden"


def test_rate_limited_messages_are_counted(
    service: Any, mgmt_api: Any, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import dataclasses

    monkeypatch.setattr(service, "settings", dataclasses.replace(service.settings, rate_limit_per_minute=2))
    connect.handler(connect_event(token()), ctx("ConnectFunction"))
    mgmt_api.open(CID)
    for _ in range(4):
        router.handler(message({"action": "ping"}), ctx("RouterFunction"))
    assert [f.get("code") for f in mgmt_api.received(CID)] == [None, None, "RATE_LIMITED", "RATE_LIMITED"]
    docs = emf(capsys.readouterr().out)
    assert values(docs, "MessagesRateLimited") == [1.0, 1.0]
    (doc, _) = [d for d in docs if "MessagesRateLimited" in d]
    assert doc["_aws"]["CloudWatchMetrics"][0]["Dimensions"] == [["service"]]


def test_pushes_to_gone_connections_are_counted(service: Any, mgmt_api: Any, capsys: pytest.CaptureFixture[str]) -> None:
    from streamer.models import Connection

    now = int(time.time())
    for cid in ("live", "gone-1", "gone-2"):
        service.connections.put(Connection(connection_id=cid, user_id="bob", connected_at=now, expires_at=now + 600))
    mgmt_api.open("live")
    ref = service.submit("bob", "echo", {"message": "x"}, "r-gone").request.ref
    event = {"kind": "progress", "request": ref.model_dump(), "step": "echo", "percent": 50, "message": "half"}
    notify.handler(event, ctx("NotifyFunction"))
    assert [f["percent"] for f in mgmt_api.received("live")] == [50]
    docs = emf(capsys.readouterr().out)
    assert values(docs, "PushesToGoneConnections") == [2.0]
    assert values(docs, "ProgressEventsPushed", workflow="echo") == [1.0]
    assert values(docs, "PushesFailed") == []
    assert service.connections.get("gone-1") is None


def test_stream_records_that_fail_are_counted_as_retried(capsys: pytest.CaptureFixture[str]) -> None:
    broken = {"eventID": "1", "eventName": "INSERT", "eventSource": "aws:dynamodb", "dynamodb": {"Keys": {}}}
    modify = {"eventID": "2", "eventName": "MODIFY", "eventSource": "aws:dynamodb", "dynamodb": {"Keys": {}}}
    out = stream_router.handler({"Records": [broken, modify]}, ctx("StreamRouterFunction"))
    assert len(out["batchItemFailures"]) == 1
    docs = emf(capsys.readouterr().out)
    assert values(docs, "StreamRecordsRetried") == [1.0]
    assert values(docs, "StreamRecords", outcome="ignored") == [1.0]


def test_a_failed_step_counts_its_error_and_the_request_failed(
    service: Any, mgmt_api: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    from streamer.testing import LocalWorkflows

    submitted = service.submit("alice", "echo", {"message": "x", "fail": True}, "r-fail").request
    with LocalWorkflows(sink=service, notify=notify.handler) as local:
        run = local.run("echo", submitted.payload, request=submitted.ref)
    assert run.status == "FAILED"
    docs = emf(capsys.readouterr().out)
    assert values(docs, "StepErrors", step="echo", error="StepFailedError") == [1.0]
    assert values(docs, "RequestsFailed", workflow="echo") == [1.0]
    assert values(docs, "RequestsSucceeded") == []


# ------------------------------------------------------------------------------------- the buffer


def test_nothing_is_written_outside_an_invocation(capsys: pytest.CaptureFixture[str]) -> None:
    metrics.add(metrics.MESSAGES_RATE_LIMITED)
    assert capsys.readouterr().out == ""


def test_one_flush_per_invocation_and_a_late_point_is_not_lost(capsys: pytest.CaptureFixture[str]) -> None:
    import contextvars

    late: list[contextvars.Context] = []
    with metrics.invocation():
        metrics.add(metrics.STEP_DURATION, 5, step="a")
        metrics.add(metrics.STEP_DURATION, 7, step="a")
        metrics.add(metrics.STEP_ATTEMPTS, step="a")
        late.append(contextvars.copy_context())  # what a progress timer thread runs in
        assert capsys.readouterr().out == ""  # nothing before the end of the invocation
    (doc,) = emf(capsys.readouterr().out)
    assert doc["StepDuration"] == [5.0, 7.0] and doc["StepAttempts"] == [1.0]
    late[0].run(metrics.add, metrics.STEP_ATTEMPTS, step="a")  # after the flush: written on its own
    (alone,) = emf(capsys.readouterr().out)
    assert alone["StepAttempts"] == [1.0]


def test_a_hundred_values_stay_in_our_documents(capsys: pytest.CaptureFixture[str]) -> None:
    """Powertools' provider prints by itself at 100 values of a metric; documents are cut before that."""
    with metrics.invocation():
        for i in range(250):
            metrics.add(metrics.STEP_DURATION, i, step="many")
    docs = emf(capsys.readouterr().out)
    assert [len(d["StepDuration"]) for d in docs] == [99, 99, 52]
    assert sorted(v for d in docs for v in d["StepDuration"]) == [float(i) for i in range(250)]


def test_wrong_dimensions_are_a_programming_error() -> None:
    with pytest.raises(ValueError, match="RequestsFailed takes dimensions"):
        metrics.add(metrics.REQUESTS_FAILED)
    with pytest.raises(ValueError):
        metrics.add(metrics.MESSAGES_RATE_LIMITED, workflow="x")


def test_metrics_can_be_disabled(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POWERTOOLS_METRICS_DISABLED", "true")
    with metrics.invocation():
        metrics.add(metrics.MESSAGES_RATE_LIMITED)
    assert capsys.readouterr().out == ""


def test_a_failing_handler_still_flushes(capsys: pytest.CaptureFixture[str]) -> None:
    @_runtime.lambda_handler
    def boom(event: dict[str, Any], context: Any) -> dict[str, Any]:
        metrics.add(metrics.PUSHES_FAILED)
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        boom({}, ctx("BoomFunction"))
    docs = emf(capsys.readouterr().out)
    assert values(docs, "PushesFailed") == [1.0]
    assert values(docs, "ColdStart", function_name="BoomFunction") == [1.0]
    with pytest.raises(RuntimeError):
        boom({}, ctx("BoomFunction"))
    assert values(emf(capsys.readouterr().out), "ColdStart") == []  # warm now


# ------------------------------------------------------------------------------------- locally


def test_locally_the_lines_go_to_the_metrics_file_and_read_back(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "m" / "local.metrics.jsonl"
    monkeypatch.setenv(metrics.LOCAL_FILE_ENV, str(path))
    connect.handler(connect_event(None), ctx("ConnectFunction"))
    assert capsys.readouterr().out == ""  # not on stdout
    series = metrics.read_local()
    assert [(s.name, dict(s.dimensions), s.values) for s in series if s.name == "ConnectsRefused"] == [
        ("ConnectsRefused", {"service": "streamer", "reason": "no_token"}, (1.0,))
    ]


def test_the_local_file_rotates_and_is_read_whole(tmp_path: Path) -> None:
    path = tmp_path / "metrics.jsonl"
    file = metrics.JsonLinesFile(path, max_bytes=2000)
    pts = [metrics.Point(metrics.STEP_DURATION, float(i), (("step", "s"),)) for i in range(1, 101)]
    for p in pts:
        (doc,) = metrics.emf_documents([p])
        file.append(json.dumps(doc))
    assert path.with_name("metrics.jsonl.1").exists()
    assert path.stat().st_size <= 2000 + 400
    read = metrics.read_local(path)
    assert 0 < len(read) < 100  # older lines rotated away: bounded
    assert [s.values[0] for s in read] == sorted(s.values[0] for s in read)
    path.write_text(path.read_text() + '{"_aws": "torn li\n')  # a line being written as we read
    assert len(metrics.read_local(path)) == len(read)
    assert metrics.read_local(tmp_path / "absent.jsonl") == []


def test_summarize_counts_percentiles_and_per_minute_buckets() -> None:
    now = 1_800_000_000.0

    def series(name: str, ago: float, vals: tuple[float, ...], **dims: str) -> metrics.Series:
        return metrics.Series(now - ago, name, "Count", (("service", "streamer"), *dims.items()), vals)

    rows = metrics.summarize(
        [
            series("RequestDuration", 30, tuple(float(v) for v in range(1, 101)), workflow="echo"),
            series("RequestsSubmitted", 30, (1.0, 1.0), workflow="echo"),
            series("RequestsSubmitted", 90, (1.0,), workflow="textstats"),
            series("RequestsSubmitted", 7200, (1.0,), workflow="echo"),  # outside the hour
        ],
        now=now,
    )
    by = {(r["name"], tuple(r["dimensions"].items())): r for r in rows}
    dur = by[("RequestDuration", (("workflow", "echo"),))]
    assert (dur["samples"], dur["p50"], dur["p99"], dur["min"], dur["max"]) == (100, 50.0, 99.0, 1.0, 100.0)
    echo = by[("RequestsSubmitted", (("workflow", "echo"),))]
    assert echo["sum"] == 2.0 and len(echo["buckets"]) == 60
    assert echo["buckets"][-1][1] == 2.0 and sum(b for _, b in echo["buckets"]) == 2.0
    assert by[("RequestsSubmitted", (("workflow", "textstats"),))]["buckets"][-2][1] == 1.0
    assert metrics.summarize([], now=now) == []
    totals = metrics.summarize(
        [series("RequestsSubmitted", 30, (1.0,), workflow="a"), series("RequestsSubmitted", 40, (1.0,), workflow="b")],
        now=now,
        by=(),
    )
    assert [(r["dimensions"], r["sum"]) for r in totals] == [({}, 2.0)]


def test_parse_emf_refuses_what_is_not_emf() -> None:
    with pytest.raises(ValueError):
        metrics.parse_emf({"level": "INFO", "message": "hello"})


def test_the_local_file_sits_beside_the_state_file() -> None:
    assert metrics.local_metrics_file({"STREAMER_LOCAL_STATE_FILE": "/s/x.json"}) == Path("/s/x.metrics.jsonl")
    assert metrics.local_metrics_file({metrics.LOCAL_FILE_ENV: "/m.jsonl"}) == Path("/m.jsonl")
    assert metrics.local_metrics_file({"XDG_STATE_HOME": "/st"}) == Path("/st/streamer/local.metrics.jsonl")


# ------------------------------------------------------------------------------------- the tracer


def test_the_tracer_is_off_locally_without_warnings_or_a_daemon(tmp_path: Path) -> None:
    """With the local environment (POWERTOOLS_TRACE_DISABLED=true) and warnings as errors, importing every
    handler and running invocations prints no warning and never reaches for an X-Ray daemon."""
    code = """
import json, warnings
warnings.simplefilter("error")
from streamer.handlers import _runtime, connect, disconnect, execution_events, notify, router, step_runner, stream_router
import sys
assert _runtime.get_tracer() is None, "tracer on"
assert "aws_xray_sdk.core" not in sys.modules  # not even imported: no cold-start cost, no patching
print(json.dumps(connect.handler({"requestContext": {}}, None)))
print(json.dumps(execution_events.handler({"not": "an event"}, None)))
"""
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("AWS_XRAY", "_X_AMZN", "LAMBDA_TASK_ROOT"))
    }
    env.update(
        {
            "POWERTOOLS_TRACE_DISABLED": "true",
            "AWS_XRAY_DAEMON_ADDRESS": "127.0.0.1:9",  # if anything tried to send, it would go nowhere
            metrics.LOCAL_FILE_ENV: str(tmp_path / "m.jsonl"),
            "PYTHONWARNINGS": "error",
        }
    )
    proc = subprocess.run(
        [sys.executable, "-W", "error", "-c", code], capture_output=True, text=True, env=env, cwd=ROOT, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    assert "Warning" not in proc.stderr and "xray" not in proc.stderr.lower()
    results = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{") and "level" not in line]
    assert results == [{"statusCode": 400}, {"outcome": "unreadable"}]


def test_on_lambda_the_tracer_patches_boto3_and_annotates_the_request(tmp_path: Path) -> None:
    """With LAMBDA_TASK_ROOT set (what the Lambda runtime sets) the tracer is on and boto3/botocore are patched;
    ``correlate`` annotates the current segment."""
    code = """
import warnings
warnings.simplefilter("error")
from aws_xray_sdk.core import xray_recorder, patcher
from streamer.handlers import _runtime
t = _runtime.get_tracer()
assert t is not None and not t.disabled
assert "botocore" in patcher._PATCHED_MODULES, patcher._PATCHED_MODULES  # boto3 goes through botocore
sub = xray_recorder.begin_subsegment("## handler")  # in Lambda's facade segment (from _X_AMZN_TRACE_ID)
_runtime.correlate(request_id="r-1", workflow="echo", step="echo")
print(sorted(sub.annotations.items()))
xray_recorder.end_subsegment()
"""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("POWERTOOLS_TRACE", "AWS_SAM_LOCAL"))}
    env.update(
        {
            "LAMBDA_TASK_ROOT": str(tmp_path),
            "AWS_XRAY_DAEMON_ADDRESS": "127.0.0.1:9",
            "_X_AMZN_TRACE_ID": "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1",
        }
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=ROOT, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "[('request_id', 'r-1'), ('step', 'echo'), ('workflow', 'echo')]" in proc.stdout


# ------------------------------------------------------------------------------------- template and docs


def test_every_metric_and_reason_is_documented() -> None:
    doc = (ROOT / "docs" / "observability.md").read_text()
    for m in metrics.METRICS:
        row = next((line for line in doc.splitlines() if line.startswith(f"| `{m.name}` |")), None)
        assert row is not None, f"{m.name} is not in docs/observability.md"
        assert str(m.unit.value) in row and all(f"`{d}`" in row for d in m.dimensions), row
        assert ("rollup" in row) == m.rollup, row
    for reason in metrics.CONNECT_REFUSAL_REASONS:
        assert f"`{reason}`" in doc


def test_the_template_wires_namespace_alarms_and_tracing() -> None:
    from streamer.deploy.template import load_template

    tpl = load_template(ROOT / "infra" / "template.yaml")
    assert tpl["Parameters"]["MetricsNamespace"]["Default"] == metrics.DEFAULT_NAMESPACE
    fn = tpl["Globals"]["Function"]
    assert fn["Tracing"] == "Active"
    env = fn["Environment"]["Variables"]
    assert env["POWERTOOLS_METRICS_NAMESPACE"] == {"Ref": "MetricsNamespace"}
    assert env["POWERTOOLS_SERVICE_NAME"] == "streamer"
    resources = tpl["Resources"]
    for sm in (r for r in resources.values() if r["Type"] == "AWS::Serverless::StateMachine"):
        assert sm["Properties"]["Tracing"] == {"Enabled": True}
    alarms = {k: r["Properties"] for k, r in resources.items() if r["Type"] == "AWS::CloudWatch::Alarm"}
    assert all(a.get("AlarmDescription") for a in alarms.values())
    failed = alarms["RequestsFailedAlarm"]
    assert failed["Namespace"] == {"Ref": "MetricsNamespace"}
    assert failed["MetricName"] == metrics.REQUESTS_FAILED.name and metrics.REQUESTS_FAILED.rollup
    # The [service] dimension set the rollup publishes: the alarm's dimensions must be exactly it.
    assert failed["Dimensions"] == [{"Name": "service", "Value": env["POWERTOOLS_SERVICE_NAME"]}]
    assert alarms["StreamDeadLetterAlarm"]["MetricName"] == "ApproximateNumberOfMessagesVisible"


def test_the_local_functions_run_without_tracer_and_write_the_metrics_file(tmp_path: Path) -> None:
    from streamer.local.plan import function_environment, plan_from_template

    plan = plan_from_template(ROOT / "infra" / "template.yaml")
    env = function_environment(
        plan, gateway_http="http://g", moto_url="http://m", lambda_url="http://l", sfn_url="http://s", jwt_secret="x" * 40
    )
    assert env["POWERTOOLS_TRACE_DISABLED"] == "true"
    assert env["POWERTOOLS_METRICS_NAMESPACE"] == "streamer"
    assert env[metrics.LOCAL_FILE_ENV] == str(metrics.local_metrics_file())


def test_origin_and_quota_refusals_are_counted(
    service: Any, mgmt_api: Any, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import dataclasses

    settings = dataclasses.replace(
        service.settings,
        allowed_origins=("https://app.example",),
        max_connections_per_user=1,
        apigw_endpoint=mgmt_api.url,
    )
    monkeypatch.setattr(service, "settings", settings)
    foreign = connect_event(token(), cid="c-foreign")
    foreign["headers"]["Origin"] = "https://evil.example"
    assert connect.handler(foreign, ctx("ConnectFunction"))["statusCode"] == 403
    assert connect.handler(connect_event(token(), cid="c-1"), ctx("ConnectFunction"))["statusCode"] == 200
    mgmt_api.open("c-1")  # alive: its slot is not given back
    assert connect.handler(connect_event(token(), cid="c-2"), ctx("ConnectFunction"))["statusCode"] == 429
    docs = emf(capsys.readouterr().out)
    assert values(docs, "ConnectsRefused", reason="origin") == [1.0]
    assert values(docs, "ConnectsRefused", reason="quota") == [1.0]


def test_overview_gives_the_consoles_figures_from_the_metrics(tmp_path: Path) -> None:
    now = 1_800_000_000.0
    path = tmp_path / "local.metrics.jsonl"
    file = metrics.JsonLinesFile(path)
    points = [
        metrics.Point(metrics.REQUESTS_SUBMITTED, 1, (("workflow", "echo"),)),
        metrics.Point(metrics.REQUESTS_SUBMITTED, 1, (("workflow", "echo"),)),
        metrics.Point(metrics.REQUESTS_SUBMITTED, 1, (("workflow", "textstats"),)),
        metrics.Point(metrics.REQUESTS_STARTED, 1, (("workflow", "echo"),)),
        metrics.Point(metrics.REQUESTS_SUCCEEDED, 1, (("workflow", "echo"),)),
        metrics.Point(metrics.REQUESTS_FAILED, 1, (("workflow", "textstats"),)),
        metrics.Point(metrics.REQUEST_DURATION, 2000, (("workflow", "echo"),)),
        metrics.Point(metrics.STEP_DURATION, 30, (("step", "split"),)),
        metrics.Point(metrics.STEP_DURATION, 50, (("step", "split"),)),
        metrics.Point(metrics.CONNECTS_REFUSED, 1, (("reason", "expired"),)),
        metrics.Point(metrics.MESSAGES_RATE_LIMITED, 1, ()),
    ]
    for doc in metrics.emf_documents(points):
        doc["_aws"]["Timestamp"] = int((now - 90) * 1000)
        file.append(json.dumps(doc))
    view = metrics.overview(metrics.read_local(path), now=now)
    assert view["by_status"] == {"SUBMITTED": 3, "STARTED": 1, "SUCCEEDED": 1, "FAILED": 1}
    assert view["by_workflow"] == {"echo": 2, "textstats": 1}
    assert len(view["per_minute"]) == 60 and sum(c for _, c in view["per_minute"]) == 3
    assert view["per_minute"][-2][1] == 3  # 90 s ago: the minute before the last
    assert {(d["workflow"], d["step"]): (d["count"], d["p50_ms"], d["p99_ms"]) for d in view["durations"]} == {
        ("echo", None): (1, 2000.0, 2000.0),
        (None, "split"): (2, 30.0, 50.0),
    }
    assert view["connects_refused"] == {"expired": 1} and view["rate_limited"] == 1
    empty = metrics.overview([], now=now, window_seconds=600)
    assert empty["per_minute"] == [[now - 600 + 60 * i, 0] for i in range(10)] and empty["by_status"] == {}


def test_an_execution_that_ends_outside_notify_is_counted_and_correlated(
    service: Any,
    mgmt_api: Any,
    capsys: pytest.CaptureFixture[str],
    log_lines: Callable[[], list[dict[str, Any]]],
) -> None:
    """EventBridge's status change of a TIMED_OUT execution: RequestsTimedOut, and its lines carry the id."""
    from streamer.aws.executions import execution_arn, execution_name
    from streamer.handlers import execution_events
    from tests.functional.conftest import EVENTS_DIR

    service.incarnations = lambda: ""  # the recorded event names a request stored without an incarnation
    event = json.loads((EVENTS_DIR / "sfn_status_change_timed_out.json").read_text())
    ref = service.submit("alice", "echo", {"message": "x", "steps": 20, "delay_ms": 500}, "r-timed-out").request.ref
    echo = "arn:aws:states:us-east-1:123456789012:stateMachine:streamer-echo"
    assert service.requests.mark_running(ref, execution_arn(echo, execution_name("alice", "r-timed-out")), 0)[0]
    assert execution_events.handler(event, ctx("ExecutionEventsFunction")) == {"outcome": "ended"}
    docs = emf(capsys.readouterr().out)
    assert values(docs, "RequestsTimedOut", workflow="echo") == [1.0]
    lines = [line for line in log_lines() if line.get("function_name") == "ExecutionEventsFunction"]
    assert lines and all(line.get("request_id") == "r-timed-out" and line["workflow"] == "echo" for line in lines)


@pytest.mark.parametrize(
    ("env", "on"),
    [
        ({"LAMBDA_TASK_ROOT": "/var/task"}, True),
        ({"LAMBDA_TASK_ROOT": "/var/task", "POWERTOOLS_TRACE_DISABLED": "true"}, False),
        ({"LAMBDA_TASK_ROOT": "/var/task", "POWERTOOLS_TRACE_DISABLED": "0"}, True),
        ({"LAMBDA_TASK_ROOT": "/var/task", "AWS_SAM_LOCAL": "true"}, False),
        ({"LAMBDA_TASK_ROOT": "/var/task", "AWS_CHALICE_CLI_MODE": "true"}, False),
        ({}, False),  # outside Lambda: streamer local, tests, the CLI
    ],
)
def test_tracing_follows_powertools_rule(env: dict[str, str], on: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    from aws_lambda_powertools import Tracer

    assert _runtime.tracing_enabled(env) is on
    for k in ("LAMBDA_TASK_ROOT", "POWERTOOLS_TRACE_DISABLED", "AWS_SAM_LOCAL", "AWS_CHALICE_CLI_MODE"):
        monkeypatch.delenv(k, raising=False)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    assert bool(Tracer._is_tracer_disabled()) is not on  # the rule it mirrors
