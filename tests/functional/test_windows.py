"""The fixed-window message counters (a connection's per minute, a user's per second) on moto."""

from __future__ import annotations

import threading
import time
from typing import Any

from streamer.aws.quotas import QuotaStore
from streamer.aws.store import ConnectionStore
from streamer.models import Connection
from tests.functional.conftest import record_dynamodb_calls


def test_a_late_message_counts_in_the_newer_window_and_does_not_reset_it(ddb: Any) -> None:
    quotas = QuotaStore(
        "streamer-quotas", connections_table="streamer-connections", requests_table="streamer-requests", client=ddb
    )
    assert [quotas.count_message("alice", 101) for _ in range(3)] == [1, 2, 3]
    # An invocation that read the clock a moment earlier (second 100) arrives after second 101 began:
    # counted in 101 (4), not a reset of the window back to 100 (which made writers at a boundary undo each other).
    assert quotas.count_message("alice", 100) == 4
    assert quotas.count_message("alice", 101) == 5
    assert quotas.count_message("alice", 102) == 1


def test_writers_on_both_sides_of_a_boundary_never_give_up(ddb: Any) -> None:
    """Before: three lost races in a row counted as 'over the limit' (1 << 30): a burst at a second's boundary got
    RATE_LIMITED frames whatever the limit. Now every message lands in a window with a real count."""
    quotas = QuotaStore(
        "streamer-quotas", connections_table="streamer-connections", requests_table="streamer-requests", client=ddb
    )
    counts: list[int] = []
    lock = threading.Lock()

    def writer(second: int) -> None:
        for _ in range(25):
            n = quotas.count_message("bob", second)
            with lock:
                counts.append(n)

    threads = [threading.Thread(target=writer, args=(s,)) for s in (200, 201, 200, 201)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(counts) == 100
    assert max(counts) <= 100


def test_the_connection_counter_needs_its_row_and_moves_forward_only(ddb: Any) -> None:
    conns = ConnectionStore("streamer-connections", ddb)
    assert conns.count_message("nobody", 60 * 10) is None
    conns.put(Connection(connection_id="c1", user_id="alice", connected_at=0, expires_at=10**10))
    assert conns.count_message("c1", 60 * 10)[1] == 1
    assert conns.count_message("c1", 60 * 10 + 59)[1] == 2
    assert conns.count_message("c1", 60 * 9)[1] == 3  # late: counted in the current minute
    assert conns.count_message("c1", 60 * 11)[1] == 1


# ------------------------------------------------------------ the windows in memory (STREAMER_MESSAGE_WINDOWS)


def _memory_router(ddb: Any, mgmt_api: Any, *, per_minute: int, per_second: int) -> tuple[Any, Any, list[str]]:
    """A service and router as `streamer local`'s gateway builds them, and the DynamoDB calls they make."""
    import boto3

    from streamer.aws.connections import ConnectionManager
    from streamer.aws.executions import Executions
    from streamer.aws.store import EventStore, RequestStore
    from streamer.config import Settings
    from streamer.quotas import QuotaLimits, Quotas
    from streamer.router import Router
    from streamer.service import RequestService
    from tests.functional.test_router import CATALOG

    settings = Settings(rate_limit_per_minute=per_minute, message_windows="memory")
    service = RequestService(
        settings,
        connections=ConnectionStore(settings.connections_table, ddb),
        requests=RequestStore(settings.requests_table, ddb),
        events=EventStore(settings.events_table, ddb),
        manager=ConnectionManager(mgmt_api.url, max_retries=2),
        executions=Executions(settings.state_machine_arn_prefix, boto3.client("stepfunctions", region_name="us-east-1")),
    )
    store = QuotaStore(
        "streamer-quotas", connections_table="streamer-connections", requests_table="streamer-requests", client=ddb
    )
    quotas = Quotas.from_settings(settings)
    quotas = Quotas(QuotaLimits(messages_per_second_per_user=per_second), store, windows=quotas.windows)
    calls = record_dynamodb_calls(ddb)
    return service, Router(service, lambda: CATALOG, rate_limit_per_minute=per_minute, quotas=quotas), calls


def test_memory_windows_cost_no_dynamodb_call_and_refuse_as_dynamodb_does(ddb: Any, mgmt_api: Any) -> None:
    service, router, calls = _memory_router(ddb, mgmt_api, per_minute=6, per_second=1000)
    now = service.now()
    assert service.connect("c1", "alice", now + 3600).connection is not None
    calls.clear()
    ping = '{"action": "ping"}'
    replies = [router.handle_message("c1", ping)[0] for _ in range(7)]
    assert replies[:6] == [{"type": "pong"}] * 6
    assert replies[6]["code"] == "RATE_LIMITED" and replies[6]["details"] == {"limit_per_minute": 6}
    assert calls == []  # the row $connect stored here, both windows in memory: no call at all
    # Nothing was counted in the tables: the windows were never there.
    row = ddb.get_item(TableName="streamer-connections", Key={"connection_id": {"S": "c1"}})["Item"]
    assert "rate_window" not in row and "rate_count" not in row
    assert "Item" not in ddb.get_item(TableName="streamer-quotas", Key={"user_id": {"S": "alice"}})


def test_memory_windows_read_a_connection_admitted_elsewhere_once_and_forget_it_at_disconnect(
    ddb: Any, mgmt_api: Any
) -> None:
    service, router, calls = _memory_router(ddb, mgmt_api, per_minute=100, per_second=1000)
    now = service.now()
    ConnectionStore("streamer-connections", ddb).put(
        Connection(connection_id="c2", user_id="bob", connected_at=now, expires_at=now + 3600)
    )
    calls.clear()
    ping = '{"action": "ping"}'
    assert [router.handle_message("c2", ping)[0]["type"] for _ in range(5)] == ["pong"] * 5
    # Its first message reads (and counts) the row — its first window: a conditional add, then a start — and no
    # later one does.
    assert calls == ["UpdateItem:streamer-connections"] * 2
    assert router.handle_message("nobody", ping)[0]["code"] == "FORBIDDEN"  # no row: refused, as before
    service.disconnect("c2")
    calls.clear()
    assert router.handle_message("c2", ping)[0]["code"] == "FORBIDDEN"  # forgotten with its row
    assert set(calls) == {"UpdateItem:streamer-connections"}


def test_memory_windows_keep_the_users_quota_and_the_tokens_expiry(ddb: Any, mgmt_api: Any) -> None:
    service, router, _ = _memory_router(ddb, mgmt_api, per_minute=1000, per_second=3)
    now = service.now()
    for cid in ("a1", "a2"):
        service.connect(cid, "alice", now + 3600)
    service.connect("b1", "bob", now + 3600)
    ping = '{"action": "ping"}'
    second = int(time.time())
    replies = [router.handle_message(("a1", "a2")[i % 2], ping)[0] for i in range(5)]
    if int(time.time()) == second:  # all in one second (else the window moved on: nothing to assert exactly)
        assert [r.get("type") for r in replies[:3]] == ["pong"] * 3
        assert all(r["details"] == {"quota": "messages_per_second", "limit": 3} for r in replies[3:])
    assert router.handle_message("b1", ping) == [{"type": "pong"}]  # bob has his own window
    # A connection whose token has expired is told so, from memory as from the row. The clock is frozen before the
    # connect: with the real one, a second boundary crossed since `now` would refuse the token as already expired.
    later = service.now()
    service.clock = lambda: later
    assert service.connect("e1", "eve", later + 1).connection is not None
    service.clock = lambda: later + 5
    (frame,) = router.handle_message("e1", ping)
    assert frame["code"] == "FORBIDDEN" and frame["details"] == {"reason": "token_expired"}
