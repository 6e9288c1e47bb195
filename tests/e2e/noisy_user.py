"""The noisy neighbour of ``test_reliability_edges``: one user flooding from its own process, as another client.

``STREAMER_NOISY_TOKEN=… python -m tests.e2e.noisy_user URL SUBMITS RATE STEPS DELAY_MS`` opens 20 connections
with the token (from the environment: a process's argv is visible to every user of the machine),
prints ``connected``, sends SUBMITS ``echo`` submits (STEPS progress events DELAY_MS apart each) round-robin at
RATE a second, waits (at most 120 s) for one reply to each, cancels the accepted ones and prints the replies
as one JSON line. Its frames are parsed in this process, so the measured user's client does not share an event
loop (or a core's worth of JSON) with the flood, as two users' devices would not.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from typing import Any

from websockets.asyncio.client import connect
from websockets.typing import Subprotocol

from streamer.protocol import SUBPROTOCOL

CONNECTIONS = 20


async def flood(url: str, token: str, submits: int, rate: float, steps: int, delay_ms: int) -> list[dict[str, Any]]:
    protocols = [Subprotocol(SUBPROTOCOL), Subprotocol(f"bearer.{token}")]
    conns = [await connect(url, subprotocols=protocols, ping_interval=None) for _ in range(CONNECTIONS)]
    print("connected", flush=True)
    replies: list[dict[str, Any]] = []

    async def drain(ws: Any) -> None:  # every submit gets one reply (ack or error) on its own connection
        async for raw in ws:
            frame = json.loads(raw)
            if "seq" not in frame:
                replies.append(frame)

    drains = [asyncio.create_task(drain(ws)) for ws in conns]
    # Each accepted request runs for minutes: every one accepted during the burst is still in flight at its end.
    payload = {"message": "n", "steps": steps, "delay_ms": delay_ms}
    for i in range(submits):
        msg = {"action": "submit", "workflow": "echo", "payload": payload, "request_id": f"n{i}"}
        await conns[i % CONNECTIONS].send(json.dumps(msg))
        await asyncio.sleep(1 / rate)
    deadline = time.monotonic() + 120
    while len(replies) < submits and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    answered = list(replies)  # the submits' replies; the cancels' own are not counted
    for r in answered:  # the accepted ones are cancelled, so the stack stops promptly
        if r.get("type") == "ack":
            await conns[0].send(json.dumps({"action": "cancel", "request_id": r["request_id"]}))
            await asyncio.sleep(0.06)
    # Closed together, and still drained: a connection whose incoming frames are not read cannot read the
    # server's close frame either, and waits out its close timeout.
    await asyncio.gather(*(ws.close() for ws in conns))
    for task in drains:
        task.cancel()
    return answered


def main(argv: list[str]) -> int:
    url, submits, rate, steps, delay_ms = argv
    replies = asyncio.run(
        flood(url, os.environ["STREAMER_NOISY_TOKEN"], int(submits), float(rate), int(steps), int(delay_ms))
    )
    print(json.dumps(replies), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
