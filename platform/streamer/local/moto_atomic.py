"""Make moto's DynamoDB single-item writes atomic, as DynamoDB's are.

DynamoDB applies each write to an item atomically and returns the values of *that* write
(https://docs.aws.amazon.com/amazondynamodb/latest/developerguide/WorkingWithItems.html#WorkingWithItems.AtomicCounters).
moto 5.2.5 does not: its ``UpdateItem`` response is rendered from the live item after the update returns, so
two concurrent ``ADD last_seq :one ... ReturnValues=UPDATED_NEW`` can both answer the later value (two writers
get the same seq, one seq is never written). The request lifecycle relies on that atomicity
(``streamer.aws.store``), so moto's DynamoDB actions run one at a time here: one lock around the handler's
``call_action``. It costs no throughput worth measuring (moto's handlers hold the GIL anyway) and is applied
by the local moto server and by the functional tests' in-process moto.
"""

from __future__ import annotations

import functools
import threading
from typing import Any

__all__ = ["serialize_dynamodb"]

_LOCK = threading.RLock()
_MARK = "_streamer_serialized"


def serialize_dynamodb() -> None:
    """Run moto's DynamoDB actions one at a time (idempotent)."""
    from moto.dynamodb.responses import DynamoHandler

    original = DynamoHandler.call_action
    if getattr(original, _MARK, False):
        return

    @functools.wraps(original)
    def call_action(self: Any) -> Any:
        with _LOCK:
            return original(self)

    setattr(call_action, _MARK, True)
    DynamoHandler.call_action = call_action  # type: ignore[method-assign]
