"""Per-user quotas (streamer.quotas) on moto: connections, requests in flight, messages per second — exact
under concurrency, never leaking a slot, one user's excess never touching another's."""

from __future__ import annotations

import dataclasses
import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import jwt
import pytest

from streamer.aws.quotas import CONNECTIONS, REQUESTS, QuotaStore
from streamer.errors import ProtocolError
from streamer.handlers import _edges, _runtime, connect
from streamer.models import Connection
from streamer.protocol import ErrorCode, RequestStatus
from streamer.quotas import RESERVATION_GRACE_SECONDS, QuotaLimits, Quotas
from streamer.router import Router
from tests.functional.conftest import load_event, record_dynamodb_calls
from tests.functional.test_router import CATALOG

SECRET = "limits-test-secret-0123456789abcdef0123456"


class Clock:
    def __init__(self) -> None:
        self.now = float(int(time.time()))

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


def _quotas(ddb: Any, clock: Clock, **limits: int) -> Quotas:
    store = QuotaStore(
        "streamer-quotas", connections_table="streamer-connections", requests_table="streamer-requests", client=ddb
    )
    return Quotas(QuotaLimits(**limits), store, clock=clock)


def _submit(router: Router, cid: str, user: str, rid: str) -> dict[str, Any]:
    msg = {"action": "submit", "workflow": "free", "payload": {}, "request_id": rid}
    (reply,) = router.handle(cid, user, json.dumps(msg))
    return reply


def _conn(service: Any, cid: str, user: str, ttl: int = 3600) -> None:
    now = service.now()
    service.connections.put(Connection(connection_id=cid, user_id=user, connected_at=now, expires_at=now + ttl))


# ---------------------------------------------------------------------------------- requests in flight


def test_requests_in_flight_are_capped_and_freed_when_a_request_ends(service: Any, ddb: Any, clock: Clock) -> None:
    quotas = _quotas(ddb, clock, requests_in_flight_per_user=3)
    router = Router(service, lambda: CATALOG, quotas=quotas)
    _conn(service, "c1", "alice")
    assert [_submit(router, "c1", "alice", f"r{i}")["type"] for i in range(3)] == ["ack"] * 3
    over = _submit(router, "c1", "alice", "r3")
    assert over == {
        "type": "error",
        "code": "RATE_LIMITED",
        "message": "more than 3 requests in flight for this user",
        "details": {"quota": "requests_in_flight", "limit": 3},
    }
    assert service.requests.get("alice", "r3") is None  # refused: nothing stored
    # A retry of an id already in flight takes no second slot (and is recognised as the same request).
    assert _submit(router, "c1", "alice", "r1")["type"] == "ack"
    # Another user is not affected.
    _conn(service, "c2", "bob")
    assert _submit(router, "c2", "bob", "b0")["type"] == "ack"
    # One request ends (nobody releases its slot explicitly). In the second of the refusal this container
    # refuses again without asking the tables (quotas.KnownRefusals); the next second's submit finds the ended
    # request and takes its slot.
    assert service.finish(service.requests.get("alice", "r0").ref, RequestStatus.SUCCEEDED, output={}) is not None
    assert _submit(router, "c1", "alice", "r3")["code"] == "RATE_LIMITED"
    clock.now += 1
    assert _submit(router, "c1", "alice", "r3")["type"] == "ack"
    assert _submit(router, "c1", "alice", "r4")["code"] == "RATE_LIMITED"


