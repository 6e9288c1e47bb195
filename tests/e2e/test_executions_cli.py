"""``streamer executions`` against a running ``streamer local``, found through its state file.

One stack for this module, with its own state file (``STREAMER_LOCAL_STATE_FILE``), so other stacks on the
machine (other tests, a developer's) are never the one found. Requests go through real WebSocket clients;
the commands run as real subprocesses.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.e2e.conftest import LocalStack, free_port, launch

from streamer.client import StreamerClient

STREAMER = [sys.executable, "-m", "streamer.cli", "executions"]
TEXT = "the quick brown fox jumps over the lazy dog " * 1000  # ~44 K characters: 3 chunks


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LocalStack, Path]]:
    tmp = tmp_path_factory.mktemp("executions-cli")
    state_file = tmp / "state" / "local.json"
    env = {"STREAMER_LOCAL_STATE_FILE": str(state_file)}
    local = launch(tmp, "--port", str(free_port()), env=env)
    try:
        yield local, state_file
    finally:
        code = local.stop(signal.SIGINT)
    assert code == 0, local.stderr()[-4000:]
    assert not state_file.exists(), "the state file must be removed when the stack stops"


def run(stack: tuple[LocalStack, Path], *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "STREAMER_LOCAL_STATE_FILE": str(stack[1]), "COLUMNS": "200"}
    return subprocess.run([*STREAMER, *args], capture_output=True, text=True, timeout=timeout, env=env)


def run_json(stack: tuple[LocalStack, Path], *args: str) -> Any:
    out = run(stack, *args, "--json")
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def submit(local: LocalStack, user: str, workflow: str, payload: dict[str, Any], rid: str | None = None) -> str:
    """Submit over a real WebSocket and wait for the terminal event; the request id."""
    return submit_and_watch(local, user, workflow, payload, rid)[0]


def submit_and_watch(
    local: LocalStack, user: str, workflow: str, payload: dict[str, Any], rid: str | None = None
) -> tuple[str, list[dict[str, Any]]]:
    """Submit over a real WebSocket; the request id and every event the client received."""

    async def go() -> tuple[str, list[dict[str, Any]]]:
        async with await StreamerClient.connect(local.ws_url, local.token(user)) as client:
            request_id = await client.submit(workflow, payload, rid)
            return request_id, [ev async for ev in client.events(request_id, timeout=120)]

    return asyncio.run(go())


def uid(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


#: The events the client of the "ok" request received.
CLIENT_SAW: list[dict[str, Any]] = []


@pytest.fixture(scope="module")
def finished(stack: tuple[LocalStack, Path]) -> dict[str, tuple[str, str]]:
    """Three finished requests: {kind: (user, request id)}."""
    local = stack[0]
    alice, bob = uid("alice"), uid("bob")
    ok, seen = submit_and_watch(local, alice, "echo", {"message": "hi", "steps": 3, "delay_ms": 150})
    CLIENT_SAW[:] = seen
    failed = submit(local, bob, "echo", {"message": "no", "fail": True})
    # ``created_at`` is in whole seconds (as the GSIs' sort key), so "newest first" orders requests created in
    # different seconds; requests of the same second tie. Alice's second request starts in a later second.
    time.sleep(1.05)
    return {
        "ok": (alice, ok),
        "failed": (bob, failed),
        "text": (alice, submit(local, alice, "textstats", {"text": TEXT, "top": 3})),
    }


def test_the_running_stack_recorded_itself(stack: tuple[LocalStack, Path]) -> None:
    local, state_file = stack
    state = json.loads(state_file.read_text())
    assert state["ws_url"] == local.ws_url and state["moto_url"] == local.moto_url
    assert state["pid"] == local.proc.pid
    assert state["requests_table"] == "streamer-requests" and set(state["workflows"]) >= {"echo", "textstats"}


def test_list_filters_and_pages(stack: tuple[LocalStack, Path], finished: dict[str, tuple[str, str]]) -> None:
    alice, bob = finished["ok"][0], finished["failed"][0]
    rows = run_json(stack, "list", "--user", alice)["items"]
    assert [r["request_id"] for r in rows] == [finished["text"][1], finished["ok"][1]]  # newest first
    assert {r["status"] for r in rows} == {"SUCCEEDED"}
    assert [r["request_id"] for r in run_json(stack, "list", "--user", bob)["items"]] == [finished["failed"][1]]
    failed = run_json(stack, "list", "--status", "failed", "--since", "1h")["items"]
    assert finished["failed"][1] in [r["request_id"] for r in failed]
    assert {r["status"] for r in failed} == {"FAILED"}
    text = run_json(stack, "list", "--workflow", "textstats", "--user", alice)["items"]
    assert [r["workflow"] for r in text] == ["textstats"]
    first = run_json(stack, "list", "--user", alice, "--limit", "1")
    assert [r["request_id"] for r in first["items"]] == [finished["text"][1]]
    second = run_json(stack, "list", "--user", alice, "--limit", "1", "--cursor", first["next_cursor"])
    assert [r["request_id"] for r in second["items"]] == [finished["ok"][1]]
    assert second["next_cursor"] is None
    table = run(stack, "list", "--user", alice)
    assert table.returncode == 0 and finished["ok"][1] in table.stdout and "SUCCEEDED" in table.stdout
    assert run_json(stack, "list", "--since", "1h", "--query", finished["ok"][1][-6:])["items"][0]["user_id"] == alice


def test_show_a_succeeded_execution(stack: tuple[LocalStack, Path], finished: dict[str, tuple[str, str]]) -> None:
    user, rid = finished["ok"]
    detail = run_json(stack, "show", rid)
    assert detail["request"]["user_id"] == user and detail["request"]["status"] == "SUCCEEDED"
    assert detail["execution"]["status"] == "SUCCEEDED"
    states = {s["name"]: s for s in detail["states"]}
    assert states["Echo"]["status"] == "succeeded" and states["NotifyFailure"]["status"] == "not_reached"
    # Exactly what the client received, in seq order, the terminal event last.
    assert [e["body"] for e in detail["events"]] == CLIENT_SAW
    assert [e["seq"] for e in detail["events"]] == list(range(1, len(CLIENT_SAW) + 1))
    assert detail["events"][-1]["type"] == "result"
    assert detail["request"]["terminal_event"]["output"] == {"message": "hi"}
    assert detail["history_count"] > 0 and detail["definition"]["StartAt"] == "Echo"
    text = run(stack, "show", rid)
    assert text.returncode == 0
    assert "Echo" in text.stdout and "succeeded" in text.stdout and "not_reached" in text.stdout


def test_show_a_failed_execution_puts_error_and_cause_on_the_right_state(
    stack: tuple[LocalStack, Path], finished: dict[str, tuple[str, str]]
) -> None:
    _, rid = finished["failed"]
    detail = run_json(stack, "show", rid)
    states = {s["name"]: s for s in detail["states"]}
    echo = states["Echo"]
    assert (echo["status"], echo["error"]) == ("caught", "StepFailedError")
    assert "payload asked it to (fail: true)" in echo["cause"]
    assert (states["Failed"]["status"], states["Failed"]["error"]) == ("failed", "RequestFailed")
    assert states["NotifyResult"]["status"] == "not_reached"
    assert detail["request"]["terminal_event"]["code"] == "STEP_FAILED"
    text = run(stack, "show", rid).stdout
    assert "StepFailedError" in text and "echo failed because the payload asked it to" in text


def test_show_textstats_summarises_the_map_and_expands_every_iteration(
    stack: tuple[LocalStack, Path], finished: dict[str, tuple[str, str]]
) -> None:
    _, rid = finished["text"]
    detail = run_json(stack, "show", rid)
    count = next(s for s in detail["states"] if s["name"] == "Count")
    assert count["type"] == "Map" and count["status"] == "succeeded"
    assert count["iterations"]["total"] == 3 and count["iterations"]["succeeded"] == 3
    assert count["iterations"]["items"] is None
    expanded = run_json(stack, "show", rid, "--expand")
    items = next(s for s in expanded["states"] if s["name"] == "Count")["iterations"]["items"]
    assert [i["index"] for i in items] == [0, 1, 2]
    assert all([s["name"] for s in i["states"]] == ["CountChunk"] for i in items)
    progress = [e["body"]["step"] for e in detail["events"] if e["type"] == "progress"]
    assert progress[0] == "textstats.split" and progress.count("textstats.count") == 3
    text = run(stack, "show", rid, "--expand").stdout
    assert "3 iterations: 3 succeeded, 0 failed" in text and "CountChunk" in text


def test_history_prints_the_raw_step_functions_events(
    stack: tuple[LocalStack, Path], finished: dict[str, tuple[str, str]]
) -> None:
    events = run_json(stack, "history", finished["ok"][1])
    assert events[0]["type"] == "ExecutionStarted" and events[-1]["type"] == "ExecutionSucceeded"
    assert [e["id"] for e in events] == list(range(1, len(events) + 1))
    table = run(stack, "history", finished["ok"][1])
    assert table.returncode == 0 and "LambdaFunctionScheduled" in table.stdout


def test_watch_follows_a_request_to_its_terminal_state(stack: tuple[LocalStack, Path]) -> None:
    local = stack[0]
    user, rid = uid("watcher"), uid("w")

    async def start() -> None:
        async with await StreamerClient.connect(local.ws_url, local.token(user)) as client:
            await client.submit("echo", {"message": "watched", "steps": 4, "delay_ms": 400}, rid)

    asyncio.run(start())
    out = run(stack, "watch", rid, "--timeout", "60")
    assert out.returncode == 0, out.stderr
    assert "state Echo" in out.stdout and "state NotifyResult" in out.stdout
    assert "SUCCEEDED" in out.stdout.splitlines()[-1]
    seqs = [int(line.split()[1]) for line in out.stdout.splitlines() if line.strip().startswith("seq ")]
    assert seqs == list(range(1, len(seqs) + 1)) and len(seqs) >= 2  # progress events and the result, in order
    assert "result" in next(line for line in out.stdout.splitlines() if line.strip().startswith(f"seq {seqs[-1]:>3}"))
    failing = submit(local, user, "echo", {"message": "x", "fail": True})
    out = run(stack, "watch", failing, "--user", user)
    assert out.returncode == 1 and "FAILED" in out.stdout and "STEP_FAILED" in out.stdout


def test_cancel_reaches_the_connected_client_and_show_marks_the_state_cancelled(
    stack: tuple[LocalStack, Path],
) -> None:
    local = stack[0]
    user = uid("canceller")

    async def go() -> list[dict[str, Any]]:
        async with await StreamerClient.connect(local.ws_url, local.token(user)) as client:
            rid = await client.submit("echo", {"message": "slow", "steps": 30, "delay_ms": 200})
            seen: list[dict[str, Any]] = []
            async for ev in client.events(rid, timeout=60):
                seen.append(ev)
                if ev["type"] == "progress" and len(seen) == 1:  # it runs: cancel it as an operator
                    out = await asyncio.to_thread(run, stack, "cancel", rid)
                    assert out.returncode == 0, out.stderr
                    assert "cancelled" in out.stdout
            return seen

    events = asyncio.run(go())
    terminal = events[-1]
    assert (terminal["type"], terminal["code"]) == ("error", "CANCELLED")
    rid = terminal["request_id"]
    again = run(stack, "cancel", rid)
    assert again.returncode == 1 and "already ended" in again.stderr
    deadline = time.monotonic() + 30
    while True:  # ABORTED once StopExecution returns (streamer.local.moto_atomic); read until it says so
        detail = run_json(stack, "show", rid)
        if detail["execution"]["status"] != "RUNNING" or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert detail["request"]["status"] == "CANCELLED"
    assert detail["execution"]["status"] == "ABORTED"
    assert next(s for s in detail["states"] if s["name"] == "Echo")["status"] == "cancelled"


def test_unknown_and_ambiguous_ids(stack: tuple[LocalStack, Path]) -> None:
    local = stack[0]
    out = run(stack, "show", "no-such-request")
    assert out.returncode == 1 and out.stderr.strip() == "error: no request 'no-such-request'"
    shared = uid("shared")
    first, second = uid("one"), uid("two")
    submit(local, first, "echo", {"message": "1"}, shared)
    submit(local, second, "echo", {"message": "2"}, shared)
    out = run(stack, "show", shared)
    assert out.returncode == 1 and "used by 2 users" in out.stderr and "pass a user" in out.stderr
    detail = run_json(stack, "show", shared, "--user", second)
    assert detail["request"]["payload"] == {"message": "2"}
    arn = detail["execution"]["arn"]
    assert run_json(stack, "show", arn)["request"]["user_id"] == second  # an execution ARN names one
    assert run_json(stack, "show", detail["summary"]["id"])["request"]["user_id"] == second


def test_no_local_stack_running(stack: tuple[LocalStack, Path], tmp_path: Path) -> None:
    missing = tmp_path / "none.json"
    out = run(stack, "list", "--state-file", str(missing))
    assert out.returncode == 1 and "no running `streamer local` found" in out.stderr
    stale = tmp_path / "stale.json"
    state = json.loads(stack[1].read_text())
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    stale.write_text(json.dumps({**state, "pid": proc.pid}))
    out = run(stack, "list", "--state-file", str(stale))
    assert out.returncode == 1 and "no longer running" in out.stderr
