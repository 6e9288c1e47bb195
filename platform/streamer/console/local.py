"""The console inside ``streamer local``: mounted on the gateway's own port, reading that very stack.

:func:`mount_local` is called by ``streamer.local.stack`` once its endpoints are known and before the gateway
serves. The console's sources are built from this stack's own endpoints (``Sources.local`` over a state
record of this process, written to a private temporary file), not from the per-user state file, which names
whichever stack started last when several run at once.

Served on a loopback interface without a token; on any other interface only with ``$STREAMER_CONSOLE_TOKEN``
(otherwise the console is not mounted and a warning says why — the WebSocket API is still served).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from streamer.console.app import CONSOLE_PREFIX, TOKEN_ENV, ConsoleConfig, env_token, mount, token_required

if TYPE_CHECKING:
    from streamer.observe import Sources

__all__ = ["LOCAL_POLL_INTERVAL", "mount_local"]

log = logging.getLogger("streamer.console")

#: Seconds between two reads of a live page locally (moto answers in milliseconds).
LOCAL_POLL_INTERVAL = 0.5


def _sources(stack: Any) -> Sources:
    """This stack's own endpoints (not the shared per-user state file, which another stack may own)."""
    from streamer.observe.localstate import state_of
    from streamer.observe.sources import Sources

    return Sources.from_state(state_of(stack))


def mount_local(stack: Any, host: str) -> str | None:
    """Mount the console on ``stack.gateway.app``; its path, or None when ``host`` needs a token and none is set."""
    token = env_token()
    if token_required(host) and not token:
        log.warning("console not served: %s is not a loopback interface and $%s is not set", host, TOKEN_ENV)
        return None
    mount(
        stack.gateway.app,
        ConsoleConfig(sources=lambda: _sources(stack), token=token, poll_interval=LOCAL_POLL_INTERVAL),
    )
    return CONSOLE_PREFIX + "/"
