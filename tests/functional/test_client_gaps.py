"""``StreamerClient.events`` against a server whose event log has a seq that will never come (a writer died
between its seq claim and its put, or its put failed after its retries: docs/reliability.md). Found by the
fault run (tests/e2e/test_fault_run.py): before the fix the client waited behind the gap, resuming every
``resume_after`` seconds, until its timeout, although the terminal event had arrived."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from websockets.asyncio.server import ServerConnection, serve

from streamer.client import StreamerClient

RID = "r1"
#: The stored log: seq 2 is missing, the terminal event (the request item) is seq 4.
STORED = [
    {"type": "progress", "request_id": RID, "seq": 1, "percent": 33},
    {"type": "progress", "request_id": RID, "seq": 3, "percent": 100},
    {"type": "result", "request_id": RID, "seq": 4, "status": "SUCCEEDED", "output": {}},
]


def _run(late: dict[str, Any] | None) -> tuple[list[int], int, int]:
    """Events seen by the client (seqs), its resumes and skipped gaps; ``late`` is pushed after the second
    resume instead of never."""
    resumes: list[int] = []

    async def handler(ws: ServerConnection) -> None:
        for frame in STORED:  # pushed live
            await ws.send(json.dumps(frame))
        async for raw in ws:
            msg = json.loads(raw)
            if msg.get("action") == "resume":
                resumes.append(msg["after_seq"])
                if late is not None and len(resumes) == 1:
                    await ws.send(json.dumps({"type": "error", "code": "INTERNAL_ERROR", "message": "x"}))
                    continue
                log = sorted([*STORED, *([late] if late and len(resumes) > 1 else [])], key=lambda f: f["seq"])
                for frame in log:
                    if frame["seq"] > msg["after_seq"]:
                        await ws.send(json.dumps(frame))

    async def main() -> tuple[list[int], int, int]:
        async with serve(handler, "127.0.0.1", 0) as server:
            port = server.sockets[0].getsockname()[1]
            client = await StreamerClient.connect(f"ws://127.0.0.1:{port}", "token")
            async with client:
                seen = [e["seq"] async for e in client.events(RID, timeout=10, resume_after=0.2)]
                return seen, client.resumes, client.gaps_skipped

    return asyncio.run(main())


def test_a_gap_before_the_terminal_event_is_skipped_after_resumes_leave_it() -> None:
    seen, resumes, skipped = _run(None)
    assert seen == [1, 3, 4] and skipped == 1
    assert resumes == 2  # two resumes from seq 1 left the gap: then skipped, not waited on until the timeout


def test_a_gap_a_resume_fills_is_not_skipped_even_after_a_failed_resume() -> None:
    late = {"type": "progress", "request_id": RID, "seq": 2, "percent": 66}
    seen, _, skipped = _run(late)
    assert seen == [1, 2, 3, 4] and skipped == 0
