"""Security figures at the handlers (moto, recorded API Gateway events): forged tokens, bad origins, fuzzed
messages, cross-user access. Each test prints its figure; docs/reliability.md records them with the command.

CI runs a sample of the fuzz figure; the full one: ``STREAMER_FUZZ_MESSAGES=100000 .venv/bin/pytest -q -s
tests/functional/test_security.py -k fuzz``.
"""

from __future__ import annotations

import base64
import dataclasses
import io
import json
import logging
import os
import time
from collections.abc import Callable, Iterator
from contextlib import redirect_stdout
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from streamer.config import Settings
from streamer.handlers import connect
from streamer.models import Connection
from streamer.router import Router
from tests.functional.edge import connect_event, wired_handlers
from tests.functional.test_router import CATALOG

SECRET = "security-test-secret-0123456789abcdef0123"
ISS, AUD = "https://issuer.test", "streamer"
ALLOWED = "https://app.example.com"


@pytest.fixture
def settings() -> Settings:  # overrides tests/functional/conftest.py's
    return Settings(rate_limit_per_minute=100000, allowed_origins=(ALLOWED,))


@pytest.fixture(autouse=True)
def wired(service: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    with wired_handlers(service, monkeypatch, SECRET, issuer=ISS, audience=AUD):
        yield


def _claims(**over: Any) -> dict[str, Any]:
    now = int(time.time())
    base: dict[str, Any] = {"sub": "alice", "iat": now, "exp": now + 600, "iss": ISS, "aud": AUD}
    base.update(over)
    return {k: v for k, v in base.items() if v is not None}


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unsigned(header: dict[str, Any], claims: dict[str, Any], sig: str = "") -> str:
    return f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(claims).encode())}.{sig}"


