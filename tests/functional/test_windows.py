"""The fixed-window message counters (a connection's per minute, a user's per second) on moto."""

from __future__ import annotations

import threading
from typing import Any

from streamer.aws.quotas import QuotaStore
from streamer.aws.store import ConnectionStore
from streamer.models import Connection


def test_a_late_message_counts_in_the_newer_window_and_does_not_reset_it(ddb: Any) -> None:
    quotas = QuotaStore(
        "streamer-quotas", connections_table="streamer-connections", requests_table="streamer-requests", client=ddb
    )
    assert [quotas.count_message("alice", 101) for _ in range(3)] == [1, 2, 3]
    # An invocation that read the clock a moment earlier (second 100) arrives after second 101 began:
    # counted in 101 (4), not a reset of the window back to 100 (which made writers at a boundary undo each other).
    assert quotas.count_message("alice", 100) == 4
    assert quotas.count_message("alice", 101) == 5
    assert quotas.count_message("alice", 102) == 1


def test_writers_on_both_sides_of_a_boundary_never_give_up(ddb: Any) -> None:
    """Before: three lost races in a row counted as 'over the limit' (1 << 30): a burst at a second's boundary got
    RATE_LIMITED frames whatever the limit. Now every message lands in a window with a real count."""
    quotas = QuotaStore(
        "streamer-quotas", connections_table="streamer-connections", requests_table="streamer-requests", client=ddb
    )
    counts: list[int] = []
    lock = threading.Lock()

    def writer(second: int) -> None:
        for _ in range(25):
            n = quotas.count_message("bob", second)
            with lock:
                counts.append(n)

    threads = [threading.Thread(target=writer, args=(s,)) for s in (200, 201, 200, 201)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(counts) == 100
    assert max(counts) <= 100


def test_the_connection_counter_needs_its_row_and_moves_forward_only(ddb: Any) -> None:
    conns = ConnectionStore("streamer-connections", ddb)
    assert conns.count_message("nobody", 60 * 10) is None
    conns.put(Connection(connection_id="c1", user_id="alice", connected_at=0, expires_at=10**10))
    assert conns.count_message("c1", 60 * 10)[1] == 1
    assert conns.count_message("c1", 60 * 10 + 59)[1] == 2
    assert conns.count_message("c1", 60 * 9)[1] == 3  # late: counted in the current minute
    assert conns.count_message("c1", 60 * 11)[1] == 1
