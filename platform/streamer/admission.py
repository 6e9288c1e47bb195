"""Where connections are admitted: DynamoDB (every deployment) or this process's memory (``streamer local``).

A ``$connect`` reserves a slot in its user's connection quota (``streamer.quotas``) and stores the connection's
row. On AWS ``$connect`` and ``$disconnect`` run in any number of Lambda containers, so the reservation is a
conditional ``UpdateItem`` on the user's quota item (two for a user's first connection) and the row a
conditional ``PutItem``: three DynamoDB calls per handshake of a new user, each a round trip the handshake
waits for.

``STREAMER_CONNECTION_ADMISSION=memory`` admits connections in this process instead. That is exact only where
**one process runs every ``$connect`` and ``$disconnect``** — ``streamer local``'s gateway, which runs the
WebSocket routes in its own process (``streamer.local.inprocess``) and sets it; the deployed template never
does. Then:

* the user's connection slots are counted here (:class:`MemoryConnections`): reserved before the row is
  written, released when the write fails and at ``$disconnect``, a close and a 410 — the same moments the
  process forgets the connection's row (``RequestService``). The rules are the DynamoDB reservations': the
  same limit and refusal (``RATE_LIMITED``, ``quota: connections``), a full quota's members asked about
  through the Management API (a connection dropped without ``$disconnect``) and its expired ones dropped, a
  member whose ``$connect`` is still running never taken for stale;
* the row is still written to the ``connections`` table (the step functions, in another process, read it to
  find the user's connections), and the handshake still waits for its write and fails when it fails — but
  concurrent handshakes' rows are written together, one ``BatchWriteItem`` of up to 25
  (``streamer.aws.batch.GroupCommit``, a group commit), as are the deletes of ``$disconnect``. A batch write
  has no condition: the row's ``attribute_not_exists(connection_id)`` guards against a reused connection id,
  and here the gateway makes every id (random, unique among its live connections).

The functional tests run the DynamoDB reservations and the conditional put against moto; what changes here is
only the price of a handshake (docs/performance.md, "Local stack").
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["MemoryConnections", "still_alive"]

logger = logging.getLogger(__name__)


@dataclass
class _Slot:
    user_id: str
    #: None while the connection's ``$connect`` runs (reserved, row not yet written); then the row's expiry.
    expires_at: int | None = None


class MemoryConnections:
    """The connection slots of every user, in this process; thread-safe.

    :meth:`reserve` takes a slot (or finds the connection's own), :meth:`admitted` records that its row is
    written, :meth:`release` frees it. A user holds at most ``limit`` slots: a full user's admitted members
    are checked first — an expired one, or one ``alive`` says is gone, is dropped — and the reservation is
    tried again; a member still being admitted is never dropped, and a refusal drops nothing else.
    """

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        self._lock = threading.Lock()
        self._slots: dict[str, _Slot] = {}
        self._by_user: dict[str, set[str]] = {}

    def reserve(
        self, user_id: str, connection_id: str, limit: int, alive: Callable[[str], bool] | None = None
    ) -> bool:
        """Take a slot for ``connection_id``; False when the user holds ``limit`` live others."""
        if self._take(user_id, connection_id, limit):
            return True
        now = int(self.clock())
        with self._lock:
            admitted = [
                (c, slot.expires_at)
                for c in self._by_user.get(user_id, ())
                if (slot := self._slots[c]).expires_at is not None
            ]
        gone = [c for c, expires_at in admitted if expires_at <= now]
        if alive is not None:
            for c, expires_at in admitted:
                if expires_at > now and not still_alive(alive, c):
                    gone.append(c)
        if not gone:
            return False
        logger.info("stale connection slots released", extra={"count": len(gone)})
        for c in gone:
            self.release(c)
        return self._take(user_id, connection_id, limit)

    def _take(self, user_id: str, connection_id: str, limit: int) -> bool:
        with self._lock:
            slot = self._slots.get(connection_id)
            if slot is not None:
                return slot.user_id == user_id
            members = self._by_user.setdefault(user_id, set())
            if limit > 0 and len(members) >= limit:
                return False
            members.add(connection_id)
            self._slots[connection_id] = _Slot(user_id)
            return True

    def admitted(self, connection_id: str, expires_at: int) -> None:
        """The connection's row is written: from now on a full quota may ask whether it is still there."""
        with self._lock:
            slot = self._slots.get(connection_id)
            if slot is not None:
                slot.expires_at = expires_at

    def release(self, connection_id: str) -> None:
        """Free the connection's slot (a no-op when it holds none)."""
        with self._lock:
            slot = self._slots.pop(connection_id, None)
            if slot is None:
                return
            members = self._by_user.get(slot.user_id)
            if members is not None:
                members.discard(connection_id)
                if not members:
                    del self._by_user[slot.user_id]

    def holds(self, connection_id: str) -> bool:
        with self._lock:
            return connection_id in self._slots

    def count(self, user_id: str) -> int:
        """The user's slots, reserved or admitted."""
        with self._lock:
            return len(self._by_user.get(user_id, ()))

    def __len__(self) -> int:
        with self._lock:
            return len(self._slots)


def still_alive(alive: Callable[[str], bool], connection_id: str) -> bool:
    """``alive(connection_id)`` (the Management API's answer); True when it cannot tell now (an error): a
    full quota never drops a connection it is unsure of. Both admission paths ask through it."""
    try:
        return alive(connection_id)
    except Exception:
        logger.warning("connection liveness unknown", extra={"connection_id": connection_id})
        return True
