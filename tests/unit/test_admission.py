"""Connections admitted in this process (``streamer.admission``) and the group commit of their rows
(``streamer.aws.batch``): the rules, without AWS. Against moto: tests/functional/test_admission.py."""

from __future__ import annotations

import threading
import time
import traceback
from typing import Any

import pytest
from botocore.exceptions import ClientError

from streamer.admission import MemoryConnections
from streamer.aws.batch import BATCH_MAX, GroupCommit, UnprocessedWriteError
from streamer.config import Settings


def _concurrently(n: int, target: Any) -> list[BaseException | None]:
    errors: list[BaseException | None] = [None] * n
    start = threading.Barrier(n)

    def run(i: int) -> None:
        start.wait()
        try:
            target(i)
        except BaseException as exc:
            errors[i] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return errors


def test_the_mode_comes_from_the_environment_and_is_checked() -> None:
    assert Settings.from_env({}).connection_admission == "dynamodb"
    assert Settings.from_env({"STREAMER_CONNECTION_ADMISSION": " Memory "}).connection_admission == "memory"
    with pytest.raises(ValueError, match="STREAMER_CONNECTION_ADMISSION must be one of dynamodb, memory"):
        Settings.from_env({"STREAMER_CONNECTION_ADMISSION": "redis"})


# ------------------------------------------------------------------------------------ MemoryConnections


def test_a_user_holds_at_most_the_limit_and_a_release_frees_a_slot() -> None:
    slots = MemoryConnections()
    assert all(slots.reserve("alice", f"c{i}", 3) for i in range(3))
    assert not slots.reserve("alice", "c3", 3)
    assert slots.reserve("bob", "b0", 3)  # another user's slots are their own
    assert slots.reserve("alice", "c1", 3)  # a connection's own slot: taken again, not twice
    assert slots.count("alice") == 3
    slots.release("c0")
    slots.release("c0")  # twice: a no-op
    assert slots.reserve("alice", "c3", 3)
    assert slots.count("alice") == 3 and len(slots) == 4
    assert not slots.reserve("bob", "c3", 3)  # an id held by another user is refused, never shared


def test_concurrent_admissions_never_take_more_than_the_limit() -> None:
    slots = MemoryConnections()
    results: list[bool] = []
    assert _concurrently(40, lambda i: results.append(slots.reserve("alice", f"c{i}", 10))) == [None] * 40
    assert results.count(True) == 10 and slots.count("alice") == 10


def test_a_full_quota_drops_expired_and_gone_members_but_never_one_being_admitted() -> None:
    now = [1000.0]
    slots = MemoryConnections(clock=lambda: now[0])
    for c in ("expired", "gone", "live", "unknown", "connecting"):
        assert slots.reserve("alice", c, 5)
    slots.admitted("expired", 1000)  # expires now
    for c in ("gone", "live", "unknown"):
        slots.admitted(c, 5000)
    asked: list[str] = []

    def alive(connection_id: str) -> bool:
        asked.append(connection_id)
        if connection_id == "unknown":
            raise RuntimeError("API Gateway cannot tell")  # counted as live
        return connection_id != "gone"

    assert slots.reserve("alice", "new1", 5, alive)
    # Only admitted, unexpired members were asked about; the one whose $connect still runs was not.
    assert sorted(asked) == ["gone", "live", "unknown"]
    assert slots.holds("connecting") and slots.holds("live") and slots.holds("unknown")
    assert not slots.holds("expired") and not slots.holds("gone")
    assert slots.reserve("alice", "new2", 5, alive)
    assert not slots.reserve("alice", "new3", 5, alive)  # full of live members: refused, nothing dropped
    assert slots.count("alice") == 5


def test_without_a_limit_every_connection_is_admitted() -> None:
    slots = MemoryConnections()
    assert all(slots.reserve("alice", f"c{i}", 0) for i in range(50))


# ------------------------------------------------------------------------------------ GroupCommit


