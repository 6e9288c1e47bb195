"""Stand-ins the test tiers share."""

from __future__ import annotations

import os
from typing import Any

from streamer.observe.localstate import LocalState, ready_state

#: A local port nobody listens on (discard): a recorded stack whose endpoints answer nothing.
CLOSED = "http://127.0.0.1:9"


def local_state(**fields: Any) -> LocalState:
    """What a ``streamer local`` records about itself (``streamer.observe.localstate``): this process's pid,
    endpoints on a closed port, the default table names and state machine prefix; ``fields`` replace them."""
    urls = dict.fromkeys(("http", "moto", "lambda", "sfn"), CLOSED)
    recorded = ready_state(os.getpid(), CLOSED.replace("http://", "ws://"), urls)
    return LocalState(**{**recorded.model_dump(), **fields})