def test_known_refusals_cost_no_dynamodb_call_and_end_with_their_second(
    service: Any, ddb: Any, clock: Clock
) -> None:
    """A user over a quota in this second is refused again without a DynamoDB call, a retry of a request that
    holds a slot is still recognised, and the next second asks the tables again."""
    quotas = _quotas(ddb, clock, requests_in_flight_per_user=2, messages_per_second_per_user=3)
    router = Router(service, lambda: CATALOG, quotas=quotas)
    for cid, user in (("c1", "alice"), ("c2", "bob"), ("c3", "alice"), ("c4", "alice")):
        _conn(service, cid, user)
    calls = record_dynamodb_calls(ddb)  # operation:table of each DynamoDB call
    ping = json.dumps({"action": "ping"})
    assert [router.handle_message(c, ping)[0]["type"] for c in ("c1", "c1", "c3")] == ["pong"] * 3
    calls.clear()
    over = router.handle_message("c1", ping)[0]
    assert over["details"] == {"quota": "messages_per_second", "limit": 3}
    # The connection row and the user's window, once.
    assert calls == ["UpdateItem:streamer-connections", "UpdateItem:streamer-quotas"]
    calls.clear()
    assert [router.handle_message(c, ping)[0]["code"] for c in ["c1", "c3"] * 25] == ["RATE_LIMITED"] * 50
    assert calls == []  # known (c3 was seen before): no call at all
    assert router.handle_message("c4", ping)[0]["code"] == "RATE_LIMITED"
    # A connection not seen yet: its row is read to learn its user (its first window: add, then start), the
    # user's window is not.
    assert set(calls) == {"UpdateItem:streamer-connections"}
    calls.clear()
    assert router.handle_message("c4", ping)[0]["code"] == "RATE_LIMITED"
    assert calls == []
    assert router.handle_message("c2", ping)[0]["type"] == "pong"  # another user is not refused
    clock.now += 1
    assert router.handle_message("c1", ping)[0]["type"] == "pong"  # a new second asks again

    quotas = _quotas(ddb, clock, requests_in_flight_per_user=2, messages_per_second_per_user=0)
    router = Router(service, lambda: CATALOG, quotas=quotas)
    assert [_submit(router, "c1", "alice", f"r{i}")["type"] for i in range(2)] == ["ack"] * 2
    assert _submit(router, "c1", "alice", "r2")["code"] == "RATE_LIMITED"
    calls.clear()
    assert _submit(router, "c1", "alice", "r2")["details"] == {"quota": "requests_in_flight", "limit": 2}
    assert calls == []  # no reservation, no stale check
    assert _submit(router, "c1", "alice", "r1")["type"] == "ack"  # holds a slot: still recognised
    quotas.release_request("alice", "r0")  # a release in this container forgets the refusal at once
    assert _submit(router, "c1", "alice", "r2")["type"] == "ack"


def test_a_reservation_whose_request_was_never_stored_is_freed_after_the_grace(ddb: Any, clock: Clock) -> None:
    quotas = _quotas(ddb, clock, requests_in_flight_per_user=1)
    quotas.reserve_request("alice", "lost")  # e.g. the router crashed between the reservation and the put
    with pytest.raises(ProtocolError):
        quotas.reserve_request("alice", "next")  # within the grace, the reservation may still be on its way
    clock.now += RESERVATION_GRACE_SECONDS + 1
    quotas.reserve_request("alice", "next")
    assert set(quotas.store.members("alice", REQUESTS) or {}) == {"next"}


def test_an_explicit_release_frees_the_slot_at_once(ddb: Any, clock: Clock) -> None:
    quotas = _quotas(ddb, clock, requests_in_flight_per_user=1)
    quotas.reserve_request("alice", "a")
    quotas.release_request("alice", "a")
    quotas.release_request("alice", "a")  # idempotent
    quotas.release_request("nobody", "a")  # creates nothing
    quotas.reserve_request("alice", "b")
    assert ddb.get_item(TableName="streamer-quotas", Key={"user_id": {"S": "nobody"}}).get("Item") is None


def _race(quotas: Quotas, user: str, n: int) -> list[str]:
    """``n`` threads reserving a request slot each for ``user`` at once; the request ids that got one."""
    won: list[str] = []
    lock = threading.Lock()

    def one(i: int) -> None:
        try:
            quotas.reserve_request(user, f"r{i}")
        except ProtocolError as exc:
            assert exc.code is ErrorCode.RATE_LIMITED
            return
        with lock:
            won.append(f"r{i}")

    threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return won


