"""JWT authentication for the WebSocket ``$connect`` route.

Verification follows RFC 8725 (JWT Best Current Practices):

* the algorithm allow-list comes from configuration only; the token header is read (unverified) just to
  pick the key, and a header ``alg`` outside the allow-list is rejected before any key is looked up;
* ``none`` is never allowed, and HMAC algorithms are never mixed with asymmetric ones in one allow-list,
  so an ``HS256`` token "signed" with an RSA public key cannot be confused with an ``RS256`` one;
* asymmetric keys come only from the configured JWKS URL and are chosen by ``kid``; ``jku``/``x5u``/``jwk``
  header parameters are ignored, and each JWK is bound to exactly one algorithm (PyJWT ``PyJWK``);
* ``sub``, ``exp`` and ``iat`` are required, ``iss``/``aud`` are checked when configured, ``nbf`` is
  honoured, and the clock leeway is at most 60 seconds;
* oversized tokens are rejected before any parsing.

Every failure raises :class:`AuthError` (HTTP 401) — or :class:`ForbiddenError` (403) for a valid token
that lacks the required scope — with a short generic reason that never contains the token.
"""

from __future__ import annotations

import importlib
import logging
import os
import sys
import threading
import time
import unicodedata
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, ClassVar
from urllib.parse import urlparse

import jwt
import jwt.algorithms
from jwt.exceptions import InvalidJTIError, InvalidSubjectError

from streamer.config import Env, jwt_algorithms
from streamer.errors import StreamerError
from streamer.protocol import SUBPROTOCOL
from streamer.redact import RedactTokensFilter, redact_tokens  # re-exported: the redaction lives apart (no jwt)

#: PyJWT's modules that took ``has_crypto`` and the algorithm classes from ``jwt.algorithms`` at import, in
#: the order they import each other (``jwt.exceptions`` is left alone: its classes stay the same objects).
_PYJWT_MODULES = ("jwt.algorithms", "jwt.api_jwk", "jwt.api_jws", "jwt.api_jwt", "jwt.jwk_set_cache",
                  "jwt.jwks_client", "jwt")  # fmt: skip
_reimport_lock = threading.Lock()


def _with_cryptography() -> None:
    """Make PyJWT's asymmetric algorithms available: re-import PyJWT's modules when they were first imported
    with ``cryptography`` hidden (``streamer.handlers._pyjwt``: the ``$connect`` handler of an HMAC-only
    allow-list), and this process now builds an asymmetric :class:`Authenticator`."""
    with _reimport_lock:
        if jwt.algorithms.has_crypto:
            return
        for name in _PYJWT_MODULES:
            importlib.reload(sys.modules[name])
        if not jwt.algorithms.has_crypto:
            raise ValueError("asymmetric JWT algorithms need the 'cryptography' package")

__all__ = [
    "AuthConfig",
    "AuthError",
    "Authenticator",
    "ForbiddenError",
    "Principal",
    "RedactTokensFilter",
    "extract_token",
    "mint_token",
    "redact_tokens",
]

_log = logging.getLogger(__name__)

#: The application subprotocol a client offers next to ``bearer.<jwt>`` in ``Sec-WebSocket-Protocol``.

_BEARER_SUBPROTOCOL_PREFIX = "bearer."
MAX_LEEWAY_SECONDS = 60

_HMAC_ALGORITHMS = frozenset({"HS256", "HS384", "HS512"})
_ASYMMETRIC_ALGORITHMS = frozenset(
    {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}
)
# RFC 7518 section 3.2: an HMAC key must be at least as long as the hash output.
_HMAC_MIN_KEY_BYTES = {"HS256": 32, "HS384": 48, "HS512": 64}
_LOOPBACK_HOSTS = frozenset({"localhost", "127.0.0.1", "::1"})


class AuthError(StreamerError):
    """Authentication failed (HTTP 401). ``reason`` is short, generic and never contains the token."""

    status: ClassVar[int] = 401

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class ForbiddenError(AuthError):
    """The token is valid but not allowed to connect (HTTP 403), e.g. it lacks the required scope."""

    status: ClassVar[int] = 403


# --------------------------------------------------------------------------------------------- config


