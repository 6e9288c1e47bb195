"""What the tests of the edge handlers ($connect, $default) share: the handlers wired to a test's service with
an HS256 secret, and a recorded ``$connect`` event carrying a token (tests/events/connect.json)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from streamer.handlers import _runtime, connect
from tests.functional.conftest import load_event


@contextmanager
def wired_handlers(
    service: Any,
    monkeypatch: pytest.MonkeyPatch,
    secret: str,
    *,
    issuer: str | None = None,
    audience: str | None = None,
) -> Iterator[None]:
    """The handlers use ``service`` and verify HS256 tokens signed with ``secret`` (and the issuer and audience,
    when given); the authenticator is rebuilt before and after."""
    monkeypatch.setenv("STREAMER_JWT_SECRET", secret)
    for name, value in (("STREAMER_JWT_ISSUER", issuer), ("STREAMER_JWT_AUDIENCE", audience)):
        if value is None:
            monkeypatch.delenv(name, raising=False)
        else:
            monkeypatch.setenv(name, value)
    for name in ("STREAMER_JWT_ALGORITHMS", "STREAMER_JWT_JWKS_URL"):
        monkeypatch.delenv(name, raising=False)
    connect.get_authenticator.cache_clear()
    _runtime.set_service(service)
    try:
        yield
    finally:
        _runtime.reset()
        connect.get_authenticator.cache_clear()


def connect_event(
    token: str | None, *, cid: str | None = None, via: str = "header", origin: str | None = None
) -> dict[str, Any]:
    """The recorded ``$connect`` event (its own connection id unless ``cid``) offering ``token`` in the
    ``Sec-WebSocket-Protocol`` header (``via="header"``) or the ``token`` query parameter, or no token at all;
    with ``origin``, that Origin header."""
    ev = load_event("connect", requestContext={"connectionId": cid}) if cid else load_event("connect")
    ev["headers"].pop("Sec-WebSocket-Protocol")
    if token is not None and via == "header":
        ev["headers"]["Sec-WebSocket-Protocol"] = f"streamer.v1, bearer.{token}"
    elif token is not None:
        ev["queryStringParameters"] = {"token": token}
    if origin is not None:
        ev["headers"]["Origin"] = origin
    return ev