def _rsa() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def forged_tokens() -> dict[str, list[str | None]]:
    """At least 20 tokens in each of 14 classes, none of which may connect."""
    now = int(time.time())
    key = _rsa()
    pub_pem = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    good = jwt.encode(_claims(), SECRET, algorithm="HS256")
    h, p, s = good.split(".")
    n = range(20)
    classes: dict[str, list[str | None]] = {
        "none": [None, "", " ", "bearer.", "null", "undefined", *[" " * i for i in range(2, 16)]],
        "alg_none": [
            _unsigned({"alg": alg, "typ": "JWT"}, _claims(sub=f"u{i}"), sig)
            for i, (alg, sig) in enumerate(
                [(a, sg) for a in ("none", "None", "NONE", "nOnE", "") for sg in ("", s, "AAAA", "x")]
            )
        ],
        "hs_rs_confusion": [
            *[jwt.encode(_claims(sub=f"u{i}"), key, algorithm="RS256") for i in range(10)],
            # The classic: an RS public key used as the HMAC secret (pyjwt refuses to sign with a PEM, so by hand).
            *[_hmac_token(_claims(sub=f"p{i}"), pub_pem) for i in range(10)],
        ],
        "missing_claims": [
            jwt.encode(_claims(**{c: None}, jti=str(i)), SECRET, algorithm="HS256")
            for i in range(4)
            for c in ("sub", "exp", "iat", "iss", "aud")
        ],
        "wrong_claims": [
            jwt.encode(_claims(**over, jti=str(i)), SECRET, algorithm="HS256")
            for i in range(4)
            for over in (
                {"iss": "https://evil.example"},
                {"aud": "someone-else"},
                {"sub": ""},
                {"sub": 12345},
                {"sub": "alice\x00bob"},
            )
        ],
        "expired": [jwt.encode(_claims(exp=now - 61 - 100 * i, iat=now - 7200), SECRET, algorithm="HS256") for i in n],
        # Accepted by the signature check within the 30 s leeway, but already past exp: refused at $connect.
        "expired_within_leeway": [
            jwt.encode(_claims(exp=now - 1 - i, iat=now - 600), SECRET, algorithm="HS256") for i in n
        ],
        "future_nbf": [jwt.encode(_claims(nbf=now + 120 + 60 * i), SECRET, algorithm="HS256") for i in n],
        "future_iat": [jwt.encode(_claims(iat=now + 3600 + i), SECRET, algorithm="HS256") for i in n],
        "unknown_or_injected_kid": [
            _hmac_token(_claims(), f"attacker-secret-{i:02d}-0123456789abcdef".encode(), {"alg": "HS256", **hdr})
            for i, hdr in enumerate(
                [
                    {"kid": "no-such-key"},
                    {"kid": "../../../../etc/passwd"},
                    {"kid": "' OR '1'='1"},
                    {"kid": "key\x00null"},
                    {"jku": "https://evil.example/jwks.json", "kid": "k"},
                    {"x5u": "https://evil.example/cert.pem"},
                    {"jwk": {"kty": "oct", "k": _b64(b"attacker-secret-00-0123456789abcdef")}},
                    {"kid": "a" * 500},
                    {"kid": 12345},
                    {"kid": None},
                ]
                * 2
            )
        ],
        "wrong_signature": [
            *[f"{h}.{p}.{_b64(os.urandom(32))}" for _ in range(10)],
            *[jwt.encode(_claims(), SECRET + str(i), algorithm="HS256") for i in range(5)],
            f"{h}.{p}.",  # signature stripped
            f"{h}.{_b64(json.dumps(_claims(sub='mallory')).encode())}.{s}",  # payload swapped under a signature
            f"{h}.{p}.{s[:-2]}",
            f"{h}.{p}.{s}AA",
            f"{h}.{p}.{s.upper()}",
        ],
        "oversized": [jwt.encode(_claims(pad="x" * (8192 + 100 * i)), SECRET, algorithm="HS256") for i in n],
        "malformed": [
            "not-a-jwt",
            "a.b",
            "a.b.c.d",
            "....",
            f"{h}.{p}",
            f"{h}..{s}",
            f".{p}.{s}",
            "eyJ.eyJ.sig",
            f"{_b64(b'not json')}.{p}.{s}",
            f"{_b64(b'[1,2]')}.{p}.{s}",
            f"{h}.{_b64(b'not json')}.{s}",
            f"{h}.{_b64(b'[]')}.{s}",
            f"{h}.{_b64(b'null')}.{s}",
            f"{h}.{p}.{s}.{s}",
            "%%%.%%%.%%%",
            "\t".join([h, p, s]),
            good.replace(".", ",", 1),
            f"{h}.{p}.{s}" + "." * 3,
            good[::-1],
            "=" * 40,
        ],
        "non_utf8_or_non_ascii": [
            "é" + good,
            good + "ü",
            "токен.токен.токен",
            "\ud800" + good,
            good[:10] + "\u202e" + good[10:],
            "\x00" * 10,
            "\xff\xfe" + good,
            "😀." * 3,
            *[good[:i] + "\x80" + good[i:] for i in range(5, 65, 5)],
        ],
    }
    return classes


def _hmac_token(claims: dict[str, Any], key: bytes, header: dict[str, Any] | None = None) -> str:
    """An HS256 token signed by hand (pyjwt refuses some of these headers and PEM keys as secrets)."""
    import hashlib
    import hmac

    head = _b64(json.dumps(header or {"alg": "HS256", "typ": "JWT"}).encode())
    body = _b64(json.dumps(claims).encode())
    sig = hmac.new(key, f"{head}.{body}".encode(), hashlib.sha256).digest()
    return f"{head}.{body}.{_b64(sig)}"


def _count(ddb: Any, table: str) -> int:
    return int(ddb.scan(TableName=table, Select="COUNT")["Count"])


def _run_capturing_logs(fn: Callable[[], None]) -> str:
    """Run ``fn`` with every log record (any logger, DEBUG and up) and stdout (Powertools) captured."""
    buf = io.StringIO()
    handler = logging.StreamHandler(buf)
    handler.setLevel(logging.DEBUG)
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    out = io.StringIO()
    try:
        with redirect_stdout(out):
            fn()
    finally:
        root.removeHandler(handler)
        root.setLevel(old_level)
    return buf.getvalue() + out.getvalue()


