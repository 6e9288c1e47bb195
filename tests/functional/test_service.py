"""RequestService and the stores against moto: idempotent submit, gap-free seq, exactly-once terminal."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from streamer.aws.quotas import CONNECTIONS, QuotaStore
from streamer.errors import ProtocolError, TerminalAlreadyError
from streamer.limits import MAX_CONNECTION_SECONDS
from streamer.models import Connection
from streamer.protocol import ErrorCode, RequestStatus
from streamer.quotas import QuotaLimits, Quotas
from streamer.service import Admission


def connect(service: Any, mgmt_api: Any, cid: str, user: str, ttl: int = 3600) -> None:
    now = service.now()
    service.connections.put(Connection(connection_id=cid, user_id=user, connected_at=now, expires_at=now + ttl))
    mgmt_api.open(cid)


def test_submit_is_idempotent_per_user(service: Any) -> None:
    first = service.submit("alice", "echo", {"message": "hi"}, "req-1")
    again = service.submit("alice", "echo", {"message": "hi"}, "req-1")
    assert first.created and not again.created
    assert again.ack() == first.ack() == {"type": "ack", "request_id": "req-1", "workflow": "echo", "status": "PENDING"}
    with pytest.raises(ProtocolError) as exc:
        service.submit("alice", "echo", {"message": "other"}, "req-1")
    assert exc.value.code is ErrorCode.CONFLICT
    # Another user with the same id is a different request.
    assert service.submit("bob", "echo", {"message": "other"}, "req-1").created
    assert service.requests.get("alice", "req-1").payload == {"message": "hi"}
    assert service.requests.get("bob", "req-1").payload == {"message": "other"}


def test_server_assigns_unique_ids(service: Any) -> None:
    ids = {service.submit("alice", "echo", {}, None).request.request_id for _ in range(20)}
    assert len(ids) == 20


def test_status_of_other_users_request_is_not_found(service: Any) -> None:
    service.submit("alice", "echo", {}, "mine")
    for call in (
        lambda: service.status("bob", "mine"),
        lambda: service.replay("bob", "mine", 0),
        lambda: service.cancel("bob", "mine"),
        lambda: service.status("alice", "nope"),
    ):
        with pytest.raises(ProtocolError) as exc:
            call()
        assert exc.value.code is ErrorCode.NOT_FOUND
        assert exc.value.message == "no such request"
    assert service.requests.get("alice", "mine").status is RequestStatus.PENDING


def test_events_have_gap_free_seq_and_reach_every_connection(service: Any, mgmt_api: Any) -> None:
    connect(service, mgmt_api, "c1", "alice")
    connect(service, mgmt_api, "c2", "alice")
    connect(service, mgmt_api, "c3", "bob")
    req = service.submit("alice", "echo", {}, "r").request
    for i in range(3):
        service.progress(req.ref, "echo", i * 50, f"step {i}")
    service.finish(req.ref, RequestStatus.SUCCEEDED, output={"message": "done"})
    for cid in ("c1", "c2"):
        got = mgmt_api.received(cid)
        assert [m["seq"] for m in got] == [1, 2, 3, 4]
        assert got[-1] == {
            "type": "result",
            "status": "SUCCEEDED",
            "output": {"message": "done"},
            "request_id": "r",
            "seq": 4,
        }
        assert got[0] == {
            "type": "progress",
            "step": "echo",
            "percent": 0,
            "message": "step 0",
            "request_id": "r",
            "seq": 1,
        }
    assert mgmt_api.received("c3") == []  # users never see each other's requests
    assert [e.seq for e in service.replay("alice", "r", 2)] == [3, 4]
    st = service.status("alice", "r")
    assert st["status"] == "SUCCEEDED" and st["last_seq"] == 4 and st["output"] == {"message": "done"}


def test_terminal_event_is_written_exactly_once(service: Any, mgmt_api: Any) -> None:
    connect(service, mgmt_api, "c1", "alice")
    ref = service.submit("alice", "echo", {}, "r").request.ref
    assert service.finish(ref, RequestStatus.SUCCEEDED, output={"x": 1}) is not None
    assert service.finish(ref, RequestStatus.FAILED, message="late") is None
    assert service.cancel("alice", "r") is False
    assert service.progress(ref, "echo", 50, "after the end") is None
    assert [m["type"] for m in mgmt_api.received("c1")] == ["result"]
    assert service.requests.get("alice", "r").status is RequestStatus.SUCCEEDED


def test_concurrent_writers_never_share_or_skip_a_seq(service: Any) -> None:
    ref = service.submit("alice", "echo", {}, "busy").request.ref
    errors: list[BaseException] = []

    def writer(n: int) -> None:
        try:
            for i in range(10):
                service.emit(ref, {"type": "progress", "step": f"w{n}", "percent": i, "message": ""})
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    events = service.replay("alice", "busy", 0)
    assert [e.seq for e in events] == list(range(1, 41))
    assert sorted((e.body["step"], e.body["percent"]) for e in events) == sorted(
        (f"w{n}", i) for n in range(4) for i in range(10)
    )


def test_cancel_pending_request_ends_cancelled(service: Any, mgmt_api: Any) -> None:
    connect(service, mgmt_api, "c1", "alice")
    service.submit("alice", "echo", {}, "r")
    assert service.cancel("alice", "r") is True
    msgs = mgmt_api.received("c1")
    assert msgs == [
        {
            "type": "error",
            "status": "CANCELLED",
            "code": "CANCELLED",
            "message": "cancelled by the client",
            "request_id": "r",
            "seq": 1,
        }
    ]
    assert service.requests.get("alice", "r").status is RequestStatus.CANCELLED


def test_oversized_result_becomes_payload_too_large(service: Any, mgmt_api: Any) -> None:
    connect(service, mgmt_api, "c1", "alice")
    ref = service.submit("alice", "echo", {}, "big").request.ref
    service.finish(ref, RequestStatus.SUCCEEDED, output={"blob": "x" * 200_000})
    (msg,) = mgmt_api.received("c1")
    assert msg["type"] == "error" and msg["code"] == "PAYLOAD_TOO_LARGE" and msg["status"] == "FAILED"


def test_gone_connection_is_deleted_and_others_still_receive(service: Any, mgmt_api: Any) -> None:
    connect(service, mgmt_api, "live", "alice")
    connect(service, mgmt_api, "stale", "alice")
    mgmt_api.close("stale")
    report = service.push("alice", {"type": "pong"})
    assert report.delivered == ["live"] and report.gone == ["stale"]
    assert service.connections.get("stale") is None
    assert service.connections.get("live") is not None
    assert mgmt_api.received("live") == [{"type": "pong"}]


def test_throttled_send_is_retried(service: Any, mgmt_api: Any) -> None:
    connect(service, mgmt_api, "c1", "alice")
    mgmt_api.throttle("c1", 2)
    service.manager.send("c1", {"type": "pong"})
    assert mgmt_api.attempts["c1"] == 3
    assert mgmt_api.received("c1") == [{"type": "pong"}]


def test_throttling_beyond_the_bound_fails_without_looping(service: Any, mgmt_api: Any) -> None:
    from streamer.errors import SendError

    connect(service, mgmt_api, "c1", "alice")
    mgmt_api.throttle("c1", 100)
    with pytest.raises(SendError):
        service.manager.send("c1", {"type": "pong"})
    assert mgmt_api.attempts["c1"] == service.manager.max_retries + 1


def test_oversized_message_is_refused_before_any_call(service: Any, mgmt_api: Any) -> None:
    connect(service, mgmt_api, "c1", "alice")
    with pytest.raises(ProtocolError) as exc:
        service.manager.send("c1", {"type": "x", "blob": "y" * (128 * 1024)})
    assert exc.value.code is ErrorCode.PAYLOAD_TOO_LARGE
    assert mgmt_api.attempts["c1"] == 0


def test_expired_connections_are_not_targets(service: Any, mgmt_api: Any) -> None:
    now = service.now()
    service.connections.put(Connection(connection_id="old", user_id="alice", connected_at=now - 10, expires_at=now - 1))
    mgmt_api.open("old")
    assert service.push("alice", {"type": "pong"}).delivered == []


def test_replay_ends_at_the_terminal_event(service: Any) -> None:
    ref = service.submit("alice", "echo", {}, "r").request.ref
    service.progress(ref, "echo", 10, "")
    service.finish(ref, RequestStatus.SUCCEEDED, output={})
    # A progress write that raced the terminal one is refused by its seq claim's condition: nothing stored.
    with pytest.raises(TerminalAlreadyError):
        service.emit(ref, {"type": "progress", "step": "echo", "percent": 99, "message": "late"})
    assert [e.body["type"] for e in service.replay("alice", "r", 0)] == ["progress", "result"]


def test_transport_error_is_retried_by_botocore_then_reported_failed_while_others_receive(
    service: Any, mgmt_api: Any
) -> None:
    """A read timeout on one connection's push: botocore's standard mode retries it (transport errors are
    retryable), and when it persists the push reports that connection failed; the others still receive."""
    from botocore.exceptions import ReadTimeoutError

    connect(service, mgmt_api, "slow", "alice")
    connect(service, mgmt_api, "fine", "alice")
    tries: list[str] = []

    def time_out_slow(request: Any, **kwargs: Any) -> None:
        if request.url.endswith("/@connections/slow"):
            tries.append("slow")
            raise ReadTimeoutError(endpoint_url=request.url)
        return None  # everything else goes to the real server

    client = service.manager.client
    client.meta.events.register("before-send.apigatewaymanagementapi.PostToConnection", time_out_slow)
    report = service.push("alice", {"type": "pong"})
    assert report.delivered == ["fine"] and report.failed == ["slow"] and report.gone == []
    assert len(tries) == service.manager.max_retries + 1  # retried by botocore, then given up
    assert mgmt_api.received("fine") == [{"type": "pong"}]
    assert service.connections.get("slow") is not None  # a failed send is not a gone connection


def test_a_transient_transport_error_is_absorbed_by_botocore(service: Any, mgmt_api: Any) -> None:
    from botocore.exceptions import ReadTimeoutError

    connect(service, mgmt_api, "c1", "alice")
    failures = iter([True, False])

    def once(request: Any, **kwargs: Any) -> None:
        if next(failures, False):
            raise ReadTimeoutError(endpoint_url=request.url)

    service.manager.client.meta.events.register("before-send.apigatewaymanagementapi.PostToConnection", once)
    service.manager.send("c1", {"type": "pong"})
    assert mgmt_api.received("c1") == [{"type": "pong"}]


def test_a_reply_to_a_gone_connection_deletes_its_row(service: Any, mgmt_api: Any) -> None:
    connect(service, mgmt_api, "c1", "alice")
    mgmt_api.close("c1")
    assert service.reply("c1", [{"type": "pong"}, {"type": "pong"}]) == 0
    assert service.connections.get("c1") is None


def test_connect_admits_under_the_quota_stores_the_row_and_releases_a_failed_write(
    service: Any, ddb: Any, mgmt_api: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``RequestService.connect`` without a handler: expiry, the quota (asking API Gateway about rows that look
    live), the row's TTL, and the reservation given back when the row's write fails."""
    store = QuotaStore(
        "streamer-quotas", connections_table="streamer-connections", requests_table="streamer-requests", client=ddb
    )
    quotas = Quotas(QuotaLimits(connections_per_user=2), store)
    now = service.now()
    assert service.connect("old", "alice", now, quotas=quotas) == Admission(None, "expired", "token expired")
    first = service.connect("c1", "alice", now + 10 * MAX_CONNECTION_SECONDS, source_ip="10.0.0.1", quotas=quotas)
    assert first.refused is None and first.connection == service.connections.get("c1")
    assert first.connection is not None and first.connection.source_ip == "10.0.0.1"
    assert now <= first.connection.expires_at - MAX_CONNECTION_SECONDS <= service.now()  # API Gateway's bound
    assert service.connect("c2", "alice", now + 60, quotas=quotas).connection.expires_at == now + 60  # the token's
    mgmt_api.open("c1")
    mgmt_api.open("c2")
    over = service.connect("c3", "alice", now + 60, quotas=quotas)
    assert (over.connection, over.refused) == (None, "quota") and service.connections.get("c3") is None
    assert service.connect("b1", "bob", now + 60, quotas=quotas).refused is None  # per user

    def boom(conn: Any) -> None:
        raise RuntimeError("DynamoDB is down")

    monkeypatch.setattr(service.connections, "put", boom)
    with pytest.raises(RuntimeError):
        service.connect("b2", "bob", now + 60, quotas=quotas)
    assert set(store.members("bob", CONNECTIONS) or {}) == {"b1"}


