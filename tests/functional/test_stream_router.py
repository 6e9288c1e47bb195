"""Stream router: exactly one execution per request, whatever the stream delivers."""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from typing import Any

import boto3
import pytest

from streamer.aws.executions import execution_name
from streamer.handlers import _runtime, stream_router
from streamer.limits import MAX_EXECUTION_NAME
from streamer.protocol import RequestStatus

PASS_MACHINE = json.dumps({"StartAt": "Done", "States": {"Done": {"Type": "Pass", "End": True}}})
ROLE = "arn:aws:iam::123456789012:role/sfn"


@pytest.fixture(scope="module")
def moto_server() -> Iterator[str]:
    # moto's in-process mock routes DynamoDB Streams calls to the DynamoDB backend (same signing name), so
    # this module talks to a real moto server. Executions are not interpreted here: this tier counts
    # StartExecution calls, not ASL behaviour (tests/functional/test_workflows_moto.py does that).
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def aws(moto_server: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    import requests

    requests.post(f"{moto_server}/moto-api/reset", timeout=10)
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_server)
    yield


@pytest.fixture
def sfn(aws: None, service: Any) -> Any:
    client = boto3.client("stepfunctions", region_name="us-east-1")
    for wf in ("echo", "huge"):
        client.create_state_machine(name=f"streamer-{wf}", definition=PASS_MACHINE, roleArn=ROLE)
    _runtime.set_service(service)
    yield client
    _runtime.reset()


def stream_records(ddb: Any) -> list[dict[str, Any]]:
    streams = boto3.client("dynamodbstreams", region_name="us-east-1")
    arn = ddb.describe_table(TableName="streamer-requests")["Table"]["LatestStreamArn"]
    shard = streams.describe_stream(StreamArn=arn)["StreamDescription"]["Shards"][0]["ShardId"]
    it = streams.get_shard_iterator(StreamArn=arn, ShardId=shard, ShardIteratorType="TRIM_HORIZON")["ShardIterator"]
    out: list[dict[str, Any]] = []
    while it:
        resp = streams.get_records(ShardIterator=it, Limit=1000)
        if not resp["Records"]:
            break
        for r in resp["Records"]:
            r = json.loads(json.dumps(r, default=str))
            r["eventSourceARN"] = arn
            out.append(r)
        it = resp.get("NextShardIterator")
    return out


def executions(sfn: Any, wf: str = "echo") -> list[dict[str, Any]]:
    arn = f"arn:aws:states:us-east-1:123456789012:stateMachine:streamer-{wf}"
    pages = sfn.get_paginator("list_executions").paginate(stateMachineArn=arn)
    return [e for p in pages for e in p["executions"]]


def deliver(records: list[dict[str, Any]], batch: int = 100) -> list[dict[str, str]]:
    failures: list[dict[str, str]] = []
    for i in range(0, len(records), batch):
        resp = stream_router.handler({"Records": records[i : i + batch]}, None)
        failures += resp["batchItemFailures"]
    return failures


def test_thousand_requests_delivered_three_times_start_exactly_thousand(service: Any, ddb: Any, sfn: Any) -> None:
    users = [f"user-{i}" for i in range(10)]
    for i in range(1000):
        service.submit(users[i % 10], "echo", {"message": str(i)}, f"req-{i // 10}")
    records = stream_records(ddb)
    assert len(records) == 1000
    rng = random.Random(1234)
    delivered = records * 3
    rng.shuffle(delivered)
    assert deliver(delivered) == []
    started = executions(sfn)
    assert len(started) == 1000
    assert len({e["name"] for e in started}) == 1000
    req = service.requests.get("user-3", "req-5")
    assert req.status is RequestStatus.RUNNING
    assert req.execution_arn.endswith(":" + execution_name("user-3", "req-5", req.incarnation))
    # A replay after everything started changes nothing (status no longer PENDING).
    assert deliver(records) == []
    assert len(executions(sfn)) == 1000


def test_execution_already_exists_counts_as_success(service: Any, ddb: Any, sfn: Any) -> None:
    service.submit("alice", "echo", {"message": "x"}, "crashy")
    (record,) = stream_records(ddb)
    # A previous invocation started the execution but died before recording RUNNING.
    from streamer.aws.executions import execution_input

    req = service.requests.get("alice", "crashy")
    sfn.start_execution(
        stateMachineArn="arn:aws:states:us-east-1:123456789012:stateMachine:streamer-echo",
        name=execution_name("alice", "crashy", req.incarnation),
        input=execution_input(req.ref, req.payload),
    )
    assert deliver([record]) == []
    assert len(executions(sfn)) == 1
    assert service.requests.get("alice", "crashy").status is RequestStatus.RUNNING


def test_poison_record_fails_alone(service: Any, ddb: Any, sfn: Any) -> None:
    for i in range(5):
        service.submit("alice", "echo", {}, f"ok-{i}")
    records = stream_records(ddb)
    poison = json.loads(json.dumps(records[2]))
    poison["dynamodb"]["SequenceNumber"] = "999999"
    del poison["dynamodb"]["NewImage"]["workflow"]
    batch = [*records[:2], poison, *records[2:]]
    failures = deliver(batch)
    assert failures == [{"itemIdentifier": "999999"}]
    assert len(executions(sfn)) == 5


def test_modify_and_remove_records_are_ignored(service: Any, ddb: Any, sfn: Any) -> None:
    service.submit("alice", "echo", {}, "r")
    deliver(stream_records(ddb))
    records = stream_records(ddb)  # INSERT + MODIFY (RUNNING)
    assert [r["eventName"] for r in records] == ["INSERT", "MODIFY"]
    assert deliver(records) == []
    assert len(executions(sfn)) == 1


def test_cancelled_before_start_never_starts(service: Any, ddb: Any, sfn: Any) -> None:
    service.submit("alice", "echo", {}, "r")
    service.cancel("alice", "r")
    assert deliver(stream_records(ddb)) == []
    assert executions(sfn) == []


def test_oversized_input_is_refused_before_start(service: Any, ddb: Any, sfn: Any, mgmt_api: Any) -> None:
    from streamer.models import Connection

    now = service.now()
    service.connections.put(Connection(connection_id="c", user_id="alice", connected_at=now, expires_at=now + 60))
    mgmt_api.open("c")
    service.submit("alice", "huge", {"blob": "x" * (300 * 1024)}, "big")
    assert deliver(stream_records(ddb)) == []
    assert executions(sfn, "huge") == []
    (event,) = mgmt_api.received("c")
    assert event["code"] == "PAYLOAD_TOO_LARGE" and event["status"] == "FAILED" and event["seq"] == 1


def test_unknown_state_machine_fails_the_request_with_a_typed_error(service: Any, ddb: Any, sfn: Any) -> None:
    service.submit("alice", "ghost", {}, "g")
    assert deliver(stream_records(ddb)) == []
    req = service.requests.get("alice", "g")
    assert req.status is RequestStatus.FAILED and req.error_code == "UNKNOWN_WORKFLOW"


@pytest.mark.parametrize("rid", ["a", "x" * 64, "A-b_c" * 12])
def test_execution_names_are_valid_and_distinct_per_user(rid: str) -> None:
    import re

    a, b = execution_name("alice", rid), execution_name("bob", rid)
    assert a != b
    for n in (a, b):
        assert len(n) <= MAX_EXECUTION_NAME and re.fullmatch(r"[A-Za-z0-9_-]+", n)
