"""The WebSocket Lambda handlers driven with recorded API Gateway events (tests/events/*.json) on moto."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterator
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from streamer.handlers import connect, disconnect, router
from tests.functional.conftest import load_event
from tests.functional.edge import connect_event, wired_handlers

SECRET = "functional-test-secret-0123456789abcdef"
CID = "Rk2AAdIZIAMCI_Q="


@pytest.fixture(autouse=True)
def wired(service: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    with wired_handlers(service, monkeypatch, SECRET, issuer="https://issuer.test", audience="streamer"):
        yield


def claims(**over: Any) -> dict[str, Any]:
    now = int(time.time())
    base = {"sub": "alice", "iat": now, "exp": now + 600, "iss": "https://issuer.test", "aud": "streamer"}
    base.update(over)
    return {k: v for k, v in base.items() if v is not None}


def token(**over: Any) -> str:
    return jwt.encode(claims(**over), SECRET, algorithm="HS256")


def stored(service: Any, cid: str = CID) -> Any:
    return service.connections.get(cid)


def test_connect_with_header_token_selects_subprotocol(service: Any) -> None:
    resp = connect.handler(connect_event(token()), None)
    assert resp == {"statusCode": 200, "headers": {"Sec-WebSocket-Protocol": "streamer.v1"}}
    conn = stored(service)
    assert conn.user_id == "alice"
    assert conn.source_ip == "203.0.113.10"


def test_connect_with_query_token(service: Any) -> None:
    resp = connect.handler(connect_event(token(), via="query"), None)
    assert resp == {"statusCode": 200}
    assert stored(service).user_id == "alice"


def test_connection_expiry_is_the_earlier_of_exp_and_two_hours(service: Any) -> None:
    now = int(time.time())
    connect.handler(connect_event(token(exp=now + 300), cid="short"), None)
    connect.handler(connect_event(token(exp=now + 86400), cid="long"), None)
    assert stored(service, "short").expires_at == now + 300
    assert abs(stored(service, "long").expires_at - (now + 7200)) <= 2


def _rsa_pub_pem() -> bytes:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def _unsigned(**over: Any) -> str:
    header = base64.urlsafe_b64encode(json.dumps({"alg": "none", "typ": "JWT"}).encode()).rstrip(b"=")
    body = base64.urlsafe_b64encode(json.dumps(claims(**over)).encode()).rstrip(b"=")
    return f"{header.decode()}.{body.decode()}."


REJECTED = {
    "alg_none": lambda: _unsigned(),
    "missing_exp": lambda: token(exp=None),
    "missing_iat": lambda: token(iat=None),
    "missing_sub": lambda: token(sub=None),
    "expired": lambda: token(exp=int(time.time()) - 3600, iat=int(time.time()) - 7200),
    "nbf_future": lambda: token(nbf=int(time.time()) + 3600),
    "wrong_iss": lambda: token(iss="https://evil.test"),
    "wrong_aud": lambda: token(aud="someone-else"),
    "wrong_secret": lambda: jwt.encode(claims(), "another-secret-0123456789abcdef0123", algorithm="HS256"),
    "rs256_not_allowed": lambda: jwt.encode(
        claims(), rsa.generate_private_key(public_exponent=65537, key_size=2048), algorithm="RS256"
    ),
    "garbage": lambda: "not.a.jwt",
    "huge": lambda: token(pad="x" * 10_000),
    "empty": lambda: "",
}


@pytest.mark.parametrize("case", sorted(REJECTED))
def test_connect_rejects_bad_tokens_and_stores_nothing(
    service: Any, ddb: Any, case: str, caplog: pytest.LogCaptureFixture
) -> None:
    tok = REJECTED[case]()
    resp = connect.handler(connect_event(tok), None)
    assert resp == {"statusCode": 401}
    assert ddb.scan(TableName="streamer-connections", Select="COUNT")["Count"] == 0
    if tok:
        assert tok not in "\n".join(json.dumps(r.__dict__, default=str) for r in caplog.records)


def test_connect_without_token_is_401(ddb: Any) -> None:
    assert connect.handler(connect_event(None, via="query"), None) == {"statusCode": 401}
    assert ddb.scan(TableName="streamer-connections", Select="COUNT")["Count"] == 0


def test_valid_token_without_required_scope_is_403(ddb: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STREAMER_JWT_REQUIRED_SCOPE", "streamer:connect")
    connect.get_authenticator.cache_clear()
    assert connect.handler(connect_event(token(scope="other")), None) == {"statusCode": 403}
    assert connect.handler(connect_event(token(scope="a streamer:connect"), cid="ok"), None)["statusCode"] == 200
    assert ddb.scan(TableName="streamer-connections", Select="COUNT")["Count"] == 1


def test_malformed_connect_event_is_400(ddb: Any) -> None:
    assert connect.handler({"requestContext": {}}, None) == {"statusCode": 400}


def test_token_never_logged(caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]) -> None:
    caplog.set_level("DEBUG")
    good, bad = token(), token(iss="https://evil.test")
    connect.handler(connect_event(good), None)
    connect.handler(connect_event(bad, cid="x"), None)
    connect.handler(connect_event(good + "tampered", cid="y"), None)
    out = capfd.readouterr()
    records = [json.dumps(r.__dict__, default=str) for r in caplog.records]
    assert any("connected" in r for r in records)  # the handler did log
    assert any("connect refused" in r for r in records)
    text = "\n".join(records) + out.out + out.err
    for t in (good, bad):
        for part in t.split(".")[1:]:
            assert part not in text


def test_disconnect_removes_the_row(service: Any) -> None:
    connect.handler(connect_event(token()), None)
    assert stored(service) is not None
    assert disconnect.handler(load_event("disconnect"), None) == {"statusCode": 200}
    assert stored(service) is None
    # A second disconnect (AWS delivers at most once, but be safe) is harmless.
    assert disconnect.handler(load_event("disconnect"), None) == {"statusCode": 200}


def message(body: Any, cid: str = CID, b64: bool = False) -> dict[str, Any]:
    raw = body if isinstance(body, str) else json.dumps(body)
    if b64:
        raw = base64.b64encode(raw.encode()).decode()
    return load_event("message", body=raw, isBase64Encoded=b64, requestContext={"connectionId": cid})


def test_router_answers_through_the_management_api(service: Any, mgmt_api: Any) -> None:
    connect.handler(connect_event(token()), None)
    mgmt_api.open(CID)
    assert router.handler(message({"action": "ping"}), None) == {"statusCode": 200}
    assert router.handler(message({"action": "ping"}, b64=True), None) == {"statusCode": 200}
    assert router.handler(message("{oops"), None) == {"statusCode": 200}
    got = mgmt_api.received(CID)
    assert got[0] == {"type": "pong"} and got[1] == {"type": "pong"}
    assert got[2]["code"] == "VALIDATION_ERROR"


def test_router_submit_with_installed_workflow(service: Any, mgmt_api: Any) -> None:
    connect.handler(connect_event(token()), None)
    mgmt_api.open(CID)
    router.handler(message({"action": "workflows"}), None)
    router.handler(
        message({"action": "submit", "workflow": "echo", "payload": {"message": "hi"}, "request_id": "h1"}), None
    )
    router.handler(message({"action": "submit", "workflow": "echo", "payload": {"message": 3}}), None)
    wf, ack, bad = mgmt_api.received(CID)
    assert {"echo", "textstats"} <= {w["name"] for w in wf["workflows"]}
    assert ack == {"type": "ack", "request_id": "h1", "workflow": "echo", "status": "PENDING"}
    assert bad["code"] == "VALIDATION_ERROR"
    assert service.requests.get("alice", "h1").payload == {"message": "hi"}


def test_router_refuses_unknown_or_expired_connection(service: Any, mgmt_api: Any) -> None:
    mgmt_api.open("ghost")
    router.handler(message({"action": "ping"}, cid="ghost"), None)
    assert mgmt_api.received("ghost") == [
        {"type": "error", "code": "FORBIDDEN", "message": "connection is not authenticated or has expired"}
    ]


def test_router_survives_a_closed_caller(service: Any, mgmt_api: Any) -> None:
    connect.handler(connect_event(token()), None)
    # The caller left before the reply: the handler neither raises nor retries forever.
    assert router.handler(message({"action": "ping"}), None) == {"statusCode": 200}
    assert mgmt_api.received(CID) == []


@pytest.mark.parametrize("store", ["ssm", "secretsmanager"])
def test_jwt_secret_resolved_from_its_arn_at_cold_start(
    service: Any, monkeypatch: pytest.MonkeyPatch, store: str
) -> None:
    import boto3

    kept = "kept-in-a-secret-store-0123456789abcdef"
    if store == "ssm":
        ssm = boto3.client("ssm", region_name="us-east-1")
        ssm.put_parameter(Name="/streamer/jwt", Value=kept, Type="SecureString")
        arn = "arn:aws:ssm:us-east-1:123456789012:parameter/streamer/jwt"
    else:
        arn = boto3.client("secretsmanager", region_name="us-east-1").create_secret(
            Name="streamer-jwt", SecretString=kept
        )["ARN"]
    monkeypatch.delenv("STREAMER_JWT_SECRET")
    monkeypatch.setenv("STREAMER_JWT_SECRET_ARN", arn)
    connect.get_authenticator.cache_clear()
    good = jwt.encode(claims(), kept, algorithm="HS256")
    assert connect.handler(connect_event(good), None)["statusCode"] == 200
    assert connect.handler(connect_event(token(), cid="old-secret"), None)["statusCode"] == 401


def test_log_keys_of_one_invocation_do_not_leak_into_the_next() -> None:
    import io
    import logging

    from streamer.handlers._runtime import get_logger

    logger = get_logger()
    buf = io.StringIO()
    h = logging.StreamHandler(buf)
    h.setFormatter(logger.registered_formatter)
    logger.addHandler(h)
    try:
        connect.handler(connect_event(token(), cid="first-connection"), None)
        disconnect.handler(load_event("disconnect", requestContext={"connectionId": "second"}), None)
    finally:
        logger.removeHandler(h)
    lines = [json.loads(line) for line in buf.getvalue().splitlines()]
    (first,) = [x for x in lines if x["message"] == "connected"]
    (second,) = [x for x in lines if x["message"] == "disconnected"]
    assert first["connection_id"] == "first-connection"
    assert "first-connection" not in json.dumps(second)


def test_router_refuses_an_expired_connection(service: Any, mgmt_api: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    import dataclasses

    from streamer.models import Connection

    monkeypatch.setattr(service, "settings", dataclasses.replace(service.settings, apigw_endpoint=mgmt_api.url))
    now = int(time.time())
    service.connections.put(
        Connection(connection_id="stale", user_id="alice", connected_at=now - 7300, expires_at=now - 100)
    )
    mgmt_api.open("stale")
    router.handler(message({"action": "ping"}, cid="stale"), None)
    # The reason goes out first, then the connection is closed (DELETE @connections/{id}); docs/protocol.md.
    assert mgmt_api.received("stale") == [
        {
            "type": "error",
            "code": "FORBIDDEN",
            "message": "the connection's token has expired",
            "details": {"reason": "token_expired"},
        }
    ]
    assert mgmt_api.deleted == ["stale"]


def test_router_rate_limits_a_connection(service: Any, mgmt_api: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    import dataclasses

    monkeypatch.setattr(service, "settings", dataclasses.replace(service.settings, rate_limit_per_minute=2))
    connect.handler(connect_event(token()), None)
    mgmt_api.open(CID)
    for _ in range(3):
        router.handler(message({"action": "ping"}), None)
    got = mgmt_api.received(CID)
    assert got[:2] == [{"type": "pong"}, {"type": "pong"}]
    assert got[2]["code"] == "RATE_LIMITED" and got[2]["details"] == {"limit_per_minute": 2}


@pytest.mark.parametrize("route_response", [False, True])
def test_a_reply_over_the_frame_limit_becomes_payload_too_large(
    service: Any, mgmt_api: Any, monkeypatch: pytest.MonkeyPatch, route_response: bool
) -> None:
    """Posted, or returned as the route response (the last reply): either way its PAYLOAD_TOO_LARGE frame."""
    import dataclasses

    monkeypatch.setattr(service, "settings", dataclasses.replace(service.settings, reply_route_response=("$default",) if route_response else ()))
    connect.handler(connect_event(token()), None)
    mgmt_api.open(CID)
    huge = {"type": "status", "blob": "x" * (130 * 1024)}
    monkeypatch.setattr(router.Router, "handle_message", lambda self, cid, raw: [huge, {"type": "pong"}, huge])
    out = router.handler(message({"action": "status", "request_id": "r"}), None)
    (too_large, pong, *last) = mgmt_api.received(CID) + ([json.loads(out["body"])] if route_response else [])
    assert too_large["type"] == "error" and too_large["code"] == "PAYLOAD_TOO_LARGE"
    assert pong == {"type": "pong"}
    assert last[0]["code"] == "PAYLOAD_TOO_LARGE" and last[0]["details"]["limit"] == 128 * 1024


# -- the $default route's route response (STREAMER_REPLY_ROUTE_RESPONSE; infra/template.yaml DefaultRouteResponse) --


@pytest.fixture
def two_way(service: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    import dataclasses

    monkeypatch.setattr(service, "settings", dataclasses.replace(service.settings, reply_route_response=("$default",)))
    return service


def test_the_last_reply_is_the_route_response_and_earlier_ones_are_posted_first(
    two_way: Any, mgmt_api: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    connect.handler(connect_event(token()), None)
    mgmt_api.open(CID)
    assert router.handler(message({"action": "ping"}), None) == {"statusCode": 200, "body": '{"type":"pong"}'}
    assert mgmt_api.received(CID) == []  # no PostToConnection for a one-frame answer
    submit = {"action": "submit", "workflow": "echo", "payload": {"message": "hi"}, "request_id": "rr1"}
    ack = json.loads(router.handler(message(submit), None)["body"])
    assert ack == {"type": "ack", "request_id": "rr1", "workflow": "echo", "status": "PENDING"}
    frames = [{"type": "progress", "seq": 1}, {"type": "progress", "seq": 2}, {"type": "result", "seq": 3}]
    monkeypatch.setattr(router.Router, "handle_message", lambda self, cid, raw: frames)
    out = router.handler(message({"action": "resume", "request_id": "rr1"}), None)
    assert mgmt_api.received(CID) == frames[:2] and json.loads(out["body"]) == frames[2]  # order kept
    monkeypatch.setattr(router.Router, "handle_message", lambda self, cid, raw: [])
    assert router.handler(message({"action": "cancel", "request_id": "rr1"}), None) == {"statusCode": 200}


def test_no_route_response_after_a_post_failed_and_none_to_a_connection_being_closed(
    two_way: Any, mgmt_api: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    import dataclasses

    from streamer.models import Connection

    connect.handler(connect_event(token()), None)  # the caller is gone: the first post meets a 410
    monkeypatch.setattr(router.Router, "handle_message", lambda self, cid, raw: [{"type": "a"}, {"type": "b"}])
    assert router.handler(message({"action": "ping"}), None) == {"statusCode": 200}
    assert service_row_gone(two_way, CID)
    monkeypatch.undo()
    monkeypatch.setattr(
        two_way, "settings", dataclasses.replace(two_way.settings, reply_route_response=("$default",), apigw_endpoint=mgmt_api.url)
    )
    now = int(time.time())
    two_way.connections.put(Connection(connection_id="old", user_id="alice", connected_at=now - 7300, expires_at=now - 1))
    mgmt_api.open("old")
    # The token expired: the FORBIDDEN frame is posted (a route response would follow the close), then closed.
    assert router.handler(message({"action": "ping"}, cid="old"), None) == {"statusCode": 200}
    assert mgmt_api.received("old")[0]["details"] == {"reason": "token_expired"} and mgmt_api.deleted == ["old"]


def service_row_gone(service: Any, cid: str) -> bool:
    return service.connections.get(cid) is None


def _router_log_lines(level: str, *bodies: dict[str, Any]) -> list[dict[str, Any]]:
    import io
    import logging

    from streamer.handlers._runtime import get_logger

    logger = get_logger()
    buf = io.StringIO()
    h = logging.StreamHandler(buf)
    h.setFormatter(logger.registered_formatter)
    logger.addHandler(h)
    before = logger.log_level
    logger.setLevel(level)
    try:
        for body in bodies:
            router.handler(message(body), None)
    finally:
        logger.setLevel(before)
        logger.removeHandler(h)
    return [x for x in map(json.loads, buf.getvalue().splitlines()) if x["message"] == "message handled"]


def test_router_logs_a_line_at_info_per_accepted_or_cancelled_request_only(service: Any, mgmt_api: Any) -> None:
    connect.handler(connect_event(token()), None)
    mgmt_api.open(CID)
    submit = {"action": "submit", "workflow": "echo", "payload": {"message": "hi"}, "request_id": "log-1"}
    quiet = [{"action": "ping"}, {"action": "status", "request_id": "log-1"}, {"action": "resume", "request_id": "log-1"}]
    lines = _router_log_lines("INFO", submit, *quiet, {"action": "cancel", "request_id": "log-1"}, *quiet)
    assert [(x["level"], x.get("request_id")) for x in lines] == [("INFO", "log-1"), ("INFO", "log-1")]
    # At DEBUG every message has its line.
    lines = _router_log_lines("DEBUG", {"action": "ping"}, {"action": "cancel", "request_id": "log-1"})
    assert [x["level"] for x in lines] == ["DEBUG", "DEBUG"]  # the second cancel: already ended, its status
