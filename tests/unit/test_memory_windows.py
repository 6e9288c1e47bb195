"""streamer.windows.MemoryWindows: the fixed-window counters `streamer local` keeps in its gateway's memory."""

from __future__ import annotations

import threading

import pytest

from streamer.config import Settings
from streamer.windows import MemoryWindows, store_mode


def test_counts_within_a_window_and_restarts_in_a_newer_one() -> None:
    w = MemoryWindows()
    assert [w.add("alice", 100) for _ in range(3)] == [1, 2, 3]
    assert w.add("bob", 100) == 1  # every key its own window
    # A clock read a moment earlier (window 99) after window 100 began counts in 100, as DynamoDB's window does.
    assert w.add("alice", 99) == 4
    assert w.add("alice", 101) == 1
    assert w.add("alice", 101) == 2


def test_seed_and_forget() -> None:
    w = MemoryWindows()
    w.seed("c1", 7, 5)  # what DynamoDB counted for the connection's first message
    assert w.add("c1", 7) == 6
    w.forget("c1")
    assert w.add("c1", 7) == 1


def test_concurrent_adds_lose_no_count() -> None:
    w = MemoryWindows()
    seen: list[int] = []
    lock = threading.Lock()

    def writer() -> None:
        for _ in range(500):
            n = w.add("alice", 5)
            with lock:
                seen.append(n)

    threads = [threading.Thread(target=writer) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(seen) == list(range(1, 4001))  # every count handed out once


def test_bounded_by_dropping_old_windows_only() -> None:
    w = MemoryWindows()
    for i in range(MemoryWindows.PRUNE_AT):
        w.add(f"old{i}", 1)
    assert len(w) == MemoryWindows.PRUNE_AT
    w.add("now", 2)  # past the bound: every key of an older window goes (its next event starts a new one)
    assert dict(w.snapshot()) == {"now": (2, 1)}
    # Keys of the current window are never dropped: a count is never lost.
    for i in range(3 * MemoryWindows.PRUNE_AT):
        w.add(f"cur{i}", 2)
    assert len(w) == 3 * MemoryWindows.PRUNE_AT + 1
    assert w.add("cur0", 2) == 2


def test_the_mode_is_dynamodb_unless_memory_is_asked_for() -> None:
    assert Settings.from_env({}).message_windows == "dynamodb"
    assert Settings.from_env({"STREAMER_MESSAGE_WINDOWS": " Memory "}).message_windows == "memory"
    assert store_mode("STREAMER_MESSAGE_WINDOWS", "") == "dynamodb"
    with pytest.raises(ValueError, match="STREAMER_MESSAGE_WINDOWS must be one of dynamodb, memory"):
        Settings.from_env({"STREAMER_MESSAGE_WINDOWS": "redis"})
