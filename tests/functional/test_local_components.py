"""The local stack's building blocks, one at a time: the Lambda Invoke endpoint and the stream poller.

The endpoint is driven by the real boto3 ``lambda`` client (the contract Step Functions and SAM use); the
poller reads a real (moto, in-process) DynamoDB stream and delivers to a scripted function.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config
from moto import mock_aws

from streamer.deploy.template import FunctionSpec
from streamer.local.invoke import HttpAsyncInvoker, HttpLambdaInvoker, InvokeResult
from streamer.local.lambda_endpoint import (
    MAX_PAYLOAD_BYTES,
    LambdaEndpoint,
    function_name_from_path,
    serve_in_thread,
)
from streamer.local.patterns import record_passes_filters
from streamer.local.retry import STREAM_RETRIES
from streamer.local.stream_poller import (
    MappingConfig,
    OnFailureStore,
    StreamPoller,
    mappings_from_template,
)
from tests.functional.moto_process import create, moto_server, run_to_end

REGION = "us-east-1"
CREDS = {"region_name": REGION, "aws_access_key_id": "testing", "aws_secret_access_key": "testing"}


class RetryableStepError(Exception):
    pass


# --------------------------------------------------------------------------------------------------------
# Lambda endpoint


@pytest.fixture
def endpoint() -> Iterator[tuple[LambdaEndpoint, Any]]:
    def ok(event: dict[str, Any], context: Any) -> Any:
        return {
            "event": event,
            "function_name": context.function_name,
            "arn": context.invoked_function_arn,
            "request_id": context.aws_request_id,
            "memory": context.memory_limit_in_mb,
            "remaining": context.get_remaining_time_in_millis(),
        }

    def fails(event: dict[str, Any], context: Any) -> Any:
        raise RetryableStepError("try again later")

    def returns_none(event: dict[str, Any], context: Any) -> Any:
        return None

    def not_json(event: dict[str, Any], context: Any) -> Any:
        return {"when": object()}

    def slow(event: dict[str, Any], context: Any) -> Any:
        time.sleep(2)
        return "late"

    received: list[Any] = []
    got_event = threading.Event()

    def background(event: dict[str, Any], context: Any) -> Any:
        received.append(event)
        got_event.set()

    server, url = serve_in_thread(
        {
            "Ok": ok,
            "Fails": fails,
            "ReturnsNone": returns_none,
            "NotJson": not_json,
            "Slow": FunctionSpec(handler=slow, timeout=0.3),
            "Background": background,
            "Broken": FunctionSpec(handler="streamer.no_such_module.handler"),
        }
    )
    client = boto3.client("lambda", endpoint_url=url, config=Config(retries={"max_attempts": 0}), **CREDS)
    server.received = received  # type: ignore[attr-defined]
    server.got_event = got_event  # type: ignore[attr-defined]
    try:
        yield server, client
    finally:
        client.close()
        server.shutdown()
        server.server_close()


def _invoke(client: Any, name: str, payload: Any, **kw: Any) -> tuple[dict[str, Any], Any]:
    resp = client.invoke(FunctionName=name, Payload=json.dumps(payload).encode(), **kw)
    body = resp["Payload"].read()
    return resp, json.loads(body) if body else None


def test_invoke_returns_the_handlers_result_and_a_lambda_like_context(endpoint: Any) -> None:
    _, client = endpoint
    resp, body = _invoke(client, "Ok", {"x": 1})
    assert resp["StatusCode"] == 200
    assert "FunctionError" not in resp
    assert body["event"] == {"x": 1}
    assert body["function_name"] == "Ok"
    assert body["arn"] == "arn:aws:lambda:us-east-1:123456789012:function:Ok"
    assert body["memory"] == 128
    assert 0 < body["remaining"] <= 900_000
    assert len(body["request_id"]) == 36


@pytest.mark.parametrize(
    "name",
    [
        "Ok",
        "Ok:$LATEST",
        "arn:aws:lambda:us-east-1:123456789012:function:Ok",
        "arn:aws:lambda:us-east-1:123456789012:function:Ok:live",
        "123456789012:function:Ok",
    ],
)
def test_every_function_name_form_lambda_accepts(endpoint: Any, name: str) -> None:
    _, client = endpoint
    resp, body = _invoke(client, name, {})
    assert resp["StatusCode"] == 200
    assert body["function_name"] == "Ok"


def test_function_name_from_path() -> None:
    assert function_name_from_path("arn%3Aaws%3Alambda%3Aus-east-1%3A123456789012%3Afunction%3AF") == "F"
    assert function_name_from_path("F") == "F"
    assert function_name_from_path("../etc") is None


def test_an_exception_is_an_unhandled_function_error_named_after_its_class(endpoint: Any) -> None:
    _, client = endpoint
    resp, body = _invoke(client, "Fails", {})
    assert resp["StatusCode"] == 200
    assert resp["FunctionError"] == "Unhandled"
    assert body["errorType"] == "RetryableStepError"
    assert body["errorMessage"] == "try again later"
    assert isinstance(body["stackTrace"], list) and body["stackTrace"]


def test_none_result_is_json_null(endpoint: Any) -> None:
    _, client = endpoint
    resp, body = _invoke(client, "ReturnsNone", {})
    assert resp["StatusCode"] == 200 and body is None and "FunctionError" not in resp


def test_an_unserialisable_result_is_a_marshal_error(endpoint: Any) -> None:
    _, client = endpoint
    resp, body = _invoke(client, "NotJson", {})
    assert resp["FunctionError"] == "Unhandled"
    assert body["errorType"] == "Runtime.MarshalError"


def test_a_handler_past_its_timeout_is_reported_as_lambda_does(endpoint: Any) -> None:
    _, client = endpoint
    started = time.monotonic()
    resp, body = _invoke(client, "Slow", {})
    assert time.monotonic() - started < 1.9
    assert resp["FunctionError"] == "Unhandled"
    assert body["errorType"] == "Sandbox.Timedout"
    assert "Task timed out after 0.30 seconds" in body["errorMessage"]


def test_unknown_function_is_resource_not_found(endpoint: Any) -> None:
    _, client = endpoint
    with pytest.raises(client.exceptions.ResourceNotFoundException) as info:
        client.invoke(FunctionName="Nope", Payload=b"{}")
    err = info.value.response
    assert err["ResponseMetadata"]["HTTPStatusCode"] == 404
    assert "Function not found: arn:aws:lambda:us-east-1:123456789012:function:Nope" in err["Error"]["Message"]


def test_unknown_function_raw_http_shape(endpoint: Any) -> None:
    server, _ = endpoint
    req = urllib.request.Request(f"{server.url}/2015-03-31/functions/Nope/invocations", data=b"{}", method="POST")
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(req, timeout=10)
    try:
        assert info.value.code == 404
        assert info.value.headers["x-amzn-ErrorType"] == "ResourceNotFoundException"
        body = json.loads(info.value.read())
        assert body["Type"] == "User" and "Nope" in body["message"]
    finally:
        info.value.close()


def test_invalid_json_payload_is_invalid_request_content(endpoint: Any) -> None:
    _, client = endpoint
    with pytest.raises(client.exceptions.InvalidRequestContentException):
        client.invoke(FunctionName="Ok", Payload=b"{not json")


def test_event_invocation_returns_202_and_runs_in_the_background(endpoint: Any) -> None:
    server, client = endpoint
    resp = client.invoke(FunctionName="Background", InvocationType="Event", Payload=b'{"n": 7}')
    assert resp["StatusCode"] == 202
    assert server.got_event.wait(10)
    assert server.received == [{"n": 7}]


def test_dry_run_returns_204(endpoint: Any) -> None:
    _, client = endpoint
    assert client.invoke(FunctionName="Ok", InvocationType="DryRun")["StatusCode"] == 204


def test_a_handler_that_cannot_be_imported_is_an_import_module_error(endpoint: Any) -> None:
    _, client = endpoint
    resp, body = _invoke(client, "Broken", {})
    assert resp["FunctionError"] == "Unhandled"
    assert body["errorType"] == "Runtime.ImportModuleError"
    assert "streamer.no_such_module" in body["errorMessage"]


def test_a_payload_over_6_mb_is_request_too_large(endpoint: Any) -> None:
    server, _ = endpoint
    req = urllib.request.Request(
        f"{server.url}/2015-03-31/functions/Ok/invocations", data=b" " * (MAX_PAYLOAD_BYTES + 1), method="POST"
    )
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(req, timeout=30)
    try:
        assert info.value.code == 413
        assert info.value.headers["x-amzn-ErrorType"] == "RequestTooLargeException"
    finally:
        info.value.close()


def _refused_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"


def test_the_stream_pollers_invoker_tells_function_errors_from_transport_errors(endpoint: Any) -> None:
    server, _ = endpoint
    invoke = HttpLambdaInvoker(server.url, timeout=30)
    ok = invoke("Ok", {"x": 1})
    assert ok.ok and ok.transport_error is None and ok.payload["event"] == {"x": 1}
    failed = invoke("Fails", {})
    assert not failed.ok and failed.transport_error is None and failed.payload["errorType"] == "RetryableStepError"
    unknown = invoke("Nope", {})  # the function never ran: retried without using up an attempt
    assert not unknown.ok and unknown.transport_error is not None and unknown.transport_error.startswith("HTTP 404")
    down = HttpLambdaInvoker(_refused_url(), timeout=5)("Ok", {})
    assert not down.ok and down.transport_error is not None


def test_the_gateways_invoker_reports_function_errors_timeouts_and_transport_errors(endpoint: Any) -> None:
    server, _ = endpoint

    async def run() -> list[InvokeResult]:
        invoker, down = HttpAsyncInvoker(server.url, timeout=30), HttpAsyncInvoker(_refused_url(), timeout=5)
        impatient = HttpAsyncInvoker(server.url, timeout=0.1)
        try:
            return [
                await invoker("Ok", {"x": 1}),
                await invoker("Fails", {}),
                await invoker("Nope", {}),
                await impatient("Slow", {}),
                await down("Ok", {}),
            ]
        finally:
            for i in (invoker, down, impatient):
                await i.close()

    ok, failed, unknown, slow, refused = asyncio.run(run())
    assert ok.ok and ok.payload["event"] == {"x": 1}
    assert not failed.ok and failed.payload["errorType"] == "RetryableStepError"
    assert failed.error == "function error RetryableStepError" and not failed.timed_out
    assert not unknown.ok and unknown.error is not None and "HTTP 404" in unknown.error
    assert not slow.ok and slow.timed_out
    assert not refused.ok and refused.error is not None and not refused.timed_out


def test_many_concurrent_invocations_are_all_served(endpoint: Any) -> None:
    """http.server's default backlog (5) dropped invocations under Step Functions' load; ours is 1024."""
    server, _ = endpoint
    results: list[int] = []
    lock = threading.Lock()

    def one(i: int) -> None:
        req = urllib.request.Request(
            f"{server.url}/2015-03-31/functions/Ok/invocations", data=json.dumps({"i": i}).encode()
        )
        with urllib.request.urlopen(req, timeout=60) as resp:
            body = json.loads(resp.read())
        with lock:
            results.append(body["event"]["i"])

    threads = [threading.Thread(target=one, args=(i,)) for i in range(100)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert sorted(results) == list(range(100))


# --------------------------------------------------------------------------------------------------------
# Stream poller


class ScriptedFunction:
    """A stream function whose answer per call is decided by ``decide(records) -> InvokeResult``."""

    def __init__(self, decide: Callable[[list[dict[str, Any]]], InvokeResult]) -> None:
        self.decide = decide
        self.calls: list[list[str]] = []  # the request ids of each delivered batch

    def __call__(self, function_name: str, event: dict[str, Any]) -> InvokeResult:
        records = event["Records"]
        self.calls.append([r["dynamodb"]["Keys"]["request_id"]["S"] for r in records])
        return self.decide(records)


@pytest.fixture
def aws() -> Iterator[dict[str, Any]]:
    with mock_aws():
        ddb = boto3.client("dynamodb", **CREDS)
        stream = {"StreamEnabled": True, "StreamViewType": "NEW_AND_OLD_IMAGES"}
        _create_table(ddb, "requests", StreamSpecification=stream)
        # botocore >= 1.40 resolves account-based stream endpoints (ACCOUNT.streams-ddb.REGION…) that moto
        # 5.2.5 does not intercept; the classic endpoint works in-process and against moto server alike.
        streams = boto3.client(
            "dynamodbstreams", endpoint_url=f"https://streams.dynamodb.{REGION}.amazonaws.com", **CREDS
        )
        yield {"dynamodb": ddb, "streams": streams}


def _create_table(ddb: Any, name: str, **extra: Any) -> None:
    """A table keyed like the requests table (user_id, request_id)."""
    ddb.create_table(
        TableName=name,
        AttributeDefinitions=[
            {"AttributeName": "user_id", "AttributeType": "S"},
            {"AttributeName": "request_id", "AttributeType": "S"},
        ],
        KeySchema=[
            {"AttributeName": "user_id", "KeyType": "HASH"},
            {"AttributeName": "request_id", "KeyType": "RANGE"},
        ],
        BillingMode="PAY_PER_REQUEST",
        **extra,
    )


def _put(ddb: Any, *ids: str) -> None:
    for rid in ids:
        ddb.put_item(TableName="requests", Item={"user_id": {"S": "u"}, "request_id": {"S": rid}})


def _poller(aws: dict[str, Any], fn: ScriptedFunction, **cfg: Any) -> StreamPoller:
    config = MappingConfig(function_name="StreamRouter", table_name="requests", **cfg)
    return StreamPoller(
        config,
        dynamodb=aws["dynamodb"],
        streams=aws["streams"],
        invoke=fn,
        on_failure=OnFailureStore(),
        retry=STREAM_RETRIES.immediate(),
    )


def _drain(poller: StreamPoller, rounds: int = 200) -> None:
    for _ in range(rounds):
        if not poller.poll_once():
            return
    raise AssertionError("poller never went idle")


def _ok(records: list[dict[str, Any]]) -> InvokeResult:
    return InvokeResult(ok=True, payload={"batchItemFailures": []})


def test_records_arrive_in_order_in_the_lambda_event_shape(aws: dict[str, Any]) -> None:
    seen: list[dict[str, Any]] = []

    def decide(records: list[dict[str, Any]]) -> InvokeResult:
        seen.extend(records)
        return _ok(records)

    fn = ScriptedFunction(decide)
    poller = _poller(aws, fn, batch_size=2)
    _put(aws["dynamodb"], "a", "b", "c")
    _drain(poller)
    assert fn.calls == [["a", "b"], ["c"]]
    rec = seen[0]
    assert rec["eventName"] == "INSERT"
    assert rec["eventVersion"] == "1.1"
    assert rec["eventSource"] == "aws:dynamodb"
    assert rec["awsRegion"] == REGION
    assert rec["eventSourceARN"] == poller.stream_arn
    assert rec["dynamodb"]["StreamViewType"] == "NEW_AND_OLD_IMAGES"
    assert rec["dynamodb"]["NewImage"]["request_id"] == {"S": "a"}
    assert isinstance(rec["dynamodb"]["ApproximateCreationDateTime"], float)
    json.dumps({"Records": seen})  # what goes over HTTP must be JSON
    seqs = [int(r["dynamodb"]["SequenceNumber"]) for r in seen]
    assert seqs == sorted(seqs)
    # More writes later are picked up from where it left off.
    _put(aws["dynamodb"], "d")
    _drain(poller)
    assert fn.calls[-1] == ["d"]
    assert poller.delivered == 4


def test_partial_batch_failure_retries_from_the_lowest_failed_record(aws: dict[str, Any]) -> None:
    failed_once: set[str] = set()

    def decide(records: list[dict[str, Any]]) -> InvokeResult:
        failures = []
        for r in records:
            rid = r["dynamodb"]["Keys"]["request_id"]["S"]
            if rid in ("c", "e") and rid not in failed_once:
                failed_once.add(rid)
                failures.append({"itemIdentifier": r["dynamodb"]["SequenceNumber"]})
        return InvokeResult(ok=True, payload={"batchItemFailures": failures})

    fn = ScriptedFunction(decide)
    poller = _poller(aws, fn, batch_size=10, report_batch_item_failures=True)
    _put(aws["dynamodb"], "a", "b", "c", "d", "e", "f")
    _drain(poller)
    # a, b are checkpointed; the retry starts at c (d, e, f come again: at least once, never skipped).
    assert fn.calls == [["a", "b", "c", "d", "e", "f"], ["c", "d", "e", "f"]]
    assert not poller.on_failure.entries
    delivered = [rid for call in fn.calls for rid in call]
    assert set(delivered) == set("abcdef")


def test_without_report_batch_item_failures_the_response_is_ignored(aws: dict[str, Any]) -> None:
    def decide(records: list[dict[str, Any]]) -> InvokeResult:
        return InvokeResult(
            ok=True, payload={"batchItemFailures": [{"itemIdentifier": records[0]["dynamodb"]["SequenceNumber"]}]}
        )

    fn = ScriptedFunction(decide)
    poller = _poller(aws, fn, report_batch_item_failures=False)
    _put(aws["dynamodb"], "a", "b")
    _drain(poller)
    assert fn.calls == [["a", "b"]]


def test_an_unknown_item_identifier_fails_the_whole_batch(aws: dict[str, Any]) -> None:
    answers = iter(
        [
            InvokeResult(ok=True, payload={"batchItemFailures": [{"itemIdentifier": "999"}]}),
            InvokeResult(ok=True, payload={"batchItemFailures": []}),
        ]
    )
    fn = ScriptedFunction(lambda records: next(answers))
    poller = _poller(aws, fn, report_batch_item_failures=True)
    _put(aws["dynamodb"], "a", "b")
    _drain(poller)
    assert fn.calls == [["a", "b"], ["a", "b"]]


def test_a_poison_record_goes_to_the_on_failure_store_after_bounded_retries(aws: dict[str, Any]) -> None:
    def decide(records: list[dict[str, Any]]) -> InvokeResult:
        failures = [
            {"itemIdentifier": r["dynamodb"]["SequenceNumber"]}
            for r in records
            if r["dynamodb"]["Keys"]["request_id"]["S"] == "poison"
        ]
        return InvokeResult(ok=True, payload={"batchItemFailures": failures})

    fn = ScriptedFunction(decide)
    poller = _poller(aws, fn, report_batch_item_failures=True, maximum_retry_attempts=2)
    _put(aws["dynamodb"], "a", "poison", "b")
    _drain(poller)
    # 1 attempt + 2 retries, each from the poison record; then it is given up and b continues.
    assert fn.calls == [["a", "poison", "b"], ["poison", "b"], ["poison", "b"]]
    entries = poller.on_failure.entries
    assert len(entries) == 1
    assert entries[0]["requestContext"]["condition"] == "RetryAttemptsExhausted"
    assert entries[0]["requestContext"]["approximateInvokeCount"] == 3
    assert [r["dynamodb"]["Keys"]["request_id"]["S"] for r in poller.on_failure.records] == ["poison"]
    # Nothing after it is lost: the next write still flows.
    _put(aws["dynamodb"], "c")
    _drain(poller)
    assert fn.calls[-1] == ["c"]


def test_function_errors_bisect_the_batch_down_to_the_poison_record(aws: dict[str, Any]) -> None:
    def decide(records: list[dict[str, Any]]) -> InvokeResult:
        if any(r["dynamodb"]["Keys"]["request_id"]["S"] == "poison" for r in records):
            return InvokeResult(ok=False, payload={"errorType": "ValueError", "errorMessage": "bad"})
        return _ok(records)

    fn = ScriptedFunction(decide)
    poller = _poller(aws, fn, batch_size=4, maximum_retry_attempts=1, bisect_batch_on_function_error=True)
    _put(aws["dynamodb"], "a", "b", "poison", "c")
    _drain(poller)
    assert [r["dynamodb"]["Keys"]["request_id"]["S"] for r in poller.on_failure.records] == ["poison"]
    assert "bad" in poller.on_failure.entries[0]["error"]
    succeeded = [rid for call in fn.calls for rid in call if "poison" not in call]
    assert {"a", "b", "c"} <= set(succeeded)
    assert fn.calls[0] == ["a", "b", "poison", "c"]


def test_a_transport_error_never_uses_up_retries_nor_drops_records(aws: dict[str, Any]) -> None:
    answers = [InvokeResult(ok=False, transport_error="connection refused")] * 5
    state = {"n": 0}

    def decide(records: list[dict[str, Any]]) -> InvokeResult:
        state["n"] += 1
        if state["n"] <= len(answers):
            return answers[state["n"] - 1]
        return _ok(records)

    fn = ScriptedFunction(decide)
    poller = _poller(aws, fn, maximum_retry_attempts=0)
    _put(aws["dynamodb"], "a")
    for _ in range(50):
        poller.poll_once()
        if poller.delivered:
            break
    assert poller.delivered == 1
    assert not poller.on_failure.entries


def test_a_failing_record_past_its_maximum_age_goes_to_the_on_failure_file_without_retries(
    aws: dict[str, Any], tmp_path: Path
) -> None:
    fn = ScriptedFunction(lambda records: InvokeResult(ok=False, payload={"errorType": "ValueError"}))
    poller = _poller(aws, fn, maximum_retry_attempts=5, maximum_record_age_seconds=0)
    poller.on_failure = OnFailureStore(tmp_path / "dlq" / "failures.jsonl")
    _put(aws["dynamodb"], "a")
    time.sleep(0.01)
    _drain(poller)
    assert fn.calls == [["a"]]
    (line,) = (tmp_path / "dlq" / "failures.jsonl").read_text().splitlines()
    entry = json.loads(line)
    assert entry["requestContext"]["condition"] == "RecordAgeExceeded"
    assert entry["requestContext"]["functionArn"] == "arn:aws:lambda:us-east-1:123456789012:function:StreamRouter"
    assert entry["responseContext"]["functionError"] == "Unhandled"
    assert [r["dynamodb"]["Keys"]["request_id"]["S"] for r in entry["records"]] == ["a"]


def test_filter_criteria_skip_records_without_an_invocation(aws: dict[str, Any]) -> None:
    fn = ScriptedFunction(_ok)
    poller = _poller(aws, fn, filters=({"eventName": ["INSERT"]},))
    _put(aws["dynamodb"], "a")
    _put(aws["dynamodb"], "a")  # same key: MODIFY
    _put(aws["dynamodb"], "b")
    _drain(poller)
    assert fn.calls == [["a", "b"]]
    assert poller.filtered_out == 1


def test_filter_pattern_subset() -> None:
    rec = {"eventName": "INSERT", "dynamodb": {"NewImage": {"status": {"S": "PENDING"}, "n": {"N": "5"}}}}
    assert record_passes_filters(rec, [])
    assert record_passes_filters(rec, [{"eventName": ["MODIFY"]}, {"eventName": ["INSERT"]}])
    assert not record_passes_filters(rec, [{"eventName": ["MODIFY"]}])
    assert record_passes_filters(rec, [{"dynamodb": {"NewImage": {"status": {"S": [{"prefix": "PEN"}]}}}}])
    assert record_passes_filters(rec, [{"dynamodb": {"OldImage": [{"exists": False}]}}])
    assert not record_passes_filters(rec, [{"eventName": [{"anything-but": ["INSERT"]}]}])
    # A stream record carries a number attribute as a string ({"N": "5"}) and numeric matching applies to JSON
    # numbers only, so this filter matches nothing, on AWS as here (see tests/unit/test_local_patterns.py).
    assert not record_passes_filters(rec, [{"dynamodb": {"NewImage": {"n": {"N": [{"numeric": [">", 4]}]}}}}])


def test_each_stream_mapping_gets_its_own_properties_from_the_template() -> None:
    stream = {"Fn::GetAtt": ["RequestsTable", "StreamArn"]}

    def sam_function(**event: Any) -> dict[str, Any]:
        properties = {
            "Handler": "m.handler",
            "Runtime": "python3.12",
            "Events": {"Stream": {"Type": "DynamoDB", "Properties": event}},
        }
        return {"Type": "AWS::Serverless::Function", "Properties": properties}

    template = {
        "Transform": "AWS::Serverless-2016-10-31",
        "Resources": {
            "RequestsTable": {"Type": "AWS::DynamoDB::Table", "Properties": {}},
            "StreamMapping": {
                "Type": "AWS::Lambda::EventSourceMapping",
                "Properties": {
                    "FunctionName": {"Ref": "StreamRouterFunction"},
                    "EventSourceArn": stream,
                    "MaximumRecordAgeInSeconds": 60,
                    "FilterCriteria": {"Filters": [{"Pattern": '{"eventName": ["INSERT"]}'}]},
                },
            },
            # Same stream; "RouterFunction" is a part of "StreamRouterFunction", not its name.
            "AuditFunction": sam_function(Stream=stream, StartingPosition="LATEST"),
            "RouterFunction": sam_function(
                Stream=stream,
                StartingPosition="TRIM_HORIZON",
                FilterCriteria={"Filters": [{"Pattern": {"eventName": ["MODIFY"]}}]},
            ),
            "StreamRouterFunction": {
                "Type": "AWS::Serverless::Function",
                "Properties": {"Handler": "m.handler", "Runtime": "python3.12"},
            },
        },
    }
    mappings = mappings_from_template(template, {"RequestsTable": "streamer-requests"})
    assert {m.table_name for m in mappings} == {"streamer-requests"}
    # StartingPosition, FilterCriteria, MaximumRecordAgeInSeconds: each mapping its own (SAM events included).
    assert {m.function_name: (m.starting_position, m.filters, m.maximum_record_age_seconds) for m in mappings} == {
        "StreamRouterFunction": ("TRIM_HORIZON", ({"eventName": ["INSERT"]},), 60),
        "AuditFunction": ("LATEST", (), -1),
        "RouterFunction": ("TRIM_HORIZON", ({"eventName": ["MODIFY"]},), -1),
    }


def test_run_and_stop_in_a_thread(aws: dict[str, Any]) -> None:
    fn = ScriptedFunction(_ok)
    poller = _poller(aws, fn)
    poller.poll_interval = 0.02
    t = threading.Thread(target=poller.run)
    t.start()
    try:
        _put(aws["dynamodb"], "a", "b")
        deadline = time.monotonic() + 20
        while poller.delivered < 2 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert poller.delivered == 2
    finally:
        poller.stop()
        t.join(10)
    assert not t.is_alive()


# --------------------------------------------------------------------------------------------------------
# Gateway (in-process, scripted functions; the e2e tier runs it with the real handlers)


class GatewayThread:
    """A :class:`Gateway` on its own event loop in a thread, with scripted async functions."""

    def __init__(self, functions: dict[str, Callable[[dict[str, Any]], Any]], **config: Any) -> None:
        import asyncio

        from streamer.local.gateway import Gateway, GatewayConfig

        self.events: list[tuple[str, dict[str, Any]]] = []
        self.functions = functions
        self.loop = asyncio.new_event_loop()

        async def invoke(name: str, event: dict[str, Any]) -> InvokeResult:
            self.events.append((name, event))
            result = self.functions[name](event)
            if asyncio.iscoroutine(result):
                result = await result
            if isinstance(result, InvokeResult):
                return result
            return InvokeResult(ok=True, payload=result)

        routes = {"$connect": "Connect", "$disconnect": "Disconnect", "$default": "Default"}
        routes.update(config.pop("routes", {}))
        self.gateway = Gateway(GatewayConfig(routes=routes, **config), invoke)
        self.url = self.loop.run_until_complete(self.gateway.start())
        self.http = self.url.replace("ws://", "http://")
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def named(self, name: str) -> list[dict[str, Any]]:
        return [e for n, e in self.events if n == name]

    def wait_for(self, name: str, count: int = 1, timeout: float = 20) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while len(self.named(name)) < count:
            assert time.monotonic() < deadline, f"{name} not invoked {count}x: {self.events}"
            time.sleep(0.02)
        return self.named(name)

    def close(self) -> None:
        import asyncio

        asyncio.run_coroutine_threadsafe(self.gateway.stop(), self.loop).result(30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


def _accept(event: dict[str, Any]) -> dict[str, Any]:
    return {"statusCode": 200, "headers": {"Sec-WebSocket-Protocol": "streamer.v1"}}


@pytest.fixture
def gateway() -> Iterator[GatewayThread]:
    ok: Callable[[dict[str, Any]], Any] = lambda e: {"statusCode": 200}  # noqa: E731
    gw = GatewayThread({"Connect": _accept, "Disconnect": ok, "Default": ok})
    try:
        yield gw
    finally:
        gw.close()


def test_connect_event_has_the_api_gateway_shape(gateway: GatewayThread) -> None:
    from websockets.sync.client import connect

    with connect(gateway.url + "/prod?x=1&x=2&y=z", subprotocols=["streamer.v1"]) as ws:  # type: ignore[list-item]
        assert ws.subprotocol == "streamer.v1"
    (event,) = gateway.wait_for("Connect")
    ctx = event["requestContext"]
    assert ctx["routeKey"] == "$connect" and ctx["eventType"] == "CONNECT"
    assert ctx["stage"] == "prod" and ctx["apiId"] and ctx["domainName"]
    assert ctx["identity"]["sourceIp"] == "127.0.0.1"
    assert isinstance(ctx["connectedAt"], int) and isinstance(ctx["requestTimeEpoch"], int)
    assert len(ctx["connectionId"]) == 16 and ctx["connectionId"].endswith("=")
    assert "/" not in ctx["connectionId"] and "+" not in ctx["connectionId"]
    assert event["headers"]["Sec-WebSocket-Protocol"] == "streamer.v1"
    assert event["multiValueHeaders"]["Sec-WebSocket-Protocol"] == ["streamer.v1"]
    assert event["queryStringParameters"] == {"x": "2", "y": "z"}
    assert event["multiValueQueryStringParameters"] == {"x": ["1", "2"], "y": ["z"]}
    assert event["isBase64Encoded"] is False
    (disc,) = gateway.wait_for("Disconnect")
    assert disc["requestContext"]["eventType"] == "DISCONNECT"
    assert disc["requestContext"]["connectionId"] == ctx["connectionId"]
    assert disc["requestContext"]["disconnectStatusCode"] == 1000


def test_a_refused_connect_returns_the_status_and_never_disconnects(gateway: GatewayThread) -> None:
    from websockets.exceptions import InvalidStatus
    from websockets.sync.client import connect

    gateway.functions["Connect"] = lambda e: {"statusCode": 403}
    with pytest.raises(InvalidStatus) as info:
        connect(gateway.url)
    assert info.value.response.status_code == 403
    gateway.functions["Connect"] = lambda e: function_error()
    with pytest.raises(InvalidStatus) as info:
        connect(gateway.url)
    assert info.value.response.status_code == 500
    time.sleep(0.3)
    assert gateway.named("Disconnect") == []


def function_error() -> Any:
    return InvokeResult(ok=False, payload={"errorType": "Boom", "errorMessage": "boom"})


def test_messages_are_routed_by_the_selection_expression() -> None:
    from websockets.sync.client import connect

    gw = GatewayThread(
        {"Connect": _accept, "Disconnect": lambda e: {}, "Default": lambda e: {}, "Ping": lambda e: {}},
        routes={"ping": "Ping"},
    )
    try:
        with connect(gw.url) as ws:
            ws.send('{"action": "ping"}')
            ws.send('{"action": "submit"}')
            ws.send("not json")
            ws.send(b"\x00\xffbinary")
            gw.wait_for("Default", 3)
            (ping,) = gw.wait_for("Ping")
        assert ping["requestContext"]["routeKey"] == "ping"
        assert ping["requestContext"]["eventType"] == "MESSAGE"
        assert ping["requestContext"]["messageId"]
        assert ping["body"] == '{"action": "ping"}'
        bodies = {(e["body"], e["isBase64Encoded"]) for e in gw.named("Default")}
        assert bodies == {('{"action": "submit"}', False), ("not json", False), ("AP9iaW5hcnk=", True)}
    finally:
        gw.close()


def test_a_slow_function_does_not_block_reading_the_socket(gateway: GatewayThread) -> None:
    import asyncio

    from websockets.sync.client import connect

    release = threading.Event()

    async def slow_or_fast(event: dict[str, Any]) -> dict[str, Any]:
        if event["body"] == "slow":
            await asyncio.to_thread(release.wait, 20)
        return {"statusCode": 200}

    gateway.functions["Default"] = slow_or_fast
    with connect(gateway.url) as ws:
        ws.send("slow")
        ws.send("fast")
        gateway.wait_for("Default", 2)  # the second message was read while the first is still running
        release.set()


def test_a_failing_integration_sends_api_gateways_error_frame(gateway: GatewayThread) -> None:
    from websockets.sync.client import connect

    gateway.functions["Default"] = lambda e: function_error()
    with connect(gateway.url) as ws:
        ws.send("hello")
        frame = json.loads(ws.recv(timeout=20))
    assert frame["message"] == "Internal server error"
    assert frame["connectionId"] and frame["requestId"]


def test_a_timed_out_integration_sends_api_gateways_timeout_frame(gateway: GatewayThread) -> None:
    from websockets.sync.client import connect

    gateway.functions["Default"] = lambda e: InvokeResult(
        ok=False, transport_error="no answer within 29s", timed_out=True
    )
    with connect(gateway.url) as ws:
        ws.send("hello")
        frame = json.loads(ws.recv(timeout=20))
    assert frame["message"] == "Endpoint request timed out"
    assert frame["connectionId"] and frame["requestId"]


def test_a_route_with_a_route_response_sends_the_integrations_body_and_others_do_not() -> None:
    from websockets.sync.client import connect

    answer = lambda e: {"statusCode": 200, "body": json.dumps({"echo": e["body"]})}  # noqa: E731
    nothing = lambda e: {"statusCode": 200}  # noqa: E731
    functions = {"Connect": _accept, "Disconnect": nothing, "Default": answer, "Quiet": answer, "Empty": nothing}
    routes = {"quiet": "Quiet", "empty": "Empty"}
    gw = GatewayThread(functions, routes=routes, route_responses=frozenset({"$default", "empty"}))
    try:
        with connect(gw.url) as ws:
            ws.send('{"action": "quiet"}')  # a one-way route: its body is dropped, as API Gateway drops it
            ws.send('{"action": "empty"}')  # two-way, but no body: nothing is sent
            ws.send('{"action": "other"}')
            assert json.loads(ws.recv(timeout=20)) == {"echo": '{"action": "other"}'}
            with pytest.raises(TimeoutError):
                ws.recv(timeout=0.5)
        assert len(gw.named("Quiet")) == len(gw.named("Empty")) == 1
    finally:
        gw.close()


def test_management_api_errors_parse_as_botocore_exceptions(gateway: GatewayThread) -> None:
    api = boto3.client("apigatewaymanagementapi", endpoint_url=gateway.http, **CREDS)
    try:
        with pytest.raises(api.exceptions.GoneException):
            api.post_to_connection(ConnectionId="L0SM9cOFvHcCIhw=", Data=b"x")
        with pytest.raises(api.exceptions.GoneException):
            api.get_connection(ConnectionId="L0SM9cOFvHcCIhw=")
        with pytest.raises(api.exceptions.GoneException):
            api.delete_connection(ConnectionId="L0SM9cOFvHcCIhw=")
    finally:
        api.close()


def test_an_oversized_message_closes_with_1009_and_disconnect_reports_it(gateway: GatewayThread) -> None:
    from websockets.exceptions import ConnectionClosed
    from websockets.sync.client import connect

    with connect(gateway.url, max_size=None) as ws:
        ws.send("x" * (128 * 1024 + 1))
        with pytest.raises(ConnectionClosed) as info:
            ws.recv(timeout=20)
    assert info.value.rcvd is not None and info.value.rcvd.code == 1009
    (disc,) = gateway.wait_for("Disconnect")
    assert disc["requestContext"]["disconnectStatusCode"] == 1009
    assert gateway.named("Default") == []


def test_select_route() -> None:
    from streamer.local.gateway import select_route

    routes = {"$default": "D", "submit": "S", "$connect": "C"}
    expr = "$request.body.action"
    assert select_route(expr, '{"action": "submit"}', routes) == "submit"
    assert select_route(expr, '{"action": "other"}', routes) == "$default"
    assert select_route(expr, '{"action": "$connect"}', routes) == "$default"
    assert select_route(expr, "[1]", routes) == "$default"
    assert select_route(expr, None, routes) == "$default"
    assert select_route("$request.body.a.b", '{"a": {"b": "submit"}}', routes) == "submit"
    assert select_route(expr, '{"action": "x"}', {"submit": "S"}) is None


# --------------------------------------------------------------------------------------------------------
# moto server subprocess: Step Functions executes, Tasks reach our Lambda endpoint


def test_moto_server_runs_state_machines_against_the_lambda_endpoint() -> None:
    attempts: list[int] = []

    def flaky(event: dict[str, Any], context: Any) -> Any:
        attempts.append(event["attempt"])
        if len(attempts) < 2:
            raise RetryableStepError("not yet")
        return {"doubled": event["value"] * 2}

    definition = {
        "StartAt": "Double",
        "States": {
            "Double": {
                "Type": "Task",
                "Resource": "arn:aws:lambda:us-east-1:123456789012:function:Flaky",
                "Parameters": {"value.$": "$.value", "attempt.$": "$$.State.RetryCount"},
                "Retry": [{"ErrorEquals": ["RetryableStepError"], "IntervalSeconds": 1, "MaxAttempts": 2}],
                "Next": "PlusOne",
            },
            # JSONata: moto's stub replaced by jsonata-python.
            "PlusOne": {
                "Type": "Pass",
                "QueryLanguage": "JSONata",
                "Output": "{% $states.input.doubled + 1 %}",
                "End": True,
            },
        },
    }
    with moto_server({"Flaky": flaky}) as (sfn, _):
        desc = run_to_end(sfn, create(sfn, "flaky", definition), "run-1", '{"value": 20}')
    assert desc["status"] == "SUCCEEDED", desc
    assert json.loads(desc["output"]) == 41
    assert attempts == [0, 1]  # the custom error name matched Retry, as on AWS


# --------------------------------------------------------------------------------------------------------
# A write by a route function in the gateway's process wakes the table's stream poller


def test_the_tables_a_write_operation_writes_are_read_from_its_parameters() -> None:
    from streamer.local.inprocess import written_tables

    assert written_tables("PutItem", {"TableName": "requests", "Item": {}}) == ["requests"]
    assert written_tables("UpdateItem", {"TableName": "requests"}) == ["requests"]
    assert written_tables("DeleteItem", {"TableName": "c"}) == ["c"]
    assert written_tables("BatchWriteItem", {"RequestItems": {"a": [], "b": []}}) == ["a", "b"]
    items = [
        {"Put": {"TableName": "a"}},
        {"Update": {"TableName": "b"}},
        {"Delete": {"TableName": "a"}},
        {"ConditionCheck": {"TableName": "c"}},  # checks, writes nothing
    ]
    assert written_tables("TransactWriteItems", {"TransactItems": items}) == ["a", "b"]
    assert written_tables("GetItem", {"TableName": "requests"}) == []
    assert written_tables("PutItem", {}) == []


def test_an_idle_poller_polls_at_once_when_woken_and_stops_at_once() -> None:
    polls: list[float] = []

    class Counting(StreamPoller):
        def poll_once(self) -> bool:
            polls.append(time.monotonic())
            return False

    config = MappingConfig(function_name="StreamRouter", table_name="requests")
    poller = Counting(config, dynamodb=None, streams=None, invoke=lambda name, event: _ok([]), poll_interval=60.0)
    thread = threading.Thread(target=poller.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not polls and time.monotonic() < deadline:
        time.sleep(0.01)
    assert len(polls) == 1  # then idle for up to a minute
    poller.wake()
    while len(polls) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert len(polls) == 2  # woken long before the minute was up
    poller.stop()
    thread.join(10)
    assert not thread.is_alive()


def test_a_successful_write_by_an_in_process_function_wakes_the_tables_poller(
    aws: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    """The router's submit, as ``streamer local`` runs it: its PutItem wakes the requests table's poller, which
    otherwise would wait its whole idle interval (a minute here). Only a successful write to a watched table."""
    from streamer.local.inprocess import InProcessInvoker

    def writer(event: dict[str, Any], context: Any) -> None:
        ddb = boto3.client("dynamodb", **CREDS)  # from boto3's default session, as the handlers' clients are
        item = {"user_id": {"S": "u"}, "request_id": {"S": event["id"]}}
        kwargs = {"ConditionExpression": "attribute_not_exists(user_id)"} if event.get("once") else {}
        ddb.put_item(TableName=event["table"], Item=item, **kwargs)

    ddb = aws["dynamodb"]
    _create_table(ddb, "other")
    fn = ScriptedFunction(_ok)
    config = MappingConfig(function_name="StreamRouter", table_name="requests")
    poller = StreamPoller(config, dynamodb=ddb, streams=aws["streams"], invoke=fn, poll_interval=60.0)
    wakes: list[str] = []
    invoker = InProcessInvoker({"Writer": FunctionSpec(writer, timeout=10)})
    loop = asyncio.new_event_loop()
    invoker.bind(None, loop, "http://127.0.0.1:9")  # type: ignore[arg-type]  # no Management API call here

    def broken() -> None:
        raise RuntimeError("a watcher's bug")

    invoker.on_writes("requests", broken)  # its failure is logged, not the function's; the others still run
    invoker.on_writes("requests", poller.wake)
    invoker.on_writes("requests", lambda: wakes.append("requests"))
    thread = threading.Thread(target=poller.run, daemon=True)
    try:
        _drain(poller)  # the stream is found, the shard read: now idle
        thread.start()
        time.sleep(0.2)  # the thread's first poll found nothing: it waits
        for event in ({"table": "other", "id": "x"}, {"table": "requests", "id": "r1"}):
            result = loop.run_until_complete(invoker("Writer", event))
            assert result.ok, result.payload
        assert wakes == ["requests"]  # the write to "other" woke nobody
        assert "write watcher of requests failed" in caplog.text
        deadline = time.monotonic() + 10
        while not fn.calls and time.monotonic() < deadline:
            time.sleep(0.01)
        assert fn.calls == [["r1"]]  # read at once, not a minute later
        # A refused write (the condition fails: the item is there) changes nothing: no wake.
        result = loop.run_until_complete(invoker("Writer", {"table": "requests", "id": "r1", "once": True}))
        assert not result.ok and result.payload["errorType"] == "ConditionalCheckFailedException"
        assert wakes == ["requests"]
    finally:
        poller.stop()
        loop.run_until_complete(invoker.close())
        loop.close()
        thread.join(10)
    invoker.on_writes("requests", lambda: wakes.append("late"))  # after close: no hook, nothing called
    late = boto3.client("dynamodb", **CREDS)
    late.put_item(TableName="requests", Item={"user_id": {"S": "u"}, "request_id": {"S": "r2"}})
    assert wakes == ["requests"]


def test_the_stack_wakes_each_stream_poller_on_writes_to_its_table_when_routes_run_in_process() -> None:
    from types import SimpleNamespace

    from streamer.local.inprocess import InProcessInvoker
    from streamer.local.invoke import HttpAsyncInvoker
    from streamer.local.stack import LocalOptions, LocalStack

    for in_process in (True, False):
        stack = LocalStack(LocalOptions())
        mapping = MappingConfig(function_name="StreamRouter", table_name="streamer-requests")
        stack.plan = SimpleNamespace(stream_mappings=[mapping], functions={})  # type: ignore[assignment]
        stack.moto_url = stack.lambda_url = "http://127.0.0.1:9"  # nothing listens: the pollers only retry
        loop = asyncio.new_event_loop()
        if in_process:
            stack.invoker = InProcessInvoker({})
            stack.invoker.bind(None, loop, "http://127.0.0.1:9")
        else:
            stack.invoker = HttpAsyncInvoker(stack.lambda_url)
        try:
            stack._start_pollers()
            (poller,) = stack.pollers
            if in_process:
                assert stack.invoker._write_watch == {"streamer-requests": (poller.wake,)}
        finally:
            for p in stack.pollers:
                p.stop()
            if in_process:
                loop.run_until_complete(stack.invoker.close())
            loop.close()
        for t in stack.poller_threads:
            t.join(10)
            assert not t.is_alive()


# --------------------------------------------------------------------------------------------------------
# The supervisor's plan: what every function sees


def test_without_a_secret_the_stack_uses_the_development_secret_of_streamer_token_and_warns(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from streamer.config import LOCAL_DEV_SECRET
    from streamer.local.stack import LocalOptions, LocalStack

    monkeypatch.delenv("STREAMER_JWT_SECRET", raising=False)
    with caplog.at_level(logging.WARNING, logger="streamer.local"):
        assert LocalStack(LocalOptions())._jwt_secret() == LOCAL_DEV_SECRET
    assert "PUBLIC local development secret" in caplog.text
    caplog.clear()
    monkeypatch.setenv("STREAMER_JWT_SECRET", "s" * 32)
    with caplog.at_level(logging.WARNING, logger="streamer.local"):
        assert LocalStack(LocalOptions())._jwt_secret() == "s" * 32
    assert not caplog.records


def test_every_table_is_named_to_the_functions_by_the_local_naming_rule() -> None:
    from streamer.local.plan import function_environment, local_table_names, plan_from_template

    plan = plan_from_template(check_plugins=False)
    extra = {"Resources": {"AuditLogTable": {"Type": "AWS::DynamoDB::Table", "Properties": {}}}}
    plan.table_names.update(local_table_names(extra))
    env = function_environment(
        plan,
        gateway_http="http://gw",
        moto_url="http://moto",
        lambda_url="http://lambda",
        sfn_url="http://sfn",
        jwt_secret="s",
    )
    assert env["STREAMER_AUDIT_LOG_TABLE"] == "streamer-audit-log"
    assert (env["STREAMER_CONNECTIONS_TABLE"], env["STREAMER_REQUESTS_TABLE"], env["STREAMER_EVENTS_TABLE"]) == (
        "streamer-connections",
        "streamer-requests",
        "streamer-events",
    )
