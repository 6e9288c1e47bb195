"""Connections admitted in this process (``STREAMER_CONNECTION_ADMISSION=memory``, ``streamer.admission``) on moto:
the rows written in batches, the quota counted here, the same refusals as the DynamoDB reservations."""

from __future__ import annotations

import threading
import time
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError

from streamer.aws.connections import ConnectionManager
from streamer.aws.executions import Executions
from streamer.aws.store import ConnectionStore, EventStore, RequestStore
from streamer.config import Settings
from streamer.quotas import Quotas
from streamer.service import RequestService
from tests.functional.conftest import record_dynamodb_calls


def _service(ddb: Any, mgmt_api: Any, mode: str, *, connections_table: str = "streamer-connections") -> RequestService:
    """A service and its quotas as a Lambda container (``dynamodb``) or ``streamer local``'s gateway builds them."""
    settings = Settings(max_connections_per_user=3, connection_admission=mode, connections_table=connections_table)
    return RequestService(
        settings,
        connections=ConnectionStore(settings.connections_table, ddb, batched=mode == "memory"),
        requests=RequestStore(settings.requests_table, ddb),
        events=EventStore(settings.events_table, ddb),
        manager=ConnectionManager(mgmt_api.url, max_retries=2),
        executions=Executions(settings.state_machine_arn_prefix, boto3.client("stepfunctions", region_name="us-east-1")),
    )


def _quotas(service: RequestService) -> Quotas:
    return Quotas.from_settings(service.settings, service.dynamodb, service.admissions)


def _rows(ddb: Any) -> dict[str, str]:
    items = ddb.scan(TableName="streamer-connections", ConsistentRead=True)["Items"]
    return {i["connection_id"]["S"]: i["user_id"]["S"] for i in items}


def test_concurrent_handshakes_write_their_rows_together_and_touch_no_quota_item(ddb: Any, mgmt_api: Any) -> None:
    service = _service(ddb, mgmt_api, "memory")
    quotas = _quotas(service)
    calls = record_dynamodb_calls(ddb)
    batch = service.connections.batch
    assert batch is not None
    held = threading.Event()

    def hold_the_first_batch(**_: Any) -> None:
        # Until the other 11 rows are queued: else a fast moto can take every row in a batch of its own.
        if not held.is_set():
            held.set()
            deadline = time.monotonic() + 10
            while len(batch._queue) < 11 and time.monotonic() < deadline:
                time.sleep(0.001)

    ddb.meta.events.register("before-call.dynamodb.BatchWriteItem", hold_the_first_batch)
    now = service.now()
    admitted: list[str] = []
    lock = threading.Lock()
    start = threading.Barrier(12)

    def connect(i: int) -> None:
        start.wait()
        got = service.connect(f"c{i}", f"user{i % 4}", now + 3600, quotas=quotas)
        if got.connection is not None:
            with lock:
                admitted.append(got.connection.connection_id)

    threads = [threading.Thread(target=connect, args=(i,)) for i in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    # Every row is in the table when its connect returns; the rows went in batches, no quota item was touched.
    made = list(calls)
    assert sorted(admitted) == sorted(f"c{i}" for i in range(12))
    assert _rows(ddb) == {f"c{i}": f"user{i % 4}" for i in range(12)}
    assert set(made) == {"BatchWriteItem:streamer-connections"}
    assert len(made) < 12
    assert "Item" not in ddb.get_item(TableName="streamer-quotas", Key={"user_id": {"S": "user0"}})
    # The rows are the ones a conditional put would have stored: the step functions read them as ever.
    assert [c.connection_id for c in service.connections.for_user("user1")] == ["c1", "c5", "c9"]


def test_the_quota_refuses_as_the_dynamodb_reservations_do_and_a_disconnect_frees_the_slot(
    ddb: Any, mgmt_api: Any
) -> None:
    refusals = {}
    for mode in ("dynamodb", "memory"):
        service = _service(ddb, mgmt_api, mode)
        quotas = _quotas(service)
        now = service.now()
        for i in range(3):
            assert service.connect(f"{mode}{i}", f"{mode}-alice", now + 3600, quotas=quotas).connection is not None
        refused = service.connect(f"{mode}3", f"{mode}-alice", now + 3600, quotas=quotas)
        refusals[mode] = (refused.connection, refused.refused, refused.reason)
        assert f"{mode}3" not in _rows(ddb)  # a refusal stores nothing
    assert refusals["memory"] == refusals["dynamodb"] == (None, "quota", "more than 3 connections for this user")

    # In memory, $disconnect (or a close, or a 410) frees the slot at once and deletes the row.
    calls = record_dynamodb_calls(ddb)
    service.disconnect("memory1")
    assert list(calls) == ["BatchWriteItem:streamer-connections"]
    assert "memory1" not in _rows(ddb)
    assert service.connect("memory3", "memory-alice", now + 3600, quotas=quotas).connection is not None
    assert service.admissions is not None and service.admissions.count("memory-alice") == 3


def test_a_row_that_cannot_be_written_fails_the_handshake_and_holds_no_slot(ddb: Any, mgmt_api: Any) -> None:
    service = _service(ddb, mgmt_api, "memory", connections_table="no-such-table")
    quotas = _quotas(service)
    with pytest.raises(ClientError, match="ResourceNotFoundException"):
        service.connect("c1", "alice", service.now() + 3600, quotas=quotas)
    assert service.admissions is not None and service.admissions.count("alice") == 0


def test_the_gateway_admits_in_memory_and_every_other_process_as_deployed(monkeypatch: pytest.MonkeyPatch) -> None:
    """`streamer local` sets the mode only for the route functions it runs in its own process."""
    from streamer.admission import MemoryConnections

    monkeypatch.setenv("STREAMER_CONNECTION_ADMISSION", "memory")
    service = RequestService.from_env(endpoint_url="http://127.0.0.1:1")
    assert isinstance(service.admissions, MemoryConnections) and service.connections.batch is not None
    assert _quotas(service).connections is service.admissions
    monkeypatch.delenv("STREAMER_CONNECTION_ADMISSION")
    service = RequestService.from_env(endpoint_url="http://127.0.0.1:1")
    assert service.admissions is None and service.connections.batch is None
