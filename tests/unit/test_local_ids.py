"""The local stack's per-message ids: unique, well-formed, no system call each."""

from __future__ import annotations

import uuid

from streamer.local.gateway import _request_id, new_connection_id
from streamer.local.serving import unique_bytes, unique_uuid


def test_ids_are_well_formed_and_unique() -> None:
    uuids = {unique_uuid() for _ in range(10_000)}
    assert len(uuids) == 10_000
    assert all(uuid.UUID(u).version == 4 and str(uuid.UUID(u)) == u for u in list(uuids)[:100])
    assert len(unique_bytes(11)) == 11
    ids = {_request_id() for _ in range(10_000)}
    assert len(ids) == 10_000 and all(len(i) == 16 and "+" not in i and "/" not in i for i in ids)
    assert len(new_connection_id()) == 16
