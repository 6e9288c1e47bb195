"""``streamer.quotas.KnownRefusals`` keeps bounded state in a warm container, whatever number of users it sees."""

from __future__ import annotations

from streamer.quotas import KnownRefusals


def test_single_flight_locks_are_a_fixed_set_shared_by_every_user() -> None:
    known = KnownRefusals()
    locks = {id(known.verifying(f"user-{i}", "requests")) for i in range(20_000)}
    assert len(locks) <= KnownRefusals.VERIFYING_LOCKS  # was one lock per user, kept forever
    assert known.verifying("alice", "requests") is known.verifying("alice", "requests")


def test_seen_connections_and_expired_refusals_are_bounded() -> None:
    known = KnownRefusals()
    for i in range(KnownRefusals.CONNECTIONS_KEPT + 500):
        known.seen(f"c{i}", f"u{i}")
    assert known.user_of("c0") is None and known.user_of(f"c{KnownRefusals.CONNECTIONS_KEPT + 499}") is not None
    for i in range(5_000):
        known.add(float(i), float(i) + 1.0, f"u{i}", "requests")
    assert len(known._refused) <= KnownRefusals._PRUNE_AT + 2
    assert known.refused(4_999.5, "u4999", "requests") and not known.refused(10.0, "u0", "requests")
