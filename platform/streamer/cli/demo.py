"""``streamer demo`` (``make run``): start ``streamer local``, send three requests through it with live
progress (echo, textstats, and an echo that fails on purpose), stop it.

The stack runs as a child process (``python -m streamer.cli local``), exactly as a user would start it; the
requests go through :func:`streamer.cli.submit.run_submit`, the plain function behind ``streamer submit``.
Exit code 0 when the first two succeeded and the third failed as asked.
"""

from __future__ import annotations

import argparse
import json
import signal
import socket
import subprocess
import sys
import time

from streamer.cli.submit import run_submit
from streamer.errors import StreamerError

__all__ = ["DESCRIPTION", "HELP", "arguments", "run_demo"]

HELP = "start `streamer local`, send three requests through it, stop it (what `make run` does)"
DESCRIPTION = """Start `streamer local`, send three requests through it with live progress (echo, textstats, and
an echo that fails on purpose), stop it. Exit code 0 when the first two succeeded and the third failed as asked."""

#: How long `streamer local` may take to print its readiness line.
_START_TIMEOUT = 60
_DEMO_USER = "demo-user"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _start_local(port: int) -> tuple[subprocess.Popen[str], str]:
    from streamer.local.stack import READY_PREFIX

    cmd = [sys.executable, "-m", "streamer.cli", "local", "--port", str(port), "--log-level", "WARNING"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=None, text=True, bufsize=1)
    deadline = time.monotonic() + _START_TIMEOUT
    assert proc.stdout is not None
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        print(line, end="", flush=True)
        if line.startswith(READY_PREFIX):
            return proc, line[len(READY_PREFIX) :].split()[0]
    proc.kill()
    proc.wait()
    raise StreamerError(f"`streamer local` did not become ready (exit code {proc.returncode})")


def _submit(url: str, token: str, workflow: str, payload: str) -> int:
    shown = payload if len(payload) <= 100 else payload[:90] + f"…({len(payload)} chars)"
    print(f"\n$ streamer submit {workflow} --payload '{shown}'", flush=True)
    return run_submit(url, token, workflow, payload)


def run_demo(port: int = 0) -> int:
    """Run the demo against a fresh ``streamer local`` on ``port`` (0: a free one); the exit code.

    Raises :class:`~streamer.errors.StreamerError` when the stack does not start."""
    from streamer.auth import mint_token
    from streamer.config import dev_jwt_secret

    proc, url = _start_local(port or _free_port())
    token = mint_token(dev_jwt_secret(), _DEMO_USER)
    try:
        rc = _submit(url, token, "echo", '{"message": "hello from streamer", "steps": 5, "delay_ms": 400}')
        text = "It was the best of times, it was the worst of times, it was the age of wisdom. " * 50
        rc |= _submit(url, token, "textstats", json.dumps({"text": text.strip(), "top": 5}))
        rc |= _submit(url, token, "echo", '{"message": "this one fails", "fail": true}') ^ 1
        print("\nThe last request failed on purpose (fail: true) and got a typed STEP_FAILED terminal event.")
        print("Run `.venv/bin/streamer local` to keep the stack running; see README.md.")
        return rc
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
        # Let the stack's shutdown lines reach the terminal.
        if proc.stdout is not None:
            sys.stdout.write(proc.stdout.read())


def _run(args: argparse.Namespace) -> int:
    try:
        return run_demo(port=args.port)
    except StreamerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


def arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--port", type=int, default=0, help="WebSocket port of the stack (default 0: a free one)")
    p.set_defaults(func=_run)
