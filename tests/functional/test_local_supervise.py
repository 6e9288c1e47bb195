"""The supervisor of ``streamer local`` (``streamer.local.supervise``) with real child processes.

The children here are small Python programs that speak the children's contract: they get ``--fd N
--watch-stdin``, print a ready line, and exit when told to by the test (or when stdin closes).
"""

from __future__ import annotations

import asyncio
import os
import sys
from typing import Any

import pytest

from streamer.local import StartupError
from streamer.local.supervise import MAX_RESTARTS, Child, Supervisor, child_base_env, listen, url_of

#: A child that is ready at once, then exits with $EXIT_CODE after $LIFETIME seconds (or stays until stdin
#: closes when $LIFETIME is empty), saying why on stderr.
PROGRAM = """
import os, signal, sys, time
signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # as the real children: SIGTERM is a clean stop
if os.environ.get("NEVER_READY"):
    print("cannot start: broken configuration", file=sys.stderr, flush=True)
    sys.exit(2)
print("child ready", flush=True)
lifetime = os.environ.get("LIFETIME")
if lifetime:
    time.sleep(float(lifetime))
    print("boom: the child crashed", file=sys.stderr, flush=True)
    sys.exit(int(os.environ.get("EXIT_CODE", "3")))
while os.read(0, 4096):
    pass
"""


def _child(name: str, **env: str) -> Child:
    sock = listen("127.0.0.1", 0, name)
    return Child(name, [sys.executable, "-c", PROGRAM], {**os.environ, **env}, sock, "child ready")


async def _stop(supervisor: Supervisor) -> None:
    await supervisor.stop_all(())
    for child in supervisor.children.values():
        child.sock.close()


async def _watch(supervisor: Supervisor, timeout: float = 60) -> str | None:
    return await asyncio.wait_for(supervisor.watch(asyncio.Event()), timeout)


def _run(coro: Any) -> Any:
    return asyncio.run(coro)


def test_a_lost_child_that_cannot_be_restarted_stops_the_stack_with_its_last_words() -> None:
    async def scenario() -> str | None:
        supervisor = Supervisor()
        supervisor.add(_child("moto", LIFETIME="0.2"), restart=False)
        await supervisor.start_all()
        try:
            return await _watch(supervisor)
        finally:
            await _stop(supervisor)

    assert _run(scenario()) == "moto server exited with code 3: boom: the child crashed"


def test_a_restartable_child_is_restarted_until_it_dies_too_often() -> None:
    async def scenario() -> tuple[str | None, list[int | None], list[str | None]]:
        supervisor = Supervisor()
        child = _child("lambda", LIFETIME="0.05", EXIT_CODE="4")
        pids: list[int | None] = []
        seen: list[str | None] = []  # what each process is told: how many times it was restarted
        original_start = child.start

        def start() -> None:
            original_start()
            pids.append(child.proc.pid if child.proc else None)
            seen.append(child.env.get("STREAMER_LOCAL_RESTARTS"))

        child.start = start  # type: ignore[method-assign]  # to count the real starts
        supervisor.add(child, restart=True)
        await supervisor.start_all()
        try:
            return await _watch(supervisor), pids, seen
        finally:
            await _stop(supervisor)

    reason, pids, seen = _run(scenario())
    assert reason == (
        f"Lambda endpoint died {MAX_RESTARTS + 1} times in 60s (last exit code 4: boom: the child crashed)"
    )
    assert len(pids) == MAX_RESTARTS + 1 and len(set(pids)) == len(pids)  # a new process each time
    assert seen == [os.environ.get("STREAMER_LOCAL_RESTARTS"), *(str(n) for n in range(1, MAX_RESTARTS + 1))]


def test_a_child_that_dies_before_it_is_ready_is_a_start_up_reason() -> None:
    async def scenario() -> None:
        supervisor = Supervisor()
        supervisor.add(_child("lambda", NEVER_READY="1"), restart=True)
        try:
            await supervisor.start_all()
        finally:
            await _stop(supervisor)

    with pytest.raises(StartupError, match=r"^lambda exited with code 2: cannot start: broken configuration$"):
        _run(scenario())


def test_a_stopped_child_exits_cleanly_and_stop_reports_its_code() -> None:
    child = _child("lambda")
    try:
        child.start()
        child.wait_ready(30)
        assert child.alive()
        assert child.stop() == 0
        assert not child.alive() and child.stopping
    finally:
        child.sock.close()


def test_a_taken_port_is_a_start_up_reason() -> None:
    sock = listen("127.0.0.1", 0, "first")
    try:
        port = sock.getsockname()[1]
        with pytest.raises(StartupError, match=f"cannot listen on 127.0.0.1:{port} for the gateway: address already"):
            listen("127.0.0.1", port, "gateway")
        assert url_of(sock) == f"http://127.0.0.1:{port}" and url_of(sock, "ws").startswith("ws://")
    finally:
        sock.close()


def test_children_never_see_the_developers_aws_profile(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_PROFILE", "production")
    monkeypatch.setenv("AWS_ENDPOINT_URL_DYNAMODB", "https://dynamodb.eu-west-1.amazonaws.com")
    env = child_base_env()
    assert "AWS_PROFILE" not in env and "AWS_ENDPOINT_URL_DYNAMODB" not in env
    assert env["AWS_CONFIG_FILE"] == os.devnull and env["AWS_SHARED_CREDENTIALS_FILE"] == os.devnull