def test_concurrent_submits_never_exceed_the_limit(ddb: Any, clock: Clock) -> None:
    quotas = _quotas(ddb, clock, requests_in_flight_per_user=5)
    quotas.reserve_request("alice", "warm")  # the item and its map exist; the race is on the last slots
    assert len(_race(quotas, "alice", 40)) == 4
    assert len(quotas.store.members("alice", REQUESTS) or {}) == 5


def test_a_users_first_reservations_race_to_create_the_map_and_never_exceed_the_limit(
    ddb: Any, clock: Clock
) -> None:
    """No item yet: the first writer creates the map holding its member, the others reserve in it."""
    quotas = _quotas(ddb, clock, requests_in_flight_per_user=3)
    won = _race(quotas, "fresh", 12)
    assert len(won) == 3
    assert set(quotas.store.members("fresh", REQUESTS) or {}) == set(won)


def test_a_first_reservation_is_two_writes_and_a_full_map_is_checked_without_reading_it_again(
    service: Any, ddb: Any, clock: Clock
) -> None:
    quotas = _quotas(ddb, clock, connections_per_user=2)
    calls = record_dynamodb_calls(ddb)
    quotas.admit_connection("newbie", "c1")
    # The reservation fails (no map; its ALL_OLD says so), then one write creates the map holding c1. Before:
    # the failed reservation, a read of the map, its creation, the reservation again.
    assert calls == ["UpdateItem:streamer-quotas", "UpdateItem:streamer-quotas"]
    calls.clear()
    quotas.admit_connection("newbie", "c2")
    assert calls == ["UpdateItem:streamer-quotas"]
    _conn(service, "c1", "newbie")  # c1 is live; c2 never stored a row and is past its grace below
    clock.now += RESERVATION_GRACE_SECONDS + 1
    calls.clear()
    quotas.admit_connection("newbie", "c3")
    # Full: the failed write returned the map; its members are checked against the connections table, the
    # stale one released, the reservation made — no read of the map.
    assert calls == [
        "UpdateItem:streamer-quotas",
        "BatchGetItem:streamer-connections",
        "UpdateItem:streamer-quotas",
        "UpdateItem:streamer-quotas",
    ]
    assert set(quotas.store.members("newbie", CONNECTIONS) or {}) == {"c1", "c3"}


# ------------------------------------------------------------------------------- messages per second


def test_messages_per_second_per_user(service: Any, ddb: Any, clock: Clock) -> None:
    quotas = _quotas(ddb, clock, messages_per_second_per_user=5)
    router = Router(service, lambda: CATALOG, quotas=quotas)
    _conn(service, "a1", "alice")
    _conn(service, "a2", "alice")
    _conn(service, "b1", "bob")
    ping = '{"action": "ping"}'
    # Five in this second over two connections of the same user, then RATE_LIMITED with the limit.
    replies = [router.handle(("a1", "a2")[i % 2], "alice", ping)[0] for i in range(7)]
    assert replies[:5] == [{"type": "pong"}] * 5
    assert replies[5] == {
        "type": "error",
        "code": "RATE_LIMITED",
        "message": "more than 5 messages a second for this user",
        "details": {"quota": "messages_per_second", "limit": 5},
    }
    assert router.handle("b1", "bob", ping) == [{"type": "pong"}]  # bob has his own window
    clock.now += 1
    assert router.handle("a1", "alice", ping) == [{"type": "pong"}]  # a new second


def test_a_full_connection_quota_drops_a_gone_member_and_keeps_one_api_gateway_cannot_tell_about(
    service: Any, ddb: Any, clock: Clock
) -> None:
    """The DynamoDB reservations' liveness question (the memory path's: tests/unit/test_admission.py)."""
    quotas = _quotas(ddb, clock, connections_per_user=3)
    for cid in ("gone", "live", "unknown"):
        _conn(service, cid, "alice")
        quotas.admit_connection("alice", cid)

    def alive(connection_id: str) -> bool:
        if connection_id == "unknown":
            raise RuntimeError("API Gateway cannot tell")  # counted as live
        return connection_id != "gone"

    quotas.admit_connection("alice", "new1", alive=alive)
    assert set(quotas.store.members("alice", CONNECTIONS) or {}) == {"live", "unknown", "new1"}
    with pytest.raises(ProtocolError) as refused:  # full of live members: refused, nothing dropped
        quotas.admit_connection("alice", "new2", alive=alive)
    assert refused.value.code is ErrorCode.RATE_LIMITED
    assert set(quotas.store.members("alice", CONNECTIONS) or {}) == {"live", "unknown", "new1"}