def test_forged_tokens_never_connect_and_valid_ones_do(service: Any, ddb: Any) -> None:
    classes = forged_tokens()
    assert len(classes) >= 12 and all(len(v) >= 20 for v in classes.values())
    results: dict[str, list[int]] = {}
    valid = [jwt.encode(_claims(sub=f"valid-user-{i}"), SECRET, algorithm="HS256") for i in range(10)]
    accepted_valid: list[int] = []

    def run() -> None:
        i = 0
        for name, tokens in classes.items():
            for tok in tokens:
                for via in ("header", "query"):
                    i += 1
                    resp = connect.handler(connect_event(tok, cid=f"forged-{i}", via=via), None)
                    results.setdefault(name, []).append(resp["statusCode"])
        for j, tok in enumerate(valid):
            accepted_valid.append(connect.handler(connect_event(tok, cid=f"valid-{j}"), None)["statusCode"])

    logs = _run_capturing_logs(run)
    total = sum(len(v) for v in results.values())
    statuses = {s for v in results.values() for s in v}
    print(
        f"\nforged tokens: {total} handshakes ({sum(map(len, classes.values()))} tokens x 2 ways) "
        f"in {len(classes)} classes; statuses {sorted(statuses)}; valid {accepted_valid.count(200)}/10"
    )
    assert total >= 240
    assert statuses <= {401, 403}, {k: v for k, v in results.items() if set(v) - {401, 403}}  # 0 accepted, 0 errors
    assert accepted_valid == [200] * 10
    assert _count(ddb, "streamer-connections") == 10  # only the valid ones stored
    # 0 token signatures in the logs (every forged token's and every valid token's third segment).
    signatures = {
        t.split(".")[2]
        for t in [*valid, *(x for v in classes.values() for x in v if x)]
        if t.count(".") == 2 and len(t.split(".")[2]) >= 16
    }
    assert signatures and not [sig for sig in signatures if sig in logs]


def test_a_token_expired_within_the_leeway_is_refused(service: Any, ddb: Any) -> None:
    now = int(time.time())
    tok = jwt.encode(_claims(exp=now - 5, iat=now - 600), SECRET, algorithm="HS256")
    assert connect.handler(connect_event(tok, cid="leeway"), None) == {"statusCode": 401}
    assert service.connections.get("leeway") is None


BAD_ORIGINS = ["https://evil.example", "https://app.example.com.evil.example", "null"]


def test_bad_origins_are_refused_and_store_nothing(service: Any, ddb: Any) -> None:
    tok = jwt.encode(_claims(), SECRET, algorithm="HS256")
    variants = [
        *BAD_ORIGINS,
        "http://app.example.com",  # scheme differs
        "https://app.example.com:8443",  # port differs
        "https://APP.example.com.evil.example",
        "https://app.example.co",
        "https://app.example.com, https://evil.example",  # two origins in one header
        "",
    ]
    statuses = [
        connect.handler(connect_event(tok, cid=f"o{i}", origin=variants[i % len(variants)]), None)["statusCode"]
        for i in range(50)
    ]
    print(f"\nbad origins: 50 handshakes, accepted {statuses.count(200)}, statuses {sorted(set(statuses))}")
    assert statuses == [403] * 50
    assert _count(ddb, "streamer-connections") == 0 and _count(ddb, "streamer-quotas") == 0
    # The allowed origin and a client that sends none (not a browser) connect.
    assert connect.handler(connect_event(tok, cid="ok", origin=ALLOWED), None)["statusCode"] == 200
    assert connect.handler(connect_event(tok, cid="no-origin"), None)["statusCode"] == 200