@dataclass(frozen=True)
class AuthConfig:
    """How tokens are verified. Invalid combinations raise ``ValueError`` at construction."""

    algorithms: tuple[str, ...] = ("HS256",)
    secret: str | None = field(default=None, repr=False)
    jwks_url: str | None = None
    issuer: str | None = None
    audience: str | None = None
    leeway_seconds: int = 30
    max_token_bytes: int = 8192
    required_scope: str | None = None
    jwks_cache_seconds: int = 300
    jwks_timeout_seconds: float = 5.0

    def __post_init__(self) -> None:
        algorithms = tuple(self.algorithms)
        object.__setattr__(self, "algorithms", algorithms)
        if not algorithms:
            raise ValueError("at least one JWT algorithm must be allowed")
        for alg in algorithms:
            if alg.strip().lower() == "none":
                raise ValueError("the 'none' JWT algorithm is never allowed")
            if alg not in _HMAC_ALGORITHMS and alg not in _ASYMMETRIC_ALGORITHMS:
                raise ValueError(f"unsupported JWT algorithm: {alg!r}")
        hmac_algs = [alg for alg in algorithms if alg in _HMAC_ALGORITHMS]
        if hmac_algs and len(hmac_algs) != len(algorithms):
            raise ValueError("HMAC (HS*) and asymmetric JWT algorithms must not be mixed in one allow-list")
        if hmac_algs:
            if not self.secret:
                raise ValueError("HS* JWT algorithms need a secret (STREAMER_JWT_SECRET)")
            needed = max(_HMAC_MIN_KEY_BYTES[alg] for alg in hmac_algs)
            if len(self.secret.encode("utf-8")) < needed:
                raise ValueError(f"the JWT secret must be at least {needed} bytes long")
        else:
            if not self.jwks_url:
                raise ValueError("asymmetric JWT algorithms need a JWKS URL (STREAMER_JWT_JWKS_URL)")
            _check_jwks_url(self.jwks_url)
        if isinstance(self.leeway_seconds, bool) or not isinstance(self.leeway_seconds, int):
            raise ValueError("leeway_seconds must be an integer")
        if not 0 <= self.leeway_seconds <= MAX_LEEWAY_SECONDS:
            raise ValueError(f"leeway_seconds must be between 0 and {MAX_LEEWAY_SECONDS}")
        if self.max_token_bytes <= 0:
            raise ValueError("max_token_bytes must be positive")
        if self.jwks_cache_seconds <= 0 or self.jwks_timeout_seconds <= 0:
            raise ValueError("jwks_cache_seconds and jwks_timeout_seconds must be positive")
        if self.required_scope is not None and (not self.required_scope or " " in self.required_scope):
            raise ValueError("required_scope must be a single non-empty scope")

    @property
    def uses_hmac(self) -> bool:
        return self.algorithms[0] in _HMAC_ALGORITHMS

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> AuthConfig:
        """Read ``STREAMER_JWT_*``. Empty values count as unset.

        Without ``STREAMER_JWT_ALGORITHMS`` the allow-list is ``RS256`` when only a JWKS URL is configured,
        else ``HS256``.
        """

        def get(name: str) -> str | None:
            value = environ.get(name, "").strip()
            return value or None

        secret = environ.get(Env.JWT_SECRET) or None  # a secret is taken verbatim
        jwks_url = get(Env.JWT_JWKS_URL)
        algorithms = jwt_algorithms(environ)
        leeway_raw = get(Env.JWT_LEEWAY)
        leeway = 30
        if leeway_raw is not None:
            try:
                leeway = int(leeway_raw)
            except ValueError:
                raise ValueError("STREAMER_JWT_LEEWAY must be an integer number of seconds") from None
        return cls(
            algorithms=algorithms,
            secret=secret,
            jwks_url=jwks_url,
            issuer=get(Env.JWT_ISSUER),
            audience=get(Env.JWT_AUDIENCE),
            leeway_seconds=leeway,
            required_scope=get(Env.JWT_REQUIRED_SCOPE),
        )


def _check_jwks_url(url: str) -> None:
    parsed = urlparse(url)
    if parsed.scheme == "https" and parsed.hostname:
        return
    if parsed.scheme == "http" and parsed.hostname in _LOOPBACK_HOSTS:
        return  # local development and tests
    raise ValueError("the JWKS URL must be https (plain http is only accepted for loopback hosts)")


# ------------------------------------------------------------------------------------------ verifying


@dataclass(frozen=True)
class Principal:
    """An authenticated caller."""

    user_id: str
    expires_at: int
    claims: Mapping[str, Any] = field(repr=False, hash=False)