def test_a_limit_of_zero_is_off(ddb: Any, clock: Clock) -> None:
    quotas = _quotas(ddb, clock, connections_per_user=0, requests_in_flight_per_user=0, messages_per_second_per_user=0)
    for i in range(30):
        quotas.count_message("alice")
        quotas.reserve_request("alice", f"r{i}")
        quotas.admit_connection("alice", f"c{i}")
    assert ddb.scan(TableName="streamer-quotas")["Count"] == 0


# ----------------------------------------------------------------------------------------- connections


@pytest.fixture
def wired(service: Any, mgmt_api: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    monkeypatch.setenv("STREAMER_JWT_SECRET", SECRET)
    for name in ("STREAMER_JWT_ISSUER", "STREAMER_JWT_AUDIENCE", "STREAMER_JWT_ALGORITHMS", "STREAMER_JWT_JWKS_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(
        service,
        "settings",
        dataclasses.replace(service.settings, max_connections_per_user=3, apigw_endpoint=mgmt_api.url),
    )
    connect.get_authenticator.cache_clear()
    _runtime.set_service(service)
    yield service
    _runtime.reset()
    connect.get_authenticator.cache_clear()


def _handshake(cid: str, user: str) -> int:
    now = int(time.time())
    tok = jwt.encode({"sub": user, "iat": now, "exp": now + 600}, SECRET, algorithm="HS256")
    ev = load_event("connect", requestContext={"connectionId": cid})
    ev["headers"]["Sec-WebSocket-Protocol"] = f"streamer.v1, bearer.{tok}"
    return int(connect.handler(ev, None)["statusCode"])


def test_a_handshake_over_the_connection_limit_gets_429_and_stores_nothing(wired: Any, ddb: Any) -> None:
    assert [_handshake(f"c{i}", "alice") for i in range(3)] == [200] * 3
    assert _handshake("c3", "alice") == 429
    assert wired.connections.get("c3") is None
    assert set(_edges.get_quotas(wired).store.members("alice", CONNECTIONS) or {}) == {"c0", "c1", "c2"}
    assert _handshake("b0", "bob") == 200  # per user


def test_a_connection_slot_is_freed_when_its_row_is_gone_or_expired(wired: Any, ddb: Any) -> None:
    quotas = _edges.get_quotas(wired)
    assert [_handshake(f"c{i}", "alice") for i in range(3)] == [200] * 3
    wired.disconnect("c0")  # $disconnect deleted the row (the quota is not told)
    # Still within the grace after c0's reservation: the slot is not yet assumed free.
    assert _handshake("c3", "alice") == 429
    quotas.clock = lambda: time.time() + RESERVATION_GRACE_SECONDS + 1
    assert _handshake("c3", "alice") == 200
    # An expired row (its token ran out; TTL has not removed it yet) frees its slot too.
    conn = wired.connections.get("c1")
    ddb.put_item(
        TableName="streamer-connections",
        Item={
            "connection_id": {"S": "c1"},
            "user_id": {"S": "alice"},
            "connected_at": {"N": str(conn.connected_at)},
            "expires_at": {"N": str(int(time.time()) - 1)},
        },
    )
    assert _handshake("c4", "alice") == 200
    assert set(quotas.store.members("alice", CONNECTIONS) or {}) == {"c2", "c3", "c4"}


def test_a_failed_connection_put_releases_its_reservation(wired: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(conn: Any) -> None:
        raise RuntimeError("DynamoDB is down")

    monkeypatch.setattr(wired.connections, "put", boom)
    with pytest.raises(RuntimeError):
        _handshake("c0", "alice")
    assert _edges.get_quotas(wired).store.members("alice", CONNECTIONS) == {}
