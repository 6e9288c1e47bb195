"""Where the per-message counters live: DynamoDB (every deployment) or this process's memory (``streamer local``).

Every client message is counted twice before it is handled: in its connection's one-minute window (the
per-connection rate limit, ``rate_limit_per_minute``) and in its user's one-second window (the per-user quota,
``max_messages_per_second_per_user``). On AWS the ``$default`` route runs in any number of Lambda containers,
so the windows must be shared: each count is a conditional ``UpdateItem`` (``streamer.aws.windows``), and the
connection's count also says who is asking (the connection row) in the same round trip.

``STREAMER_MESSAGE_WINDOWS=memory`` keeps both windows in this process instead (:class:`MemoryWindows`). That is
exact only where **one process runs every ``$default`` invocation** — ``streamer local``'s gateway, which runs
the WebSocket routes in its own process (``streamer.local.inprocess``) and sets it; the deployed template never
does. Then a message costs no DynamoDB call: the connection's row is the one its ``$connect`` stored in this
process (or, for a connection this process did not admit, read once by its first message; a connection's user
and expiry never change, and the row is forgotten at ``$disconnect``, at a close, and when API Gateway says the
connection is gone), and both counts are kept here. The rules are the same as DynamoDB's —
fixed windows, the same limits and refusals — and the functional tests run the DynamoDB windows against moto.
What changes is only the price: a ``ping`` through ``streamer local`` cost two DynamoDB writes over HTTP
(docs/performance.md, "Local stack").
"""

from __future__ import annotations

import threading
from collections.abc import Hashable, Mapping

__all__ = ["DYNAMODB", "MEMORY", "MODES", "MemoryWindows", "store_mode"]

DYNAMODB = "dynamodb"
MEMORY = "memory"
MODES = (DYNAMODB, MEMORY)


def store_mode(variable: str, value: str | None) -> str:
    """``variable``'s value among :data:`MODES` (``dynamodb`` when unset); ValueError naming it otherwise.
    ``STREAMER_MESSAGE_WINDOWS`` here, ``STREAMER_CONNECTION_ADMISSION`` (``streamer.admission``)."""
    mode = (value or DYNAMODB).strip().lower()
    if mode not in MODES:
        raise ValueError(f"{variable} must be one of {', '.join(MODES)}, not {value!r}")
    return mode


class MemoryWindows:
    """Fixed-window counters, one per key, in memory; thread-safe.

    :meth:`add` counts one event in ``window`` (a window number: the second or the minute) and returns the
    count so far in it: a newer window starts at 1, an older one (a clock read before a newer count landed)
    counts in the current one, as the DynamoDB window does (``#w >= :w``). Bounded without losing a count:
    when the table doubles past :attr:`PRUNE_AT`, every key whose window is older than the newest seen is
    dropped — its next event starts a new window anyway.
    """

    PRUNE_AT = 1024

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: dict[Hashable, tuple[int, int]] = {}
        self._newest = 0
        self._prune_at = self.PRUNE_AT

    def add(self, key: Hashable, window: int) -> int:
        with self._lock:
            at, count = self._counts.get(key, (window - 1, 0))
            count = count + 1 if at >= window else 1
            self._counts[key] = (max(at, window), count)
            if window > self._newest:
                self._newest = window
            if len(self._counts) > self._prune_at:
                self._prune()
            return count

    def seed(self, key: Hashable, window: int, count: int) -> None:
        """Start ``key`` at what another store counted (the connection's first message, counted in DynamoDB)."""
        with self._lock:
            self._counts[key] = (window, count)

    def forget(self, key: Hashable) -> None:
        with self._lock:
            self._counts.pop(key, None)

    def __len__(self) -> int:
        with self._lock:
            return len(self._counts)

    def _prune(self) -> None:
        newest = self._newest
        self._counts = {k: v for k, v in self._counts.items() if v[0] >= newest}
        self._prune_at = max(self.PRUNE_AT, 2 * len(self._counts))

    def snapshot(self) -> Mapping[Hashable, tuple[int, int]]:
        """A copy of (window, count) per key (tests, diagnostics)."""
        with self._lock:
            return dict(self._counts)