class Authenticator:
    """Verifies bearer JWTs. Create once per process: the JWKS client and its key cache live here."""

    def __init__(self, config: AuthConfig, jwks_client: jwt.PyJWKClient | None = None) -> None:
        if not config.uses_hmac:
            _with_cryptography()
        self._config = config
        self._jwks_client = jwks_client
        self._lock = threading.Lock()

    @property
    def config(self) -> AuthConfig:
        return self._config

    def verify(self, token: str) -> Principal:
        """Return the principal of a valid token, else raise :class:`AuthError` / :class:`ForbiddenError`."""
        error: AuthError
        try:
            return self._verify(token)
        except AuthError as exc:
            error = exc
        except jwt.PyJWTError as exc:
            error = AuthError(_reason_for(exc))
        except Exception as exc:  # fail closed: garbage must never become a 500
            _log.warning("unexpected %s while verifying a token", type(exc).__name__)
            error = AuthError("invalid token")
        _log.debug("token rejected: %s", error.reason)
        raise error from None

    def _verify(self, token: str) -> Principal:
        config = self._config
        if not isinstance(token, str) or not token:
            raise AuthError("missing token")
        # Compact JWS is ASCII, so the character count is the byte count; check it before any parsing.
        if len(token) > config.max_token_bytes:
            raise AuthError("token too large")
        if not token.isascii():
            raise AuthError("malformed token")

        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise AuthError("malformed token") from None
        alg = header.get("alg")
        if not isinstance(alg, str) or alg not in config.algorithms:
            raise AuthError("algorithm not allowed")

        key: jwt.PyJWK | bytes
        if alg in _HMAC_ALGORITHMS:
            assert config.secret is not None  # guaranteed by AuthConfig
            key = config.secret.encode("utf-8")
        else:
            key = self._signing_key(header.get("kid"))

        required = ["exp", "iat", "sub"]
        if config.issuer is not None:
            required.append("iss")
        if config.audience is not None:
            required.append("aud")
        claims: dict[str, Any] = jwt.decode(
            token,
            key,
            algorithms=[alg],
            issuer=config.issuer,
            audience=config.audience,
            leeway=config.leeway_seconds,
            options={
                "verify_signature": True,
                "verify_exp": True,
                "verify_nbf": True,
                "verify_iat": True,
                "verify_iss": config.issuer is not None,
                "verify_aud": config.audience is not None,
                "verify_sub": True,
                "require": required,
                "enforce_minimum_key_length": True,
            },
        )

        sub = claims.get("sub")
        if not isinstance(sub, str) or not sub.strip() or any(unicodedata.category(c) == "Cc" for c in sub):
            raise AuthError("invalid claim: sub")
        if config.required_scope is not None and config.required_scope not in _scopes(claims):
            raise ForbiddenError("insufficient scope")
        return Principal(user_id=sub, expires_at=int(claims["exp"]), claims=MappingProxyType(claims))

    def _signing_key(self, kid: object) -> jwt.PyJWK:
        if not isinstance(kid, str) or not kid:
            raise AuthError("missing key id")
        client = self._get_jwks_client()
        try:
            return client.get_signing_key(kid)
        except (jwt.PyJWKClientConnectionError, jwt.PyJWKSetError) as exc:
            _log.warning("could not load the JWKS: %s", type(exc).__name__)
            raise AuthError("signing keys unavailable") from None
        except jwt.PyJWKClientError:
            raise AuthError("unknown signing key") from None

    def _get_jwks_client(self) -> jwt.PyJWKClient:
        with self._lock:
            if self._jwks_client is None:
                assert self._config.jwks_url is not None  # guaranteed by AuthConfig
                self._jwks_client = jwt.PyJWKClient(
                    self._config.jwks_url,
                    cache_keys=True,
                    cache_jwk_set=True,
                    lifespan=self._config.jwks_cache_seconds,
                    timeout=self._config.jwks_timeout_seconds,
                )
            return self._jwks_client


def _scopes(claims: Mapping[str, Any]) -> set[str]:
    scopes: set[str] = set()
    for name in ("scope", "scp"):
        value = claims.get(name)
        if isinstance(value, str):
            scopes.update(value.split())
        elif isinstance(value, list | tuple):
            scopes.update(item for item in value if isinstance(item, str))
    return scopes


# Most specific first: several of these subclass each other (e.g. InvalidSignatureError < DecodeError).
_REASONS: tuple[tuple[type[jwt.PyJWTError], str], ...] = (
    (jwt.ExpiredSignatureError, "token expired"),
    (jwt.ImmatureSignatureError, "token not yet valid"),
    (jwt.InvalidSignatureError, "invalid signature"),
    (jwt.InvalidIssuerError, "invalid issuer"),
    (jwt.InvalidAudienceError, "invalid audience"),
    (jwt.InvalidIssuedAtError, "invalid claim: iat"),
    (InvalidSubjectError, "invalid claim: sub"),
    (InvalidJTIError, "invalid claim: jti"),
    (jwt.InvalidAlgorithmError, "algorithm not allowed"),
    (jwt.InvalidKeyError, "invalid key"),
    (jwt.DecodeError, "malformed token"),
)


