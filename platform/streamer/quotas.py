"""Per-user quotas: connections, requests in flight, messages per second — one place, across containers.

Contract:

* :meth:`Quotas.admit_connection` — at ``$connect``, before the connection row is stored. Over
  ``max_connections_per_user`` it raises ``ProtocolError(RATE_LIMITED)`` (the handler answers HTTP 429 and
  stores nothing).
* :meth:`Quotas.count_message` — every message, after the connection is known. Over
  ``max_messages_per_second_per_user`` in the current second: ``RATE_LIMITED`` with
  ``{"quota": "messages_per_second", "limit": N}``.
* :meth:`Quotas.reserve_request` — at ``submit``, before the request is stored. Over
  ``max_requests_in_flight_per_user``: ``RATE_LIMITED`` with ``{"quota": "requests_in_flight", "limit": N}``.
* :meth:`Quotas.release_request` — optional, eager: frees a slot as soon as a request ends. Not needed for
  correctness (see below).

Why reservations validated against the tables, and not a counter decremented when a request ends: a counter
leaks whenever the decrement is missed (a notify task that never ran, a request expired by TTL, a crash
between the terminal write and the decrement), and a leaked count locks a user out for good. Counting the
in-flight requests by a query on a sparse index cannot leak but is eventually consistent, so concurrent
submits overshoot the limit. Here the reservation is one conditional write (``size(map) < limit``: exact
under concurrency, idempotent per request id) and, only when a user's map is full, each member is checked
against the truth (the requests / connections tables, consistent reads) and the stale ones dropped — an
ended request, a request never stored, a connection row deleted or expired. A slot is therefore held at
most as long as the thing it stands for exists, whatever failed in between.

A refused reservation says why in the same round trip: the failed write returns the map it was refused on
(``ReturnValuesOnConditionCheckFailure=ALL_OLD``), so a full map is checked without reading it again, and a
user's first reservation of a kind (no map yet) is one more write that creates the map holding the member
(conditional on the map not existing: concurrent first reservations create it once, the others reserve in it).

A member with no row yet is kept for :data:`RESERVATION_GRACE_SECONDS` (its row is written right after the
reservation: a ``$connect`` integration runs at most 29 s on API Gateway,
https://docs.aws.amazon.com/apigateway/latest/developerguide/limits.html).

Each user has their own item, so one user's excess never slows another's writes. 0 turns a limit off.

**Refusals this container already knows** (:class:`KnownRefusals`): a user over the message quota is refused
again without a DynamoDB call until that second ends — a flood of messages then costs the platform no write per
message, and nothing one user sends makes the quota table slower for others; exact (a window's count only grows
within it). A user whose in-flight map was found full against the tables is refused without asking again for
:attr:`Quotas.REFUSAL_SECONDS` (1 s), and while one thread checks a full map the user's other submits wait for
its verdict: this can refuse, for up to a second, a submit that a slot freed meanwhile by another container
would have admitted; a submit retrying a request already holding a slot is never refused this way, and a
release in this container forgets the refusal at once.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import TYPE_CHECKING

from streamer.admission import MemoryConnections, still_alive
from streamer.aws.quotas import CONNECTIONS, REQUESTS, QuotaStore
from streamer.aws.store import ClientSlot
from streamer.config import Settings
from streamer.errors import ProtocolError
from streamer.protocol import ErrorCode
from streamer.windows import MEMORY, MemoryWindows

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

__all__ = ["RESERVATION_GRACE_SECONDS", "KnownRefusals", "QuotaLimits", "Quotas"]

logger = logging.getLogger(__name__)

#: The messages-per-second quota's name in :class:`KnownRefusals` (the others are the quota table's map names).
MESSAGES = "messages"

#: How long a reservation whose row does not exist yet is assumed to be on its way (see the module doc).
RESERVATION_GRACE_SECONDS = 30


@dataclass(frozen=True)
class QuotaLimits:
    connections_per_user: int = 10
    requests_in_flight_per_user: int = 100
    messages_per_second_per_user: int = 20

    @classmethod
    def of(cls, settings: Settings) -> QuotaLimits:
        return cls(
            connections_per_user=settings.max_connections_per_user,
            requests_in_flight_per_user=settings.max_requests_in_flight_per_user,
            messages_per_second_per_user=settings.max_messages_per_second_per_user,
        )


def _over(limit: int, what: str, quota: str) -> ProtocolError:
    """The RATE_LIMITED refusal of a quota, with the quota's name and limit in ``details``."""
    return ProtocolError(ErrorCode.RATE_LIMITED, f"more than {limit} {what}", {"quota": quota, "limit": limit})


