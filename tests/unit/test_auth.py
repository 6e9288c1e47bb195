"""Tests for streamer.auth: JWT verification (RFC 8725), handshake token extraction, minting, redaction."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import socket
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import FrozenInstanceError
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm
from jwt.warnings import InsecureKeyLengthWarning

from streamer.auth import (
    AuthConfig,
    Authenticator,
    AuthError,
    ForbiddenError,
    Principal,
    RedactTokensFilter,
    extract_token,
    mint_token,
    redact_tokens,
)
from streamer.protocol import SUBPROTOCOL

SECRET = "s" * 32 + "-unit-test-secret"  # >= 32 bytes: no InsecureKeyLengthWarning
OTHER_SECRET = "o" * 48
RSA_KID = "rsa-1"
EC_KID = "ec-1"


# --------------------------------------------------------------------------------------------- keys


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def other_rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def ec_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _pem_private(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()


def _pem_public(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> bytes:
    return key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def _rsa_jwk(key: rsa.RSAPrivateKey, kid: str, alg: str = "RS256") -> dict[str, Any]:
    jwk = RSAAlgorithm.to_jwk(key.public_key(), as_dict=True)
    jwk.update({"kid": kid, "alg": alg, "use": "sig"})
    return jwk


def _ec_jwk(key: ec.EllipticCurvePrivateKey, kid: str) -> dict[str, Any]:
    jwk = ECAlgorithm.to_jwk(key.public_key(), as_dict=True)
    jwk.update({"kid": kid, "alg": "ES256", "use": "sig"})
    return jwk


# ------------------------------------------------------------------------------------- JWKS server


class JwksServer:
    """A real HTTP server on 127.0.0.1 serving a JWKS document and counting fetches."""

    def __init__(self) -> None:
        self.jwks: dict[str, Any] = {"keys": []}
        self.hits = 0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                outer.hits += 1
                body = json.dumps(outer.jwks).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/.well-known/jwks.json"

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(scope="module")
def _jwks_server() -> Iterator[JwksServer]:
    server = JwksServer()
    server.start()
    yield server
    server.stop()


@pytest.fixture
def jwks(
    _jwks_server: JwksServer, rsa_key: rsa.RSAPrivateKey, ec_key: ec.EllipticCurvePrivateKey
) -> JwksServer:
    _jwks_server.jwks = {"keys": [_rsa_jwk(rsa_key, RSA_KID), _ec_jwk(ec_key, EC_KID)]}
    _jwks_server.hits = 0
    return _jwks_server


@pytest.fixture
def rs_auth(jwks: JwksServer) -> Authenticator:
    return Authenticator(AuthConfig(algorithms=("RS256", "ES256"), jwks_url=jwks.url))


@pytest.fixture
def hs_auth() -> Authenticator:
    return Authenticator(AuthConfig(secret=SECRET))


# ------------------------------------------------------------------------------------------ helpers


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _claims(**overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    claims: dict[str, Any] = {"sub": "user-1", "iat": now, "exp": now + 600}
    for name, value in overrides.items():
        if value is _DROP:
            claims.pop(name, None)
        else:
            claims[name] = value
    return claims


_DROP = object()


def _hs(claims: dict[str, Any], secret: str = SECRET, alg: str = "HS256", **headers: Any) -> str:
    return jwt.encode(claims, secret, algorithm=alg, headers=headers or None)


def _rs(claims: dict[str, Any], key: rsa.RSAPrivateKey, kid: str | None = RSA_KID, alg: str = "RS256") -> str:
    return jwt.encode(claims, key, algorithm=alg, headers={"kid": kid} if kid else None)


def _es(claims: dict[str, Any], key: ec.EllipticCurvePrivateKey, kid: str = EC_KID) -> str:
    return jwt.encode(claims, key, algorithm="ES256", headers={"kid": kid})


def _unsigned(header: dict[str, Any], claims: dict[str, Any], signature: bytes = b"") -> str:
    return f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(claims).encode())}.{_b64(signature)}"


def _hmac_forged(header: dict[str, Any], claims: dict[str, Any], key: bytes) -> str:
    signing_input = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(claims).encode())}"
    signature = hmac.new(key, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{_b64(signature)}"


def _rejected(auth: Authenticator, token: str, reason: str | None = None, status: int = 401) -> AuthError:
    with pytest.raises(AuthError) as info:
        auth.verify(token)
    error = info.value
    assert error.status == status
    if reason is not None:
        assert error.reason == reason
        assert str(error) == reason
    if len(token) >= 8:
        assert token not in str(error)
        assert token not in repr(error)
        assert all(token not in str(arg) for arg in error.args)
    assert error.__cause__ is None
    return error


# ------------------------------------------------------------------------------------- valid tokens


def test_valid_hs256_token(hs_auth: Authenticator) -> None:
    claims = _claims(scope="read")
    principal = hs_auth.verify(_hs(claims))
    assert principal == Principal(user_id="user-1", expires_at=claims["exp"], claims=claims)
    assert principal.claims["scope"] == "read"
    with pytest.raises(TypeError):
        principal.claims["sub"] = "someone-else"  # type: ignore[index]
    with pytest.raises(FrozenInstanceError):
        principal.user_id = "x"  # type: ignore[misc]


def test_principal_repr_hides_claims(hs_auth: Authenticator) -> None:
    principal = hs_auth.verify(_hs(_claims(email="alice@example.com")))
    assert "alice@example.com" not in repr(principal)


def test_valid_rs256_token_via_jwks(rs_auth: Authenticator, rsa_key: rsa.RSAPrivateKey) -> None:
    principal = rs_auth.verify(_rs(_claims(sub="alice"), rsa_key))
    assert principal.user_id == "alice"


def test_valid_es256_token_via_jwks(rs_auth: Authenticator, ec_key: ec.EllipticCurvePrivateKey) -> None:
    principal = rs_auth.verify(_es(_claims(sub="bob"), ec_key))
    assert principal.user_id == "bob"


def test_jwks_is_fetched_once_and_lazily(
    jwks: JwksServer, rsa_key: rsa.RSAPrivateKey, ec_key: ec.EllipticCurvePrivateKey
) -> None:
    auth = Authenticator(AuthConfig(algorithms=("RS256", "ES256"), jwks_url=jwks.url))
    assert jwks.hits == 0  # nothing fetched at construction
    for i in range(5):
        auth.verify(_rs(_claims(sub=f"u{i}"), rsa_key))
        auth.verify(_es(_claims(sub=f"v{i}"), ec_key))
    assert jwks.hits == 1


def test_injected_jwks_client_is_used(jwks: JwksServer, rsa_key: rsa.RSAPrivateKey) -> None:
    client = jwt.PyJWKClient(jwks.url)
    auth = Authenticator(AuthConfig(algorithms=("RS256",), jwks_url="https://idp.example/jwks"), client)
    assert auth.verify(_rs(_claims(), rsa_key)).user_id == "user-1"
    assert jwks.hits == 1


def test_issuer_and_audience_accepted_when_matching() -> None:
    auth = Authenticator(AuthConfig(secret=SECRET, issuer="https://idp", audience="streamer"))
    token = _hs(_claims(iss="https://idp", aud=["other", "streamer"]))
    assert auth.verify(token).user_id == "user-1"


def test_expired_within_leeway_is_accepted(hs_auth: Authenticator) -> None:
    now = int(time.time())
    assert hs_auth.verify(_hs(_claims(exp=now - 10, iat=now - 100))).expires_at == now - 10


def test_nbf_in_the_past_is_accepted(hs_auth: Authenticator) -> None:
    assert hs_auth.verify(_hs(_claims(nbf=int(time.time()) - 5))).user_id == "user-1"


# ---------------------------------------------------------------------------------- rejected tokens


@pytest.mark.parametrize("alg", ["none", "None", "NONE", ""])
def test_alg_none_is_rejected(
    alg: str, hs_auth: Authenticator, rs_auth: Authenticator, jwks: JwksServer
) -> None:
    token = _unsigned({"alg": alg, "typ": "JWT"}, _claims())
    _rejected(hs_auth, token, "algorithm not allowed")
    _rejected(rs_auth, token, "algorithm not allowed")
    assert jwks.hits == 0


def test_missing_alg_is_rejected(hs_auth: Authenticator) -> None:
    _rejected(hs_auth, _unsigned({"typ": "JWT"}, _claims(), b"x" * 32), "algorithm not allowed")


def test_hs256_signed_with_rsa_public_key_is_rejected_by_rs256_config(
    rs_auth: Authenticator, rsa_key: rsa.RSAPrivateKey, jwks: JwksServer
) -> None:
    # The classic key-confusion attack: the attacker uses the (public) RSA key as an HMAC secret.
    token = _hmac_forged({"alg": "HS256", "typ": "JWT", "kid": RSA_KID}, _claims(), _pem_public(rsa_key))
    _rejected(rs_auth, token, "algorithm not allowed")
    # ... also when the JWK itself is the HMAC key material
    jwk_bytes = json.dumps(_rsa_jwk(rsa_key, RSA_KID)).encode()
    _rejected(rs_auth, _hmac_forged({"alg": "HS256", "kid": RSA_KID}, _claims(), jwk_bytes))
    assert jwks.hits == 0  # rejected before any key lookup


def test_hs256_config_rejects_rs256_token(hs_auth: Authenticator, rsa_key: rsa.RSAPrivateKey) -> None:
    _rejected(hs_auth, _rs(_claims(), rsa_key), "algorithm not allowed")


def test_hs256_config_rejects_hs256_signed_with_rsa_public_key(rsa_key: rsa.RSAPrivateKey) -> None:
    # Even if an operator pasted the RSA public key as the HMAC secret, PyJWT refuses to use it.
    pem = _pem_public(rsa_key).decode()
    auth = Authenticator(AuthConfig(secret=pem))
    _rejected(auth, _hmac_forged({"alg": "HS256"}, _claims(), pem.encode()), "invalid key")


@pytest.mark.parametrize("claim", ["exp", "iat", "sub"])
def test_missing_required_claim_is_rejected(claim: str, hs_auth: Authenticator) -> None:
    _rejected(hs_auth, _hs(_claims(**{claim: _DROP})), f"missing claim: {claim}")


@pytest.mark.parametrize("sub", ["", "   ", 42, ["alice"], "a\x00b", "line\nbreak"])
def test_invalid_sub_is_rejected(sub: Any, hs_auth: Authenticator) -> None:
    _rejected(hs_auth, _hs(_claims(sub=sub)), "invalid claim: sub")


def test_expired_beyond_leeway_is_rejected(hs_auth: Authenticator) -> None:
    now = int(time.time())
    _rejected(hs_auth, _hs(_claims(exp=now - 120, iat=now - 600)), "token expired")


def test_zero_leeway_rejects_just_expired() -> None:
    auth = Authenticator(AuthConfig(secret=SECRET, leeway_seconds=0))
    now = int(time.time())
    _rejected(auth, _hs(_claims(exp=now - 2, iat=now - 100)), "token expired")


def test_nbf_in_the_future_is_rejected(hs_auth: Authenticator) -> None:
    _rejected(hs_auth, _hs(_claims(nbf=int(time.time()) + 300)), "token not yet valid")


def test_iat_in_the_future_is_rejected(hs_auth: Authenticator) -> None:
    _rejected(hs_auth, _hs(_claims(iat=int(time.time()) + 300)), "token not yet valid")


@pytest.mark.parametrize("exp", ["soon", None])
def test_non_numeric_exp_is_rejected(exp: Any, hs_auth: Authenticator) -> None:
    _rejected(hs_auth, _hs(_claims(exp=exp)))


def test_wrong_issuer_is_rejected() -> None:
    auth = Authenticator(AuthConfig(secret=SECRET, issuer="https://idp"))
    _rejected(auth, _hs(_claims(iss="https://evil")), "invalid issuer")
    _rejected(auth, _hs(_claims()), "missing claim: iss")


def test_wrong_audience_is_rejected() -> None:
    auth = Authenticator(AuthConfig(secret=SECRET, audience="streamer"))
    _rejected(auth, _hs(_claims(aud="other")), "invalid audience")
    _rejected(auth, _hs(_claims(aud=["a", "b"])), "invalid audience")
    _rejected(auth, _hs(_claims()), "missing claim: aud")


def test_wrong_signature_is_rejected(
    hs_auth: Authenticator, rs_auth: Authenticator, other_rsa_key: rsa.RSAPrivateKey
) -> None:
    _rejected(hs_auth, _hs(_claims(), secret=OTHER_SECRET), "invalid signature")
    _rejected(rs_auth, _rs(_claims(), other_rsa_key, kid=RSA_KID), "invalid signature")


def test_tampered_payload_is_rejected(hs_auth: Authenticator) -> None:
    header, _, signature = _hs(_claims()).split(".")
    forged_payload = _b64(json.dumps(_claims(sub="admin")).encode())
    _rejected(hs_auth, f"{header}.{forged_payload}.{signature}", "invalid signature")


def test_unknown_kid_is_rejected_with_401(
    rs_auth: Authenticator, other_rsa_key: rsa.RSAPrivateKey, jwks: JwksServer
) -> None:
    _rejected(rs_auth, _rs(_claims(), other_rsa_key, kid="not-in-jwks"), "unknown signing key")
    _rejected(rs_auth, _rs(_claims(), other_rsa_key, kid="another-unknown"), "unknown signing key")
    assert jwks.hits == 1  # unknown kids do not hammer the JWKS endpoint (PyJWT refresh cooldown)


def test_missing_kid_is_rejected(rs_auth: Authenticator, rsa_key: rsa.RSAPrivateKey) -> None:
    _rejected(rs_auth, _rs(_claims(), rsa_key, kid=None), "missing key id")


def test_kid_of_a_key_for_another_algorithm_is_rejected(
    rs_auth: Authenticator, ec_key: ec.EllipticCurvePrivateKey
) -> None:
    # ES256 is allowed and signed correctly, but the kid names the RSA key (bound to RS256).
    _rejected(rs_auth, _es(_claims(), ec_key, kid=RSA_KID), "algorithm not allowed")


def test_jwks_unreachable_is_a_401() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    auth = Authenticator(AuthConfig(algorithms=("RS256",), jwks_url=f"http://127.0.0.1:{port}/jwks"))
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    _rejected(auth, _rs(_claims(), key), "signing keys unavailable")


def test_weak_rsa_key_in_jwks_is_rejected(jwks: JwksServer) -> None:
    weak = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    jwks.jwks = {"keys": [_rsa_jwk(weak, "weak")]}
    auth = Authenticator(AuthConfig(algorithms=("RS256",), jwks_url=jwks.url))
    with pytest.warns(InsecureKeyLengthWarning):
        token = _rs(_claims(), weak, kid="weak")
    _rejected(auth, token, "invalid key")


@pytest.mark.parametrize(
    "token",
    [
        "",
        "garbage",
        "a.b.c",
        "....",
        "eyJ.eyJ.",
        "Bearer abc.def.ghi",
        "ü.ü.ü",
        "\ud800.x.y",
        _b64(b"not json") + "." + _b64(b"{}") + ".sig",
        _b64(b"[1, 2]") + "." + _b64(b"{}") + ".sig",
        _b64(b'{"alg": "HS256"}') + ".%%%." + _b64(b"sig"),
        _b64(b'{"alg": "HS256"}') + "." + _b64(b"not json") + "." + _b64(b"sig"),
        _b64(b'{"alg": "HS256", "kid": 5}') + "." + _b64(b"{}") + "." + _b64(b"sig"),
        _b64(b'{"alg": ["HS256"]}') + "." + _b64(b"{}") + "." + _b64(b"sig"),
        _b64(b"{" * 5000) + ".e30.",
    ],
)
def test_garbage_is_rejected(token: str, hs_auth: Authenticator, rs_auth: Authenticator) -> None:
    _rejected(hs_auth, token)
    _rejected(rs_auth, token)


def test_non_string_token_is_rejected(hs_auth: Authenticator) -> None:
    with pytest.raises(AuthError, match="missing token"):
        hs_auth.verify(None)  # type: ignore[arg-type]
    with pytest.raises(AuthError):
        hs_auth.verify(b"abc.def.ghi")  # type: ignore[arg-type]


def test_oversized_token_is_rejected_before_parsing(
    hs_auth: Authenticator, monkeypatch: pytest.MonkeyPatch
) -> None:
    token = _hs(_claims(padding="x" * 10_000))
    assert len(token) > 10 * 1024

    def must_not_parse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("the token was parsed")

    monkeypatch.setattr(jwt, "get_unverified_header", must_not_parse)
    monkeypatch.setattr(jwt, "decode", must_not_parse)
    _rejected(hs_auth, token, "token too large")
    _rejected(hs_auth, "x" * 10_240, "token too large")


def test_max_token_bytes_is_configurable() -> None:
    token = _hs(_claims())
    assert Authenticator(AuthConfig(secret=SECRET, max_token_bytes=len(token))).verify(token)
    _rejected(
        Authenticator(AuthConfig(secret=SECRET, max_token_bytes=len(token) - 1)), token, "token too large"
    )


def test_alg_not_in_allow_list_is_rejected(
    hs_auth: Authenticator, jwks: JwksServer, ec_key: ec.EllipticCurvePrivateKey, rsa_key: rsa.RSAPrivateKey
) -> None:
    _rejected(hs_auth, _hs(_claims(), alg="HS384", secret=OTHER_SECRET), "algorithm not allowed")
    _rejected(hs_auth, _hs(_claims(), alg="HS512", secret="k" * 64), "algorithm not allowed")
    rs_only = Authenticator(AuthConfig(algorithms=("RS256",), jwks_url=jwks.url))
    _rejected(rs_only, _es(_claims(), ec_key), "algorithm not allowed")
    _rejected(rs_only, _rs(_claims(), rsa_key, alg="PS256"), "algorithm not allowed")
    assert jwks.hits == 0


# --------------------------------------------------------------------------------------------- scope


@pytest.mark.parametrize(
    "extra",
    [
        {"scope": "stream"},
        {"scope": "read stream write"},
        {"scp": ["read", "stream"]},
        {"scp": "read stream"},
    ],
)
def test_required_scope_present(extra: dict[str, Any]) -> None:
    auth = Authenticator(AuthConfig(secret=SECRET, required_scope="stream"))
    assert auth.verify(_hs(_claims(**extra))).user_id == "user-1"


@pytest.mark.parametrize(
    "extra",
    [
        {},
        {"scope": "read write"},
        {"scope": "streaming"},
        {"scp": ["read"]},
        {"scope": ["stream-x"]},
        {"scp": 5},
    ],
)
def test_required_scope_missing_is_403(extra: dict[str, Any]) -> None:
    auth = Authenticator(AuthConfig(secret=SECRET, required_scope="stream"))
    error = _rejected(auth, _hs(_claims(**extra)), "insufficient scope", status=403)
    assert isinstance(error, ForbiddenError)


def test_scope_is_checked_only_after_the_token_is_valid() -> None:
    auth = Authenticator(AuthConfig(secret=SECRET, required_scope="stream"))
    now = int(time.time())
    error = _rejected(auth, _hs(_claims(exp=now - 300, iat=now - 600)), "token expired")
    assert not isinstance(error, ForbiddenError)


def test_error_statuses() -> None:
    assert AuthError.status == 401
    assert ForbiddenError.status == 403
    assert issubclass(ForbiddenError, AuthError)
    assert AuthError("x").status == 401
    assert ForbiddenError("x").status == 403


# -------------------------------------------------------------------------------------------- config


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"algorithms": ("HS256",)}, "secret"),
        ({"algorithms": ("HS256",), "secret": ""}, "secret"),
        ({"algorithms": ("HS256",), "secret": "short"}, "at least 32 bytes"),
        ({"algorithms": ("HS512",), "secret": "x" * 32}, "at least 64 bytes"),
        ({"algorithms": ("RS256",)}, "JWKS"),
        ({"algorithms": ("ES256",), "secret": SECRET}, "JWKS"),
        ({"algorithms": ("PS256",), "jwks_url": "http://idp.example/jwks"}, "https"),
        ({"algorithms": ("RS256",), "jwks_url": "file:///etc/jwks.json"}, "https"),
        ({"algorithms": ("HS256", "RS256"), "secret": SECRET, "jwks_url": "https://idp/j"}, "mixed"),
        ({"algorithms": ("ES256", "HS512"), "secret": "k" * 64, "jwks_url": "https://idp/j"}, "mixed"),
        ({"algorithms": ("none",)}, "none"),
        ({"algorithms": ("HS256", "None"), "secret": SECRET}, "none"),
        ({"algorithms": ()}, "at least one"),
        ({"algorithms": ("HS1",), "secret": SECRET}, "unsupported"),
        ({"algorithms": ("hs256",), "secret": SECRET}, "unsupported"),
        ({"secret": SECRET, "leeway_seconds": 61}, "leeway"),
        ({"secret": SECRET, "leeway_seconds": 3600}, "leeway"),
        ({"secret": SECRET, "leeway_seconds": -1}, "leeway"),
        ({"secret": SECRET, "max_token_bytes": 0}, "max_token_bytes"),
        ({"secret": SECRET, "required_scope": ""}, "required_scope"),
        ({"secret": SECRET, "required_scope": "a b"}, "required_scope"),
    ],
)
def test_config_validation(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        AuthConfig(**kwargs)


def test_config_accepts_valid_combinations() -> None:
    assert AuthConfig(secret=SECRET).algorithms == ("HS256",)
    assert AuthConfig(algorithms=["HS256", "HS384"], secret="k" * 48).algorithms == ("HS256", "HS384")  # type: ignore[arg-type]
    config = AuthConfig(algorithms=("RS256", "PS256", "ES256"), jwks_url="https://idp.example/jwks")
    assert not config.uses_hmac
    assert AuthConfig(algorithms=("RS256",), jwks_url="http://localhost:8080/jwks").jwks_url
    assert AuthConfig(secret=SECRET, leeway_seconds=60).leeway_seconds == 60
    assert SECRET not in repr(AuthConfig(secret=SECRET))


def test_config_from_env_full() -> None:
    config = AuthConfig.from_env(
        {
            "STREAMER_JWT_ALGORITHMS": " RS256 , ES256 ,",
            "STREAMER_JWT_JWKS_URL": "https://idp.example/.well-known/jwks.json",
            "STREAMER_JWT_ISSUER": "https://idp.example/",
            "STREAMER_JWT_AUDIENCE": "streamer",
            "STREAMER_JWT_LEEWAY": "10",
            "STREAMER_JWT_REQUIRED_SCOPE": "stream",
        }
    )
    assert config == AuthConfig(
        algorithms=("RS256", "ES256"),
        jwks_url="https://idp.example/.well-known/jwks.json",
        issuer="https://idp.example/",
        audience="streamer",
        leeway_seconds=10,
        required_scope="stream",
    )


def test_config_from_env_defaults() -> None:
    config = AuthConfig.from_env({"STREAMER_JWT_SECRET": SECRET, "STREAMER_JWT_ISSUER": ""})
    assert config == AuthConfig(algorithms=("HS256",), secret=SECRET)
    assert config.leeway_seconds == 30 and config.max_token_bytes == 8192 and config.required_scope is None
    # only a JWKS URL: the default allow-list is RS256
    assert AuthConfig.from_env({"STREAMER_JWT_JWKS_URL": "https://idp/jwks"}).algorithms == ("RS256",)


def test_config_from_env_reads_os_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STREAMER_JWT_SECRET", SECRET)
    monkeypatch.setenv("STREAMER_JWT_AUDIENCE", "aud-x")
    config = AuthConfig.from_env()
    assert config.secret == SECRET and config.audience == "aud-x"


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({}, "secret"),
        ({"STREAMER_JWT_SECRET": SECRET, "STREAMER_JWT_LEEWAY": "30s"}, "STREAMER_JWT_LEEWAY"),
        ({"STREAMER_JWT_SECRET": SECRET, "STREAMER_JWT_LEEWAY": "120"}, "leeway"),
        ({"STREAMER_JWT_SECRET": SECRET, "STREAMER_JWT_ALGORITHMS": "none"}, "none"),
        ({"STREAMER_JWT_SECRET": SECRET, "STREAMER_JWT_ALGORITHMS": ","}, "at least one"),
        (
            {
                "STREAMER_JWT_SECRET": SECRET,
                "STREAMER_JWT_JWKS_URL": "https://idp/jwks",
                "STREAMER_JWT_ALGORITHMS": "HS256,RS256",
            },
            "mixed",
        ),
    ],
)
def test_config_from_env_errors(environ: dict[str, str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        AuthConfig.from_env(environ)


# ----------------------------------------------------------------------------------- extract_token


@pytest.mark.parametrize(
    "name", ["Sec-WebSocket-Protocol", "sec-websocket-protocol", "SEC-WEBSOCKET-PROTOCOL"]
)
def test_extract_token_from_subprotocol_any_case(name: str) -> None:
    headers = {"Host": "x", name: f"{SUBPROTOCOL}, bearer.abc.def.ghi"}
    assert extract_token(headers, None) == ("abc.def.ghi", "streamer.v1")


@pytest.mark.parametrize(
    "value",
    [
        "streamer.v1,bearer.abc.def.ghi",
        "  bearer.abc.def.ghi ,   streamer.v1  ",
        "chat, streamer.v1, bearer.abc.def.ghi, other",
        "streamer.v1, Bearer.abc.def.ghi",
    ],
)
def test_extract_token_subprotocol_spacing_and_order(value: str) -> None:
    assert extract_token({"Sec-WebSocket-Protocol": value}, {"token": "from-query"}) == (
        "abc.def.ghi",
        SUBPROTOCOL,
    )


def test_extract_token_without_streamer_subprotocol_offered() -> None:
    assert extract_token({"sec-websocket-protocol": "bearer.abc.def.ghi"}, None) == ("abc.def.ghi", None)
    assert extract_token({"sec-websocket-protocol": "chat, bearer.t"}, None) == ("t", None)


def test_extract_token_subprotocol_without_token_falls_back_to_query() -> None:
    assert extract_token({"Sec-WebSocket-Protocol": "streamer.v1"}, {"token": "q.t.k"}) == (
        "q.t.k",
        "streamer.v1",
    )
    assert extract_token({"Sec-WebSocket-Protocol": "streamer.v1, bearer."}, None) == (None, "streamer.v1")


def test_extract_token_query_fallback() -> None:
    assert extract_token(None, {"token": "q.t.k"}) == ("q.t.k", None)
    assert extract_token({"Host": "example"}, {"token": "q.t.k", "other": "1"}) == ("q.t.k", None)


def test_extract_token_authorization_header() -> None:
    assert extract_token({"authorization": "Bearer a.b.c"}, {"token": "q"}) == ("a.b.c", None)
    assert extract_token({"Authorization": "Basic dXNlcjpwYXNz"}, None) == (None, None)
    # the subprotocol form wins
    headers = {"Authorization": "Bearer a.b.c", "Sec-WebSocket-Protocol": "streamer.v1, bearer.x.y.z"}
    assert extract_token(headers, None) == ("x.y.z", "streamer.v1")


@pytest.mark.parametrize(
    ("headers", "query"),
    [
        (None, None),
        ({}, {}),
        ({"Host": "x"}, {"other": "1"}),
        ({"Sec-WebSocket-Protocol": ""}, {"token": ""}),
    ],
)
def test_extract_token_nothing(headers: dict[str, str] | None, query: dict[str, str] | None) -> None:
    assert extract_token(headers, query) == (None, None)


def test_extracted_token_verifies(hs_auth: Authenticator) -> None:
    token = mint_token(SECRET, "carol")
    extracted, subprotocol = extract_token({"Sec-WebSocket-Protocol": f"streamer.v1, bearer.{token}"}, None)
    assert subprotocol == SUBPROTOCOL
    assert extracted is not None
    assert hs_auth.verify(extracted).user_id == "carol"


# -------------------------------------------------------------------------------------------- mint


def test_mint_token_round_trip() -> None:
    auth = Authenticator(AuthConfig(secret=SECRET, issuer="iss", audience="aud", required_scope="stream"))
    token = mint_token(
        SECRET, "dave", ttl_seconds=120, issuer="iss", audience="aud", extra_claims={"scope": "stream"}
    )
    principal = auth.verify(token)
    assert principal.user_id == "dave"
    now = int(time.time())
    assert now + 115 <= principal.expires_at <= now + 121
    assert principal.claims["iss"] == "iss" and principal.claims["aud"] == "aud"
    assert isinstance(principal.claims["jti"], str)
    assert jwt.get_unverified_header(token)["alg"] == "HS256"


def test_mint_token_negative_ttl_is_expired(hs_auth: Authenticator) -> None:
    _rejected(hs_auth, mint_token(SECRET, "eve", ttl_seconds=-600), "token expired")


def test_mint_token_asymmetric_with_kid(rs_auth: Authenticator, rsa_key: rsa.RSAPrivateKey) -> None:
    token = mint_token(_pem_private(rsa_key), "frank", algorithm="RS256", key_id=RSA_KID)
    assert rs_auth.verify(token).user_id == "frank"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"secret": SECRET, "sub": "x", "algorithm": "none"}, "none"),
        ({"secret": "short", "sub": "x"}, "at least 32 bytes"),
        ({"secret": SECRET, "sub": ""}, "sub"),
        ({"secret": SECRET, "sub": "x", "algorithm": "XX1"}, "unsupported"),
    ],
)
def test_mint_token_errors(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        mint_token(**kwargs)


# ------------------------------------------------------------------------------------------- logging


def test_redact_tokens() -> None:
    token = mint_token(SECRET, "gina")
    assert redact_tokens(f"token={token}; next") == "token=[REDACTED]; next"
    assert redact_tokens(f"bearer.{token}") == "bearer.[REDACTED]"
    unsigned = _unsigned({"alg": "none"}, {"sub": "x"})
    assert redact_tokens(unsigned) == "[REDACTED]"
    for harmless in ("streamer.handlers.connect", "eyes.are.blue", "v1.2.3", "abc.def.ghi"):
        assert redact_tokens(harmless) == harmless


def test_redact_filter_on_records() -> None:
    token = mint_token(SECRET, "hank")
    flt = RedactTokensFilter()

    def record(msg: Any, args: Any = (), **extra: Any) -> logging.LogRecord:
        rec = logging.LogRecord("t", logging.INFO, __file__, 1, msg, args, None)
        rec.__dict__.update(extra)
        return rec

    rec = record("got %s and %d", (token, 5))
    assert flt.filter(rec) is True
    assert rec.getMessage() == "got [REDACTED] and 5"

    rec = record("headers %(h)s", ({"h": {"Sec-WebSocket-Protocol": f"streamer.v1, bearer.{token}"}},))
    flt.filter(rec)
    assert token not in rec.getMessage()

    rec = record({"event": {"queryStringParameters": {"token": token}}})
    flt.filter(rec)
    assert rec.msg == {"event": {"queryStringParameters": {"token": "[REDACTED]"}}}

    rec = record("bad format %s %s", (token,))  # broken args still get redacted
    flt.filter(rec)
    assert token not in str(rec.msg) and token not in str(rec.args)

    rec = record("extra", headers={"authorization": f"Bearer {token}"}, raw=token, items=[token])
    flt.filter(rec)
    assert token not in json.dumps({k: rec.__dict__[k] for k in ("headers", "raw", "items")})

    try:
        raise ValueError(f"bad token {token}")
    except ValueError:
        rec = logging.LogRecord("t", logging.ERROR, __file__, 1, "boom", (), sys.exc_info())
    flt.filter(rec)
    formatted = logging.Formatter().format(rec)
    assert "ValueError" in formatted and token not in formatted


def test_no_log_record_contains_a_token(
    caplog: pytest.LogCaptureFixture,
    rs_auth: Authenticator,
    hs_auth: Authenticator,
    rsa_key: rsa.RSAPrivateKey,
    other_rsa_key: rsa.RSAPrivateKey,
) -> None:
    auth_logger = logging.getLogger("streamer.auth")
    app_logger = logging.getLogger("streamer.test_auth_app")
    redactor = RedactTokensFilter()
    auth_logger.addFilter(redactor)
    app_logger.addFilter(redactor)
    # The handlers' Powertools logger owns "streamer" and stops propagation to the root logger once a
    # handler module is imported: attach the capture handler to these loggers directly.
    auth_logger.addHandler(caplog.handler)
    app_logger.addHandler(caplog.handler)
    now = int(time.time())
    good = [_hs(_claims()), _rs(_claims(), rsa_key)]
    bad = [
        _hs(_claims(exp=now - 600, iat=now - 900)),
        _hs(_claims(), secret=OTHER_SECRET),
        _hs(_claims(sub=_DROP)),
        _rs(_claims(), other_rsa_key, kid="unknown"),
        _unsigned({"alg": "none"}, _claims()),
        _hmac_forged({"alg": "HS256", "kid": RSA_KID}, _claims(), _pem_public(rsa_key)),
        _hs(_claims(padding="p" * 9000)),
        "eyJnYXJiYWdlIjp0cnVlfQ.eyJub3QiOiJzaWduZWQifQ.bm90LWEtc2lnbmF0dXJl",  # JWT-shaped garbage
    ]
    try:
        with (
            caplog.at_level(logging.DEBUG),
            caplog.at_level(logging.DEBUG, logger="streamer.auth"),
            caplog.at_level(logging.DEBUG, logger="streamer.test_auth_app"),
        ):
            for token in good:
                app_logger.debug("verifying %s", token)
                (rs_auth if jwt.get_unverified_header(token)["alg"] == "RS256" else hs_auth).verify(token)
            for token in bad:
                app_logger.info("verifying %s", token, extra={"token": token})
                for auth in (hs_auth, rs_auth):
                    with pytest.raises(AuthError) as info:
                        auth.verify(token)
                    app_logger.warning("rejected: %s", info.value)
                app_logger.debug("headers: %s", {"Sec-WebSocket-Protocol": f"streamer.v1, bearer.{token}"})
    finally:
        auth_logger.removeFilter(redactor)
        app_logger.removeFilter(redactor)
        auth_logger.removeHandler(caplog.handler)
        app_logger.removeHandler(caplog.handler)

    assert any(r.name == "streamer.auth" for r in caplog.records)  # verify() did log its rejections
    assert any("[REDACTED]" in r.getMessage() for r in caplog.records)
    for token in [*good, *bad]:
        assert token not in caplog.text
        for rec in caplog.records:
            assert token not in rec.getMessage()
            assert token not in str(rec.__dict__)


def test_unexpected_errors_fail_closed_with_401(
    caplog: pytest.LogCaptureFixture, rsa_key: rsa.RSAPrivateKey
) -> None:
    class BrokenClient(jwt.PyJWKClient):
        def get_signing_key(self, kid: str) -> jwt.PyJWK:
            raise RuntimeError("boom")

    auth = Authenticator(
        AuthConfig(algorithms=("RS256",), jwks_url="https://idp.example/jwks"),
        BrokenClient("https://idp.example/jwks"),
    )
    token = _rs(_claims(), rsa_key)
    with caplog.at_level(logging.WARNING, logger="streamer.auth"):
        _rejected(auth, token, "invalid token")
    assert "RuntimeError" in caplog.text
    assert token not in caplog.text