def _reason_for(exc: jwt.PyJWTError) -> str:
    if isinstance(exc, jwt.MissingRequiredClaimError):
        return f"missing claim: {exc.claim}"  # always one of the names we required
    for exc_type, reason in _REASONS:
        if isinstance(exc, exc_type):
            return reason
    return "invalid token"


# ---------------------------------------------------------------------------------------- handshake


def _header(headers: Mapping[str, str] | None, name: str) -> str | None:
    if not headers:
        return None
    for key, value in headers.items():
        if isinstance(key, str) and key.lower() == name and isinstance(value, str):
            return value
    return None


def extract_token(
    headers: Mapping[str, str] | None, query: Mapping[str, str] | None
) -> tuple[str | None, str | None]:
    """Find the bearer token of a ``$connect`` request: ``(token, subprotocol_to_select)``.

    The token comes from, in order: a ``bearer.<jwt>`` entry of ``Sec-WebSocket-Protocol`` (header names are
    case-insensitive), an ``Authorization: Bearer <jwt>`` header, the ``token`` query parameter.
    The second element is :data:`streamer.protocol.SUBPROTOCOL` when the client offered it, else ``None``; the
    ``bearer.*`` entry must never be echoed back as the selected subprotocol.
    """
    token: str | None = None
    selected: str | None = None

    offered = _header(headers, "sec-websocket-protocol")
    if offered:
        for item in (part.strip() for part in offered.split(",")):
            if item == SUBPROTOCOL:
                selected = SUBPROTOCOL
            elif (
                token is None
                and item[: len(_BEARER_SUBPROTOCOL_PREFIX)].lower() == _BEARER_SUBPROTOCOL_PREFIX
                and len(item) > len(_BEARER_SUBPROTOCOL_PREFIX)
            ):
                token = item[len(_BEARER_SUBPROTOCOL_PREFIX) :]

    if token is None:
        authorization = _header(headers, "authorization")
        if authorization:
            scheme, _, credentials = authorization.strip().partition(" ")
            if scheme.lower() == "bearer" and credentials.strip():
                token = credentials.strip()

    if token is None and query:
        value = query.get("token")
        if isinstance(value, str) and value.strip():
            token = value.strip()

    return token, selected


# ------------------------------------------------------------------------------------------- minting


def mint_token(
    secret: str,
    sub: str,
    ttl_seconds: int = 3600,
    issuer: str | None = None,
    audience: str | None = None,
    extra_claims: Mapping[str, Any] | None = None,
    algorithm: str = "HS256",
    key_id: str | None = None,
) -> str:
    """Mint a token for local development (``streamer token``).

    ``secret`` is the HMAC secret for HS* or a PEM private key for asymmetric algorithms. The token carries
    ``sub``, ``iat``, ``exp = iat + ttl_seconds``, a random ``jti``, and ``iss``/``aud`` when given;
    ``extra_claims`` are added last (and may override those, e.g. to build an expired token in tests).
    """
    if algorithm.strip().lower() == "none":
        raise ValueError("the 'none' JWT algorithm is never allowed")
    if algorithm not in _HMAC_ALGORITHMS and algorithm not in _ASYMMETRIC_ALGORITHMS:
        raise ValueError(f"unsupported JWT algorithm: {algorithm!r}")
    if algorithm in _HMAC_ALGORITHMS and len(secret.encode("utf-8")) < _HMAC_MIN_KEY_BYTES[algorithm]:
        raise ValueError(f"the JWT secret must be at least {_HMAC_MIN_KEY_BYTES[algorithm]} bytes long")
    if not sub:
        raise ValueError("sub must be a non-empty string")
    now = int(time.time())
    claims: dict[str, Any] = {"sub": sub, "iat": now, "exp": now + ttl_seconds, "jti": uuid.uuid4().hex}
    if issuer is not None:
        claims["iss"] = issuer
    if audience is not None:
        claims["aud"] = audience
    if extra_claims:
        claims.update(extra_claims)
    headers = {"kid": key_id} if key_id is not None else None
    return jwt.encode(claims, secret, algorithm=algorithm, headers=headers)