class KnownRefusals:
    """What this container refused, until when: ``(user, quota)`` → (expiry, the request ids then holding the
    user's slots); and the user of each connection it has seen (a connection's user never changes), so a
    refused user's next message is refused before its connection row is read. Thread-safe and bounded:
    expired refusals are dropped as new ones come, the oldest connections beyond :attr:`CONNECTIONS_KEPT`, and
    the single-flight locks are :attr:`VERIFYING_LOCKS` shared by all users."""

    _PRUNE_AT = 1024
    CONNECTIONS_KEPT = 10_000
    VERIFYING_LOCKS = 64

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._refused: dict[tuple[str, str], tuple[float, frozenset[str]]] = {}
        self._users: OrderedDict[str, str] = OrderedDict()
        self._verifying = tuple(threading.Lock() for _ in range(self.VERIFYING_LOCKS))

    def add(self, now: float, until: float, user_id: str, quota: str, holders: Collection[str] = ()) -> None:
        with self._lock:
            if len(self._refused) > self._PRUNE_AT:
                self._refused = {k: v for k, v in self._refused.items() if v[0] > now}
            self._refused[(user_id, quota)] = (until, frozenset(holders))

    def refused(self, now: float, user_id: str, quota: str, member: str = "") -> bool:
        """``user_id`` is still refused ``quota`` (and ``member`` holds none of its slots)."""
        with self._lock:
            until, holders = self._refused.get((user_id, quota), (0.0, frozenset()))
        return now < until and member not in holders

    def seen(self, connection_id: str, user_id: str) -> None:
        """Remember the connection's user."""
        with self._lock:
            self._users[connection_id] = user_id
            self._users.move_to_end(connection_id)
            if len(self._users) > self.CONNECTIONS_KEPT:
                self._users.popitem(last=False)

    def user_of(self, connection_id: str) -> str | None:
        with self._lock:
            return self._users.get(connection_id)

    def forget(self, user_id: str, quota: str) -> None:
        with self._lock:
            self._refused.pop((user_id, quota), None)

    def verifying(self, user_id: str, quota: str) -> threading.Lock:
        """The lock of ``(user, quota)``: one thread checks a full map against the tables, the others wait
        for its verdict instead of asking the same questions at once. A fixed set of locks, striped by the
        key's hash (a lock per user would be kept for every user the container ever saw): two keys sharing
        one only take turns, and a thread holds one at a time."""
        return self._verifying[hash((user_id, quota)) % len(self._verifying)]


