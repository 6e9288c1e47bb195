"""``streamer demo`` (``make run``): start the local stack, send requests through it with live progress, stop."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

__all__ = ["run_demo"]


def _start_local(port: int) -> tuple[subprocess.Popen[str], str]:
    from streamer.local.stack import READY_PREFIX

    cmd = [sys.executable, "-m", "streamer.cli", "local", "--port", str(port), "--log-level", "WARNING"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=None, text=True, bufsize=1)
    deadline = time.monotonic() + 60
    assert proc.stdout is not None
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        print(line, end="", flush=True)
        if line.startswith(READY_PREFIX):
            return proc, line[len(READY_PREFIX) :].split()[0]
    proc.kill()
    raise RuntimeError(f"`streamer local` did not become ready (exit code {proc.poll()})")


def _submit(url: str, workflow: str, payload: str, sub: str) -> int:
    from streamer.cli import main

    shown = payload if len(payload) <= 100 else payload[:90] + f"…({len(payload)} chars)"
    print(f"\n$ streamer submit {workflow} --payload '{shown}'", flush=True)
    return main(["submit", workflow, "--payload", payload, "--url", url, "--sub", sub])


def run_demo(port: int = 0) -> int:
    if port == 0:
        import socket

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
    proc, url = _start_local(port)
    try:
        rc = _submit(url, "echo", '{"message": "hello from streamer", "steps": 5, "delay_ms": 400}', "demo-user")
        text = "It was the best of times, it was the worst of times, it was the age of wisdom. " * 50
        rc |= _submit(url, "textstats", json.dumps({"text": text.strip(), "top": 5}), "demo-user")
        rc |= _submit(url, "echo", '{"message": "this one fails", "fail": true}', "demo-user") ^ 1
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