def test_missing_origin_can_be_refused(service: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(service, "settings", dataclasses.replace(service.settings, allow_missing_origin=False))
    tok = jwt.encode(_claims(), SECRET, algorithm="HS256")
    assert connect.handler(connect_event(tok, cid="none"), None)["statusCode"] == 403
    assert connect.handler(connect_event(tok, cid="ok", origin=ALLOWED), None)["statusCode"] == 200


# ----------------------------------------------------------------------------------------- fuzzing

_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
_field_values = _json | st.text(max_size=300) | st.integers(min_value=-(10**40), max_value=10**40)
_actions = st.sampled_from(["ping", "submit", "status", "cancel", "resume", "workflows", "", "PING", 7, None])
_fields = st.sampled_from(["action", "workflow", "payload", "request_id", "after_seq", "extra", "message"])
_model_messages = st.dictionaries(_fields, _field_values, max_size=6).flatmap(
    lambda d: _actions.map(lambda a: {**d, "action": a})
)


def _encode(msg: Any) -> str | bytes:
    try:
        return json.dumps(msg, allow_nan=True)
    except (ValueError, TypeError):
        return b"\xff"


_messages = st.one_of(
    _model_messages.map(_encode),  # shaped like the protocol's models, with wrong / extra / missing fields
    st.binary(max_size=300),  # raw bytes
    st.text(max_size=300),  # raw text
    _json.map(_encode),  # any JSON
)

FUZZ_MESSAGES = int(os.environ.get("STREAMER_FUZZ_MESSAGES", "2000"))
_BATCH = 50


def test_fuzzed_messages_never_crash_or_store(service: Any, ddb: Any, mgmt_api: Any) -> None:
    now = service.now()
    service.connections.put(Connection(connection_id="fz", user_id="fuzz", connected_at=now, expires_at=now + 3600))
    router = Router(service, lambda: CATALOG)  # no rate limit: every message reaches the parser
    seen = {"messages": 0, "internal": 0, "acks": 0}

    @hsettings(
        max_examples=max(1, FUZZ_MESSAGES // _BATCH),
        deadline=None,
        derandomize=True,
        suppress_health_check=list(HealthCheck),
        database=None,
    )
    @given(st.lists(_messages, min_size=_BATCH, max_size=_BATCH))
    def run(batch: list[str | bytes]) -> None:
        for raw in batch:
            replies = router.handle("fz", "fuzz", raw)
            seen["messages"] += 1
            assert replies and all(isinstance(r, dict) and "type" in r for r in replies)
            seen["internal"] += sum(r.get("code") == "INTERNAL_ERROR" for r in replies)
            seen["acks"] += sum(r.get("type") == "ack" for r in replies)

    run()
    stored = _count(ddb, "streamer-requests")
    print(
        f"\nfuzz: {seen['messages']} messages, {seen['internal']} crashes (INTERNAL_ERROR), "
        f"{seen['acks']} valid submits, {stored} stored requests, events {_count(ddb, 'streamer-events')}"
    )
    assert seen["messages"] >= FUZZ_MESSAGES
    assert seen["internal"] == 0
    assert stored == seen["acks"]  # a refused message stores nothing; only an acked submit does
    assert _count(ddb, "streamer-events") == 0
    assert router.handle("fz", "fuzz", '{"action": "ping"}') == [{"type": "pong"}]  # still answers


# -------------------------------------------------------------------------------------- cross-user


def test_another_users_request_is_not_found(service: Any, mgmt_api: Any) -> None:
    now = service.now()
    for cid, user in (("cb", "bob"), ("cm", "mallory")):
        service.connections.put(Connection(connection_id=cid, user_id=user, connected_at=now, expires_at=now + 3600))
        mgmt_api.open(cid)
    router = Router(service, lambda: CATALOG)
    ids = [f"bob-{i}" for i in range(34)]
    for rid in ids:
        (ack,) = router.handle(
            "cb", "bob", json.dumps({"action": "submit", "workflow": "free", "payload": {}, "request_id": rid})
        )
        assert ack["type"] == "ack"
    attempts = []
    for i in range(100):
        rid = ids[i % len(ids)]
        action = ("status", "resume", "cancel")[i % 3]
        msg: dict[str, Any] = {"action": action, "request_id": rid}
        if action == "resume":
            msg["after_seq"] = 0
        attempts.extend(router.handle("cm", "mallory", json.dumps(msg)))
    codes = [a.get("code") for a in attempts]
    print(f"\ncross-user: {len(codes)} attempts, {codes.count('NOT_FOUND')} NOT_FOUND")
    assert len(codes) == 100 and codes == ["NOT_FOUND"] * 100
    # Nothing changed for bob: every request still PENDING, no event written, nothing pushed to mallory.
    for rid in ids:
        (st_,) = router.handle("cb", "bob", json.dumps({"action": "status", "request_id": rid}))
        assert st_["status"] == "PENDING" and st_["last_seq"] == 0
    assert mgmt_api.received("cm") == []