def test_a_steps_progress_events_share_one_read_of_the_users_connections(service: Any, mgmt_api: Any) -> None:
    """StepProgress: one Query for a burst of events; a connection opened meanwhile is found by the next read
    (after PROGRESS_AUDIENCE_SECONDS), a gone one is dropped at once, and the terminal event reads afresh."""
    from streamer.service import Audience

    connect(service, mgmt_api, "c1", "alice")
    connect(service, mgmt_api, "gone", "alice")
    mgmt_api.close("gone")
    ref = service.submit("alice", "echo", {}, "shared").request.ref
    queries: list[str] = []
    service.connections.client.meta.events.register(
        "before-call.dynamodb.Query", lambda **_: queries.append("Query")
    )
    clock = [100.0]
    sink = service.step_progress()
    sink._audiences["alice"] = Audience(lambda: service._connection_ids("alice"), 1.0, clock=lambda: clock[0])
    sink.progress(ref, "s", 10, "one")  # reads: c1 and gone; gone's 410 deletes its row and drops it
    connect(service, mgmt_api, "c2", "alice")
    sink.progress(ref, "s", 20, "two")  # within the second: the same read, c2 not known yet
    assert len(queries) == 1
    assert mgmt_api.received("c2") == [] and [e["percent"] for e in mgmt_api.received("c1")] == [10, 20]
    assert service.connections.get("gone") is None
    clock[0] += 1.0
    sink.progress(ref, "s", 30, "three")  # a second later: read again, c2 gets it
    assert len(queries) == 2 and [e["percent"] for e in mgmt_api.received("c2")] == [30]
    connect(service, mgmt_api, "c3", "alice")
    service.finish(ref, RequestStatus.SUCCEEDED, output={"ok": True})  # terminal: reads afresh
    assert mgmt_api.received("c3")[-1]["type"] == "result" and len(queries) == 3
