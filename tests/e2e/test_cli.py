"""The `streamer` command as a user runs it: token, submit (--json and the progress bar), errors."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from typing import Any

import jwt

STREAMER = [sys.executable, "-m", "streamer.cli"]


def run(*args: str, env: dict[str, str] | None = None, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*STREAMER, *args], capture_output=True, text=True, timeout=timeout, env={**os.environ, **(env or {})}
    )


def test_token_is_a_valid_local_jwt(local_stack: Any) -> None:
    out = run("token", "--sub", "cli-user", "--ttl", "120", env={"STREAMER_JWT_SECRET": local_stack.secret})
    assert out.returncode == 0, out.stderr
    claims = jwt.decode(out.stdout.strip(), local_stack.secret, algorithms=["HS256"])
    assert claims["sub"] == "cli-user" and claims["exp"] - claims["iat"] == 120


def test_submit_json_prints_every_event_and_exits_zero(local_stack: Any) -> None:
    out = run(
        "submit",
        "echo",
        "--payload",
        '{"message": "cli", "steps": 2, "delay_ms": 150}',
        "--json",
        "--url",
        local_stack.ws_url,
        "--token",
        local_stack.token(local_stack.unique_user("cli")),
    )
    assert out.returncode == 0, out.stderr
    events = [json.loads(line) for line in out.stdout.splitlines()]
    assert [e["type"] for e in events] == ["progress", "progress", "result"]
    assert events[-1]["output"] == {"message": "cli"}


def test_submit_shows_a_progress_bar_and_the_result(local_stack: Any) -> None:
    out = run(
        "submit",
        "echo",
        "--payload",
        '{"message": "bar", "steps": 2}',
        "--url",
        local_stack.ws_url,
        "--token",
        local_stack.token(local_stack.unique_user("cli")),
    )
    assert out.returncode == 0, out.stderr
    assert "accepted" in out.stdout and '"message": "bar"' in out.stdout


def test_submit_failures_exit_non_zero_with_the_reason(local_stack: Any) -> None:
    token = local_stack.token(local_stack.unique_user("cli"))
    failed = run(
        "submit", "echo", "--payload", '{"message": "x", "fail": true}', "--url", local_stack.ws_url, "--token", token
    )
    assert failed.returncode == 1 and "STEP_FAILED" in failed.stdout
    unknown = run("submit", "nope", "--url", local_stack.ws_url, "--token", token)
    assert unknown.returncode == 1 and "UNKNOWN_WORKFLOW" in unknown.stderr
    bad_json = run("submit", "echo", "--payload", "{oops", "--url", local_stack.ws_url, "--token", token)
    assert bad_json.returncode == 2 and "--payload is not JSON" in bad_json.stderr
    refused = run("submit", "echo", "--url", local_stack.ws_url, "--token", "not-a-jwt")
    assert refused.returncode == 1 and "401" in refused.stderr
    nobody = run("submit", "echo", "--url", "ws://127.0.0.1:9/", "--token", token)
    assert nobody.returncode == 1 and "cannot connect" in nobody.stderr


def test_demo_is_what_make_run_shows() -> None:
    out = run("demo", timeout=180)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.count("streamer local ready ") == 1
    assert "step 5 of 5" in out.stdout and '"message": "hello from streamer"' in out.stdout  # live progress, result
    assert '"words": 900' in out.stdout  # textstats
    assert "FAILED STEP_FAILED: echo failed because the payload asked it to (fail: true)" in out.stdout


def test_demo_says_why_the_stack_did_not_start() -> None:
    with socket.socket() as taken:  # the demo's port is in use: `streamer local` exits at once with the reason
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        out = run("demo", "--port", str(port), timeout=120)
    assert out.returncode == 1
    assert out.stderr.splitlines()[-1] == "error: `streamer local` did not become ready (exit code 1)"
    assert "WebSocket gateway" in out.stderr  # the stack's own one-line reason, passed through


def test_submit_gives_up_after_the_timeout_and_prints_refusals_as_json(local_stack: Any) -> None:
    token = local_stack.token(local_stack.unique_user("cli"))
    slow = run(
        "submit", "echo", "--payload", '{"message": "slow", "steps": 5, "delay_ms": 1000}', "--timeout", "0.5",
        "--json", "--url", local_stack.ws_url, "--token", token,
    )  # fmt: skip
    assert slow.returncode == 1 and slow.stderr == "error: no terminal event within 0.5s\n"
    refused = run("submit", "nope", "--json", "--url", local_stack.ws_url, "--token", token)
    assert refused.returncode == 1 and refused.stdout == ""
    frame = json.loads(refused.stderr)
    assert frame["type"] == "error" and frame["code"] == "UNKNOWN_WORKFLOW"
