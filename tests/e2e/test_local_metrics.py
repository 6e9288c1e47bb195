"""``streamer local``: the handlers' EMF metrics land in the stack's metrics file and read back for the console.

One stack with its own state file, so its metrics file (beside it) holds only this test's requests. Real
WebSocket clients; the metrics come from the handlers running in the local Lambda endpoint's process.
"""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path
from typing import Any

import pytest
import websockets
from tests.e2e.conftest import free_port, launch

from streamer import metrics
from streamer.auth import mint_token
from streamer.client import StreamerClient


def test_a_local_stack_writes_the_handlers_metrics_where_the_console_reads_them(tmp_path: Path) -> None:
    state_file = tmp_path / "state" / "local.json"
    metrics_file = metrics.local_metrics_file({"STREAMER_LOCAL_STATE_FILE": str(state_file)})
    local = launch(tmp_path, "--port", str(free_port()), env={"STREAMER_LOCAL_STATE_FILE": str(state_file)})
    try:

        async def go() -> list[list[dict[str, Any]]]:
            seen = []
            async with await StreamerClient.connect(local.ws_url, local.token("metrics-user")) as client:
                for payload in ({"message": "hi", "steps": 2}, {"message": "no", "fail": True}):
                    rid = await client.submit("echo", payload)
                    seen.append([ev async for ev in client.events(rid, timeout=120)])
            with pytest.raises(websockets.InvalidStatus):  # a token signed with another key: refused
                forged = mint_token("y" * 40, "metrics-user")
                await websockets.connect(local.ws_url, subprotocols=["streamer.v1", f"bearer.{forged}"])  # type: ignore[list-item]
            return seen

        ok, failed = asyncio.run(go())
        assert ok[-1]["type"] == "result" and failed[-1]["status"] == "FAILED"
        deadline = time.monotonic() + 20
        while True:  # the notify invocation flushes as it returns, a moment after the client got the event
            rows = metrics.summarize(metrics.read_local(metrics_file), window_seconds=600)
            by = {(r["name"], tuple(sorted(r["dimensions"].items()))): r for r in rows}
            if (("RequestsFailed", (("workflow", "echo"),))) in by or time.monotonic() > deadline:
                break
            time.sleep(0.2)
    finally:
        assert local.stop(signal.SIGINT) == 0, local.stderr()[-4000:]

    def total(name: str, **dims: str) -> float:
        row = by.get((name, tuple(sorted(dims.items()))))
        return row["sum"] if row else 0.0

    assert total("RequestsSubmitted", workflow="echo") == 2
    assert total("RequestsStarted", workflow="echo") == 2
    assert total("RequestsSucceeded", workflow="echo") == 1
    assert total("RequestsFailed", workflow="echo") == 1
    assert total("StepErrors", step="echo", error="StepFailedError") == 1
    assert total("ConnectsRefused", reason="invalid_signature") == 1
    assert total("ProgressEventsPushed", workflow="echo") == len([e for e in ok + failed if e["type"] == "progress"])
    duration = by[("StepDuration", (("step", "echo"),))]
    assert duration["samples"] == 2 and duration["p50"] is not None and duration["p99"] >= duration["p50"]
    assert by[("RequestDuration", (("workflow", "echo"),))]["samples"] == 2
    # The lines went to the file, not to the Lambda endpoint's output (and so not to the stack's log).
    assert '"_aws"' not in local.stderr() and not any('"_aws"' in line for line in local.stdout_lines)