class Quotas:
    def __init__(
        self,
        limits: QuotaLimits,
        store: QuotaStore,
        *,
        clock: Callable[[], float] = time.time,
        windows: MemoryWindows | None = None,
        connections: MemoryConnections | None = None,
    ) -> None:
        self.limits = limits
        self.store = store
        self.clock = clock
        self.known = KnownRefusals()
        #: The users' message windows in this process instead of the quota table (``streamer.windows``).
        self.windows = windows
        #: The users' connection slots in this process instead of the quota table (``streamer.admission``).
        self.connections = connections

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        dynamodb: ClientSlot[DynamoDBClient] | None = None,
        connections: MemoryConnections | None = None,
    ) -> Quotas:
        """The set a Lambda container shares (its DynamoDB client created lazily, or the ``dynamodb`` slot's:
        the service's stores share theirs). ``connections``: the service's slots, when it admits connections
        in this process (``streamer.admission``)."""
        store = QuotaStore(
            settings.quotas_table,
            connections_table=settings.connections_table,
            requests_table=settings.requests_table,
            client=dynamodb,
        )
        windows = MemoryWindows() if settings.message_windows == MEMORY else None
        return cls(QuotaLimits.of(settings), store, windows=windows, connections=connections)

    def _now(self) -> int:
        return int(self.clock())

    #: How long a full in-flight map, checked against the tables, is taken as full without asking again.
    REFUSAL_SECONDS = 1.0

    # -- connections ----------------------------------------------------------------------------

    def admit_connection(
        self, user_id: str, connection_id: str, alive: Callable[[str], bool] | None = None
    ) -> None:
        """Reserve a connection slot, or raise RATE_LIMITED (``quota: connections``).

        ``alive(connection_id)`` asks API Gateway about a connection whose row looks live (``GetConnection``):
        a client dropped without ``$disconnect`` keeps its row until a push meets its 410 or its TTL, and
        without this question it would hold its user's slot until then.
        """
        limit = self.limits.connections_per_user
        if self.connections is not None:
            if not self.connections.reserve(user_id, connection_id, limit, alive):
                raise _over(limit, "connections for this user", "connections")
            return

        def stale(user: str, members: dict[str, int], now: int) -> list[str]:
            return self._stale_connections(user, members, now, alive)

        if limit > 0 and not self._reserve(user_id, CONNECTIONS, connection_id, limit, stale):
            raise _over(limit, "connections for this user", "connections")

    def release_connection(self, user_id: str, connection_id: str) -> None:
        if self.connections is not None:
            self.connections.release(connection_id)
            return
        self.store.release(user_id, CONNECTIONS, [connection_id])

    # -- requests -------------------------------------------------------------------------------

    def reserve_request(self, user_id: str, request_id: str) -> None:
        """Reserve an in-flight slot for ``request_id`` (idempotent), or raise RATE_LIMITED."""
        limit = self.limits.requests_in_flight_per_user
        if limit <= 0:
            return
        if self.known.refused(self.clock(), user_id, REQUESTS, request_id) or not self._reserve(
            user_id, REQUESTS, request_id, limit, self._stale_requests
        ):
            raise _over(limit, "requests in flight for this user", "requests_in_flight")

    def release_request(self, user_id: str, request_id: str) -> None:
        """Free the slot of an ended request now (else it is freed when the user's map is next full)."""
        self.store.release(user_id, REQUESTS, [request_id])
        self.known.forget(user_id, REQUESTS)

    # -- messages -------------------------------------------------------------------------------

    def count_message(self, user_id: str, connection_id: str = "") -> None:
        """Count one message of the user in the current second, or raise RATE_LIMITED."""
        limit = self.limits.messages_per_second_per_user
        if limit <= 0:
            return
        if connection_id:
            self.known.seen(connection_id, user_id)
        now = self.clock()
        if not self.known.refused(now, user_id, MESSAGES) and self._count(user_id, int(now)) <= limit:
            return
        # Refused until the second ends; the user's connections are then refused before their rows are read.
        self.known.add(now, int(now) + 1, user_id, MESSAGES)
        raise _over(limit, "messages a second for this user", "messages_per_second")

    def _count(self, user_id: str, second: int) -> int:
        if self.windows is not None:
            return self.windows.add(user_id, second)
        return self.store.count_message(user_id, second)

    def refuse_known(self, connection_id: str) -> None:
        """Raise the user's RATE_LIMITED at once when this container refused the connection's user for messages
        in this second (no DynamoDB call: before the connection row is even read)."""
        limit = self.limits.messages_per_second_per_user
        user_id = self.known.user_of(connection_id) if limit > 0 else None
        if user_id is not None and self.known.refused(self.clock(), user_id, MESSAGES):
            raise _over(limit, "messages a second for this user", "messages_per_second")

    # -- the reservation protocol ---------------------------------------------------------------

    def _reserve(
        self,
        user_id: str,
        kind: str,
        member: str,
        limit: int,
        stale: Callable[[str, dict[str, int], int], list[str]],
    ) -> bool:
        now = self._now()
        ok, members = self.store.reserve(user_id, kind, member, limit, now)
        if ok:
            return True
        # Full, or no map yet: one thread checks the members against the tables; the others wait for it.
        with self.known.verifying(user_id, kind):
            if self.known.refused(self.clock(), user_id, kind, member):  # another thread just checked
                return False
            if members is None:  # the user's first reservation of this kind: create the map holding it
                if self.store.create(user_id, kind, member, now):
                    return True
                ok, members = self.store.reserve(user_id, kind, member, limit, now)  # another writer was first
                if ok or members is None:
                    return ok
            # ``members`` is the map the failed write saw (before this thread had the lock: a member released
            # meanwhile is found gone again, and releasing it twice is a no-op).
            gone = stale(user_id, {m: t for m, t in members.items() if m != member}, now)
            if not gone:
                if kind == REQUESTS:
                    at = self.clock()
                    self.known.add(at, at + self.REFUSAL_SECONDS, user_id, kind, holders=members)
                return False
            logger.info("stale quota reservations released", extra={"kind": kind, "count": len(gone)})
            self.store.release(user_id, kind, gone)
            return self.store.reserve(user_id, kind, member, limit, now)[0]

    def _stale_connections(
        self, user_id: str, members: dict[str, int], now: int, alive: Callable[[str], bool] | None
    ) -> list[str]:
        live = self.store.live_connections(list(members), now)
        gone = [c for c, at in members.items() if c not in live and at <= now - RESERVATION_GRACE_SECONDS]
        if alive is not None:
            gone.extend(c for c in live if not still_alive(alive, c))
        return gone

    def _stale_requests(self, user_id: str, members: dict[str, int], now: int) -> list[str]:
        in_flight = self.store.existing_requests(user_id, list(members))
        return [
            r
            for r, at in members.items()
            if (r in in_flight and not in_flight[r]) or (r not in in_flight and at <= now - RESERVATION_GRACE_SECONDS)
        ]
