"""The $default route's logic: every action, every error code, bad input never stored, never raising."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, Field

from streamer.models import Connection
from streamer.protocol import MAX_MESSAGE_BYTES
from streamer.router import Router


class EchoPayload(BaseModel):
    message: str
    steps: int = Field(default=3, ge=1, le=100)


@dataclass(frozen=True)
class Wf:
    name: str
    description: str
    payload_model: type[BaseModel] | None


CATALOG = {"echo": Wf("echo", "Echo a message", EchoPayload), "free": Wf("free", "Any payload", None)}


@pytest.fixture
def router(service: Any, mgmt_api: Any) -> Router:
    now = service.now()
    service.connections.put(Connection(connection_id="c1", user_id="alice", connected_at=now, expires_at=now + 3600))
    mgmt_api.open("c1")
    return Router(service, lambda: CATALOG, rate_limit_per_minute=1000)


def send(router: Router, msg: Any, user: str = "alice") -> list[dict[str, Any]]:
    raw = msg if isinstance(msg, str | bytes) else json.dumps(msg)
    return router.handle("c1", user, raw)


def count_items(ddb: Any, table: str) -> int:
    return int(ddb.scan(TableName=table, Select="COUNT")["Count"])


def test_ping(router: Router) -> None:
    assert send(router, {"action": "ping"}) == [{"type": "pong"}]


def test_workflows(router: Router) -> None:
    assert send(router, {"action": "workflows"}) == [
        {
            "type": "workflows",
            "workflows": [
                {"name": "echo", "description": "Echo a message"},
                {"name": "free", "description": "Any payload"},
            ],
        }
    ]


def test_submit_status_resume_cancel(router: Router, service: Any, mgmt_api: Any) -> None:
    (ack,) = send(router, {"action": "submit", "workflow": "echo", "payload": {"message": "hi"}, "request_id": "r1"})
    assert ack == {"type": "ack", "request_id": "r1", "workflow": "echo", "status": "PENDING"}
    (st_,) = send(router, {"action": "status", "request_id": "r1"})
    assert st_["type"] == "status" and st_["status"] == "PENDING" and st_["last_seq"] == 0
    assert send(router, {"action": "resume", "request_id": "r1", "after_seq": 0}) == []
    assert send(router, {"action": "cancel", "request_id": "r1"}) == []
    (terminal,) = mgmt_api.received("c1")
    assert terminal["code"] == "CANCELLED" and terminal["seq"] == 1
    assert send(router, {"action": "resume", "request_id": "r1", "after_seq": 0}) == [terminal]
    assert send(router, {"action": "resume", "request_id": "r1", "after_seq": 1}) == []
    # Cancelling again reports the state; nothing new is written.
    (again,) = send(router, {"action": "cancel", "request_id": "r1"})
    assert again["status"] == "CANCELLED" and again["last_seq"] == 1


def test_server_assigned_request_id(router: Router) -> None:
    (ack,) = send(router, {"action": "submit", "workflow": "free", "payload": {}})
    assert ack["type"] == "ack" and len(ack["request_id"]) == 32


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        ("{not json", "VALIDATION_ERROR"),
        ("[1, 2]", "VALIDATION_ERROR"),
        ('"ping"', "VALIDATION_ERROR"),
        ("null", "VALIDATION_ERROR"),
        (b"\xff\xfe", "VALIDATION_ERROR"),
        ({"nope": 1}, "VALIDATION_ERROR"),
        ({"action": 5}, "VALIDATION_ERROR"),
        ({"action": "dance"}, "UNKNOWN_ACTION"),
        ({"action": "ping", "extra": 1}, "VALIDATION_ERROR"),
        ({"action": "submit"}, "VALIDATION_ERROR"),
        ({"action": "submit", "workflow": "echo", "payload": []}, "VALIDATION_ERROR"),
        ({"action": "submit", "workflow": "echo", "payload": {"message": 1}}, "VALIDATION_ERROR"),
        ({"action": "submit", "workflow": "echo", "payload": {"message": "x", "steps": 0}}, "VALIDATION_ERROR"),
        (
            {"action": "submit", "workflow": "echo", "payload": {"message": "x"}, "request_id": "bad id!"},
            "VALIDATION_ERROR",
        ),
        (
            {"action": "submit", "workflow": "echo", "payload": {"message": "x"}, "request_id": "x" * 65},
            "VALIDATION_ERROR",
        ),
        ({"action": "submit", "workflow": "echo", "payload": {"message": "x"}, "request_id": ""}, "VALIDATION_ERROR"),
        ({"action": "submit", "workflow": "nope", "payload": {}}, "UNKNOWN_WORKFLOW"),
        ({"action": "status"}, "VALIDATION_ERROR"),
        ({"action": "status", "request_id": 7}, "VALIDATION_ERROR"),
        ({"action": "status", "request_id": "missing"}, "NOT_FOUND"),
        ({"action": "resume", "request_id": "missing", "after_seq": 0}, "NOT_FOUND"),
        ({"action": "resume", "request_id": "r", "after_seq": -1}, "VALIDATION_ERROR"),
        ({"action": "resume", "request_id": "r", "after_seq": "3"}, "VALIDATION_ERROR"),
        ({"action": "cancel", "request_id": "missing"}, "NOT_FOUND"),
        ("{" * 100_000, "VALIDATION_ERROR"),
        ({"action": "submit", "workflow": "free", "payload": {"blob": "x" * MAX_MESSAGE_BYTES}}, "PAYLOAD_TOO_LARGE"),
    ],
)
def test_bad_input_gets_its_code_and_stores_nothing(router: Router, ddb: Any, raw: Any, code: str) -> None:
    (reply,) = send(router, raw)
    assert reply["type"] == "error" and reply["code"] == code, reply
    assert isinstance(reply["message"], str) and reply["message"]
    assert count_items(ddb, "streamer-requests") == 0
    assert count_items(ddb, "streamer-events") == 0
    assert send(router, {"action": "ping"}) == [{"type": "pong"}]  # the connection stays usable


def test_conflict(router: Router) -> None:
    send(router, {"action": "submit", "workflow": "free", "payload": {"a": 1}, "request_id": "dup"})
    (again,) = send(router, {"action": "submit", "workflow": "free", "payload": {"a": 1}, "request_id": "dup"})
    assert again["type"] == "ack"
    (conflict,) = send(router, {"action": "submit", "workflow": "free", "payload": {"a": 2}, "request_id": "dup"})
    assert conflict["code"] == "CONFLICT"


def test_other_users_request_is_not_found(router: Router) -> None:
    send(router, {"action": "submit", "workflow": "free", "payload": {}, "request_id": "mine"})
    for action in ("status", "cancel", "resume"):
        (reply,) = send(router, {"action": action, "request_id": "mine"}, user="mallory")
        assert reply == {"type": "error", "code": "NOT_FOUND", "message": "no such request"}


def test_rate_limited(service: Any, mgmt_api: Any) -> None:
    now = service.now()
    service.connections.put(Connection(connection_id="c1", user_id="alice", connected_at=now, expires_at=now + 3600))
    router = Router(service, lambda: CATALOG, rate_limit_per_minute=3)
    replies = [router.handle("c1", "alice", '{"action":"ping"}')[0] for _ in range(5)]
    assert [r["type"] for r in replies] == ["pong", "pong", "pong", "error", "error"]
    assert replies[-1]["code"] == "RATE_LIMITED"


def test_internal_error_leaks_nothing(router: Router, monkeypatch: Any) -> None:
    def boom(*a: Any, **k: Any) -> Any:
        raise RuntimeError("secret-db-password at /srv/app.py line 3")

    monkeypatch.setattr(router.service, "submit", boom)
    (reply,) = send(router, {"action": "submit", "workflow": "free", "payload": {}})
    assert reply == {"type": "error", "code": "INTERNAL_ERROR", "message": "internal error"}


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=20,
)
messages = st.one_of(
    json_values,
    st.fixed_dictionaries(
        {"action": st.sampled_from(["ping", "submit", "status", "cancel", "resume", "workflows", "x"])},
        optional={
            "workflow": json_values,
            "payload": json_values,
            "request_id": json_values,
            "after_seq": json_values,
            "extra": json_values,
        },
    ),
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(msg=messages)
def test_arbitrary_json_never_raises_and_stores_nothing_invalid(router: Router, ddb: Any, msg: Any) -> None:
    if isinstance(msg, dict) and msg.get("action") == "submit":
        msg.pop("request_id", None)  # keep "nothing stored" checkable: valid submits are filtered below
    replies = send(router, msg)
    assert isinstance(replies, list)
    for reply in replies:
        assert reply["type"] in {"pong", "workflows", "ack", "status", "error"}
        if reply["type"] == "error":
            assert reply["code"] != "INTERNAL_ERROR"
    acked = [r for r in replies if r["type"] == "ack"]
    stored = count_items(ddb, "streamer-requests")
    for item in ddb.scan(TableName="streamer-requests")["Items"]:
        ddb.delete_item(
            TableName="streamer-requests", Key={"user_id": item["user_id"], "request_id": item["request_id"]}
        )
    assert stored == len(acked)