class FakeDynamoDB:
    """BatchWriteItem only: records each call's write requests; can leave items unprocessed or fail."""

    def __init__(
        self, *, unprocessed: int = 0, fail: Exception | None = None, delay: float = 0.0, gate: Any = None
    ) -> None:
        self.gate = gate  # a threading.Event the first call waits for
        self.calls: list[list[dict[str, Any]]] = []
        self.unprocessed = unprocessed  # how many calls leave their last item unprocessed
        self.fail = fail
        self.delay = delay
        self.lock = threading.Lock()

    def batch_write_item(self, RequestItems: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
        (table, requests), = RequestItems.items()
        with self.lock:
            self.calls.append(list(requests))
            first = len(self.calls) == 1
        if first and self.gate is not None:
            assert self.gate.wait(30)
        time.sleep(self.delay)
        if self.fail is not None:
            raise self.fail
        if self.unprocessed > 0:
            self.unprocessed -= 1
            # DynamoDB returns the write requests themselves (new objects, equal by value)
            return {"UnprocessedItems": {table: [dict(requests[-1])]}}
        return {"UnprocessedItems": {}}


def _commit(fake: FakeDynamoDB) -> GroupCommit:
    return GroupCommit("t", lambda: fake, sleep=lambda _: None)  # type: ignore[arg-type,return-value]


def _item(i: int) -> dict[str, Any]:
    return {"connection_id": {"S": f"c{i}"}}


def test_concurrent_writes_go_in_batches_of_at_most_25_and_each_caller_returns_after_its_own() -> None:
    fake = FakeDynamoDB(delay=0.02)
    commit = _commit(fake)
    errors = _concurrently(60, lambda i: commit.put(_item(i), f"c{i}"))
    assert errors == [None] * 60
    written = [r["PutRequest"]["Item"]["connection_id"]["S"] for call in fake.calls for r in call]
    assert sorted(written) == sorted(f"c{i}" for i in range(60))
    assert max(len(call) for call in fake.calls) <= BATCH_MAX
    assert len(fake.calls) < 60  # grouped: while one batch was on its way the others queued
    assert commit.batches == len(fake.calls) and commit.items == 60


def _key(request: dict[str, Any]) -> str:
    item = request["PutRequest"]["Item"] if "PutRequest" in request else request["DeleteRequest"]["Key"]
    return str(item["connection_id"]["S"])


def _until(condition: Any) -> None:
    deadline = time.monotonic() + 30
    while not condition():
        assert time.monotonic() < deadline
        time.sleep(0.001)


def test_a_key_is_never_twice_in_one_batch_and_its_writes_land_in_order() -> None:
    gate = threading.Event()
    fake = FakeDynamoDB(gate=gate)
    commit = _commit(fake)
    first = threading.Thread(target=commit.put, args=(_item(0), "c0"))
    first.start()
    _until(lambda: len(fake.calls) == 1)  # the first batch is on its way (held): the next writes queue behind it
    later = [
        threading.Thread(target=commit.put, args=(_item(1), "c1")),
        threading.Thread(target=commit.delete, args=(_item(1), "c1")),
        threading.Thread(target=commit.put, args=(_item(2), "c2")),
    ]
    for n, t in enumerate(later, start=1):
        t.start()
        _until(lambda n=n: len(commit._queue) == n)  # queued in this order
    gate.set()
    for t in (first, *later):
        t.join()
    keys = [[_key(r) for r in call] for call in fake.calls]
    assert keys == [["c0"], ["c1", "c2"], ["c1"]]  # the delete of c1 waited for the batch after its put
    assert [next(iter(r)) for r in fake.calls[2]] == ["DeleteRequest"]


def test_unprocessed_items_are_sent_again() -> None:
    fake = FakeDynamoDB(unprocessed=2)
    commit = _commit(fake)
    commit.put(_item(1), "c1")
    assert len(fake.calls) == 3 and fake.calls[1] == fake.calls[2] == [{"PutRequest": {"Item": _item(1)}}]


def test_an_item_left_unprocessed_through_every_attempt_is_its_callers_error_only() -> None:
    fake = FakeDynamoDB(unprocessed=100, delay=0.02)
    commit = _commit(fake)
    errors = _concurrently(5, lambda i: commit.put(_item(i), f"c{i}"))
    failed = [e for e in errors if e is not None]
    # Each batch's last item was left unprocessed every time: its caller (and only it) gets the error.
    assert failed and all(isinstance(e, UnprocessedWriteError) for e in failed)
    assert len(failed) == commit.batches
    assert commit.items == 5 - len(failed)


def test_a_failed_batch_write_is_every_callers_error_and_the_next_batch_is_sent() -> None:
    boom = RuntimeError("the table is gone")
    fake = FakeDynamoDB(fail=boom, delay=0.02)
    commit = _commit(fake)
    errors = _concurrently(10, lambda i: commit.put(_item(i), f"c{i}"))
    assert all(type(e) is RuntimeError and e.args == boom.args and e.__cause__ is boom for e in errors)
    fake.fail = None
    commit.put(_item(99), "c99")  # the commit is not stuck
    assert fake.calls[-1] == [{"PutRequest": {"Item": _item(99)}}]


def test_each_caller_of_a_failed_batch_raises_its_own_copy_of_the_error() -> None:
    # One object raised in several threads at once would collect all their frames in its traceback: each caller
    # gets a copy (botocore's ClientError with its response), chained to the error the write raised.
    throttled = ClientError(
        {"Error": {"Code": "ProvisionedThroughputExceededException", "Message": "slow down"}}, "BatchWriteItem"
    )
    gate = threading.Event()
    fake = FakeDynamoDB(fail=throttled, gate=gate)
    commit = _commit(fake)
    raised: list[list[BaseException | None]] = []
    writers = threading.Thread(target=lambda: raised.append(_concurrently(6, lambda i: commit.put(_item(i), f"c{i}"))))
    writers.start()
    deadline = time.monotonic() + 10
    # The first write's batch is on its way (held at the gate); the five others queue for the next batch.
    while (len(fake.calls) < 1 or len(commit._queue) < 5) and time.monotonic() < deadline:
        time.sleep(0.001)
    assert len(commit._queue) == 5
    gate.set()
    writers.join(10)
    (errors,) = raised
    assert len({id(e) for e in errors}) == 6
    for e in errors:
        assert isinstance(e, ClientError) and e is not throttled and e.__cause__ is throttled
        assert e.response["Error"]["Code"] == "ProvisionedThroughputExceededException"
        assert e.operation_name == "BatchWriteItem" and str(e) == str(throttled)
        frames = traceback.extract_tb(e.__traceback__)
        assert [f.name for f in frames].count("_result") == 1  # its own thread's frames only


def test_an_error_that_cannot_be_copied_is_raised_as_it_is() -> None:
    class Odd(Exception):
        def __init__(self, a: str, b: str) -> None:  # copy.copy calls Odd(a): TypeError
            super().__init__(a)
            self.b = b

    odd = Odd("a", "b")
    commit = _commit(FakeDynamoDB(fail=odd))
    with pytest.raises(Odd) as info:
        commit.put(_item(1), "c1")
    assert info.value is odd
