"""The local stack's fast path as a user meets it: ``streamer local`` in a subprocess, real WebSocket clients.

* a 2,000-ping burst over 10 connections: every ping answered, no error frame, and no process of the stack
  grows its threads past its pools (the Lambda endpoint once had 514 threads and moto 255 in such a burst);
* the route functions in the gateway's process and over HTTP through the Lambda endpoint
  (``STREAMER_LOCAL_INVOKE=http``) give a client the same replies, through the real router and DynamoDB.

Speed is not asserted (it depends on what else the machine runs): ``scripts/local_fast_bench.py`` measures.
"""

from __future__ import annotations

import asyncio
import json
import os
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection, connect

from streamer.auth import mint_token
from streamer.local.inprocess import DEFAULT_WORKERS
from streamer.local.lambda_endpoint import POOL_SIZE as LAMBDA_POOL
from streamer.local.moto_server import POOL_SIZE as MOTO_POOL
from tests.e2e.conftest import LocalStack, free_port
from tests.e2e.conftest import launch as start_local

SECRET = "local-fast-stack-" + "s" * 32
#: Threads a process of the stack has besides its pools: the event loop, the pollers, the supervisor's pipe
#: readers, the stdin watchers, asyncio's default executor (min(32, cores + 4)), moto's engine.
OTHER_THREADS = 40


def _roles(stack: LocalStack) -> dict[int, str]:
    """pid → role (gateway, lambda, moto) of the stack's live processes."""
    found = {stack.proc.pid: "gateway"}
    try:  # cheaper than stack.children() (a scan of /proc): this is sampled every 20 ms
        children = Path(f"/proc/{stack.proc.pid}/task/{stack.proc.pid}/children").read_text().split()
    except OSError:
        children = []
    for pid in map(int, children):
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
        except OSError:
            continue
        found[pid] = "lambda" if "lambda_endpoint" in cmd else "moto" if "moto_server" in cmd else "other"
    return found


@pytest.fixture
def launch(tmp_path: Path) -> Iterator[Callable[..., LocalStack]]:
    """Start ``streamer local`` (``tests.e2e.conftest.launch``) with ``env``; each one is stopped, exit code 0."""
    started: list[LocalStack] = []

    def start(**env: str) -> LocalStack:
        limits = {
            "STREAMER_JWT_SECRET": SECRET,
            "STREAMER_RATE_LIMIT_PER_MINUTE": str(10**9),
            "STREAMER_MAX_MESSAGES_PER_SECOND_PER_USER": "0",  # one user's burst is what we send
        }
        args = ("--port", str(free_port()), "--log-level", "WARNING")
        stack = start_local(tmp_path, *args, env={**limits, **env}, timeout=180)
        started.append(stack)
        return stack

    try:
        yield start
    finally:
        codes = [stack.stop(timeout=60) for stack in started]
        assert codes == [0] * len(started), "\n".join(stack.stderr()[-3000:] for stack in started)


async def _open(url: str, user: str) -> ClientConnection:
    token = mint_token(SECRET, user)
    return await connect(
        url,
        subprotocols=["streamer.v1", f"bearer.{token}"],  # type: ignore[list-item]
        open_timeout=60,
        ping_interval=None,
    )


class _PeakThreads:
    """The most threads each role's process had while the block ran (sampled every 20 ms)."""

    def __init__(self, stack: LocalStack) -> None:
        self.stack = stack
        self.peak: dict[str, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.02):
            for pid, role in _roles(self.stack).items():
                try:
                    n = len(os.listdir(f"/proc/{pid}/task"))
                except OSError:
                    continue
                self.peak[role] = max(self.peak.get(role, 0), n)

    def __enter__(self) -> _PeakThreads:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)


def test_a_2000_ping_burst_over_10_connections_is_answered_with_bounded_threads(launch: Any) -> None:
    stack = launch()
    burst, n_conns = 2000, 10

    async def scenario() -> list[str]:
        conns = [await _open(stack.ws_url, f"burst-{i}") for i in range(n_conns)]
        frames: list[str] = []

        async def read(ws: ClientConnection, expected: int) -> None:
            for _ in range(expected):
                frames.append(str(await asyncio.wait_for(ws.recv(), 120)))

        readers = [asyncio.create_task(read(ws, burst // n_conns)) for ws in conns]
        ping = json.dumps({"action": "ping"})
        for k in range(burst):  # all at once: nobody waits for a reply before sending
            await conns[k % n_conns].send(ping)
        await asyncio.gather(*readers)
        for ws in conns:
            await ws.close()
        return frames

    with _PeakThreads(stack) as threads:
        frames = asyncio.run(scenario())
    assert len(frames) == burst
    assert [f for f in frames if json.loads(f) != {"type": "pong"}] == []  # no error, no timeout
    assert set(threads.peak) >= {"gateway", "lambda", "moto"}
    assert threads.peak["gateway"] <= DEFAULT_WORKERS + OTHER_THREADS, threads.peak
    assert threads.peak["lambda"] <= 2 * LAMBDA_POOL + OTHER_THREADS, threads.peak
    assert threads.peak["moto"] <= MOTO_POOL + OTHER_THREADS, threads.peak
    text = stack.stderr()
    assert "Connection pool is full" not in text and "Traceback" not in text


async def _replies(url: str, user: str) -> list[Any]:
    """A conversation through the real router; ids and times left out, the rest compared."""
    ws = await _open(url, user)
    seen: list[Any] = []

    async def ask(message: str, until: set[str] | None = None) -> None:
        await ws.send(message)
        while True:
            frame = json.loads(await asyncio.wait_for(ws.recv(), 60))
            kind = frame.get("type")
            summary = {k: frame[k] for k in ("type", "code", "workflow", "status", "result") if k in frame}
            seen.append(summary)
            if until is None or kind in until:
                return

    await ask(json.dumps({"action": "ping"}))
    await ask("not json")
    await ask(json.dumps({"action": "no-such-action"}))
    await ask(json.dumps({"action": "submit", "workflow": "no-such-workflow", "payload": {}}))
    await ask(json.dumps({"action": "status", "request_id": "never-submitted"}))
    await ask(
        json.dumps({"action": "submit", "workflow": "echo", "payload": {"message": "same"}, "request_id": user}),
        until={"result", "error"},
    )
    await ws.close()
    # Progress events may interleave differently; what matters is each kind and the end.
    return [s for s in seen if s.get("type") not in ("progress", "status")]


def test_in_process_and_http_route_functions_give_the_same_replies(launch: Any) -> None:
    fast = launch()
    http = launch(STREAMER_LOCAL_INVOKE="http")
    ours = asyncio.run(_replies(fast.ws_url, "parity-a"))
    theirs = asyncio.run(_replies(http.ws_url, "parity-a"))
    assert ours == theirs
    assert ours[0] == {"type": "pong"}
    assert [s.get("code") for s in ours[1:5]] == [s.get("code") for s in theirs[1:5]] and all(
        s["type"] == "error" for s in ours[1:5]
    )
    assert ours[-1]["type"] == "result"
