"""Stand-ins the test tiers share."""

from __future__ import annotations

import os
from typing import Any

from streamer.observe.localstate import LocalState

#: A local port nobody listens on (discard): a recorded stack whose endpoints answer nothing.
CLOSED = "http://127.0.0.1:9"


def local_state(**fields: Any) -> LocalState:
    """What a ``streamer local`` records about itself (``streamer.observe.localstate``): this process's pid,
    endpoints on a closed port, the default table names and state machine prefix; ``fields`` replace them."""
    recorded: dict[str, Any] = {
        "pid": os.getpid(),
        "ws_url": CLOSED.replace("http://", "ws://"),
        "http_url": CLOSED,
        "moto_url": CLOSED,
        "lambda_url": CLOSED,
        "sfn_url": CLOSED,
        "region": "us-east-1",
        "connections_table": "streamer-connections",
        "requests_table": "streamer-requests",
        "events_table": "streamer-events",
        "state_machine_arn_prefix": "arn:aws:states:us-east-1:123456789012:stateMachine:streamer-",
    }
    return LocalState(**{**recorded, **fields})
