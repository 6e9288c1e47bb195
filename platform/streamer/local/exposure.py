"""What ``streamer local`` may expose beyond this machine.

* moto (every table, every execution) and the Lambda Invoke endpoint (every function, with any event) have
  no authentication at all: they are always bound to loopback, whatever ``--host`` says.
* The WebSocket gateway and its Management API follow ``--host``, but a non-loopback ``--host`` is refused
  while tokens are signed with the public development secret (``config.LOCAL_DEV_SECRET``: anyone could
  mint a token for any user). Set ``STREAMER_JWT_SECRET`` to a secret of your own first.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping

from streamer.config import Env

__all__ = ["LOOPBACK", "exposure_refusal", "is_loopback"]

#: Where the unauthenticated services listen.
LOOPBACK = "127.0.0.1"


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name other than localhost may resolve to anything


def exposure_refusal(host: str, environ: Mapping[str, str] | None = None) -> str | None:
    """Why ``streamer local --host HOST`` must not start, or None when it may."""
    env = os.environ if environ is None else environ
    if is_loopback(host) or env.get(Env.JWT_SECRET):
        return None
    return (
        f"--host {host} would expose the gateway beyond this machine while tokens are signed with the PUBLIC "
        "development secret (anyone could mint a token for any user). Set STREAMER_JWT_SECRET to a secret of "
        "your own, or use --host 127.0.0.1."
    )
