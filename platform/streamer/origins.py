"""The ``Origin`` allow-list of the WebSocket handshake (cross-site WebSocket hijacking defence).

A browser sends the page's origin with every WebSocket handshake and lets any page open a socket to any
host, carrying whatever credentials the page holds; the server must check ``Origin`` itself (OWASP WebSocket
Security Cheat Sheet; RFC 6455 section 10.2). Contract:

* an ``Origin`` header is allowed only when it equals one of the configured origins exactly (scheme, host and
  port as the browser serialises them; no prefix, suffix or wildcard match, so
  ``https://app.example.com.evil.example`` never passes for ``https://app.example.com``);
* ``null`` (sandboxed frames, ``file:`` pages) is an origin like any other: refused unless listed;
* a handshake without ``Origin`` comes from a non-browser client (which could send any value it liked), and is
  allowed unless ``allow_missing`` is False;
* more than one ``Origin`` value is refused.

Refusals are HTTP 403 at ``$connect`` (and in the local gateway, before any function runs), storing nothing.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

__all__ = ["ORIGIN_REFUSED_STATUS", "local_origins", "origin_allowed"]

ORIGIN_REFUSED_STATUS = 403


def _origin_values(headers: Mapping[str, str] | None) -> list[str]:
    if not headers:
        return []
    return [v for k, v in headers.items() if isinstance(k, str) and k.lower() == "origin" and isinstance(v, str)]


def origin_allowed(headers: Mapping[str, str] | None, allowed: Iterable[str], *, allow_missing: bool = True) -> bool:
    """True when the handshake's ``Origin`` is acceptable (see the module doc)."""
    values = _origin_values(headers)
    if not values:
        return allow_missing
    if len(values) > 1 or "," in values[0]:
        return False
    return values[0].strip() in set(allowed)


def local_origins(host: str, port: int) -> tuple[str, ...]:
    """The origins of a local stack's own pages (the web console on the gateway's port)."""
    hosts = {host, "127.0.0.1", "localhost"} if host in ("127.0.0.1", "localhost", "::1") else {host}
    out: list[str] = []
    for h in sorted(hosts):
        name = f"[{h}]" if ":" in h else h
        out.append(f"http://{name}:{port}")
    return tuple(out)
