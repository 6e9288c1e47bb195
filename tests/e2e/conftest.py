"""End-to-end tier: ``streamer local`` runs as a real subprocess; tests talk to it over real sockets.

Fixtures:

* ``local_stack`` (session): one ``streamer local`` on free ports with shortened WebSocket limits
  (idle ``E2E_IDLE_TIMEOUT`` s, maximum duration ``E2E_MAX_DURATION`` s). It yields a :class:`LocalStack`
  with ``ws_url``, ``http_url``, ``moto_url``, ``lambda_url``, ``secret`` and ``token(sub)``, plus boto3
  client factories pointed at the local endpoints. Torn down with SIGINT; the process must exit 0.
* ``start_local`` (function): a factory for extra instances (other flags, signals); every instance it
  started is stopped at the end of the test.

Every test in this directory is marked ``e2e``.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config

from streamer.auth import mint_token
from streamer.local.stack import READY_PREFIX

#: Generous for a 2-core machine: the stack imports moto, boto3 and every handler in two processes.
START_TIMEOUT = 90.0
STOP_TIMEOUT = 60.0
E2E_IDLE_TIMEOUT = 60.0
E2E_MAX_DURATION = 300.0
REGION = "us-east-1"
SECRET = "e2e-secret-" + "x" * 32
ROOT = Path(__file__).resolve().parents[2]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.e2e)


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def children_of(pid: int) -> list[int]:
    """Direct children of ``pid`` (Linux ``/proc``)."""
    out: list[int] = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # pid (comm) state ppid ...; comm may contain spaces and parentheses.
        fields = stat[stat.rfind(")") + 2 :].split()
        if len(fields) > 1 and int(fields[1]) == pid:
            out.append(int(entry.name))
    return out


@dataclass
class LocalStack:
    """One running ``streamer local`` process and how to reach it."""

    proc: subprocess.Popen[str]
    ws_url: str
    http_url: str
    moto_url: str
    lambda_url: str
    sfn_url: str
    secret: str
    stderr_path: Path
    stdout_lines: list[str] = field(default_factory=list)
    _pump: threading.Thread | None = None

    def token(self, sub: str, **kwargs: Any) -> str:
        return mint_token(self.secret, sub, **kwargs)

    def unique_user(self, prefix: str = "e2e") -> str:
        return f"{prefix}-{uuid.uuid4().hex[:12]}"

    def client(self, service: str, endpoint_url: str | None = None, **config: Any) -> Any:
        endpoints = {
            "apigatewaymanagementapi": self.http_url,
            "lambda": self.lambda_url,
            "stepfunctions": self.sfn_url,
        }
        return boto3.client(
            service,
            endpoint_url=endpoint_url or endpoints.get(service, self.moto_url),
            region_name=REGION,
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
            config=Config(retries={"max_attempts": 0}, **config),
        )

    def children(self) -> list[int]:
        return children_of(self.proc.pid)

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def connection_ids(self, user_id: str, timeout: float = 20.0) -> list[str]:
        """The live connection ids of ``user_id`` (from the connections table)."""
        ddb = self.client("dynamodb")
        deadline = time.monotonic() + timeout
        try:
            while True:
                items = ddb.scan(
                    TableName="streamer-connections",
                    FilterExpression="user_id = :u",
                    ExpressionAttributeValues={":u": {"S": user_id}},
                )["Items"]
                if items or time.monotonic() > deadline:
                    return [i["connection_id"]["S"] for i in items]
                time.sleep(0.1)
        finally:
            ddb.close()

    def stop(self, sig: int = signal.SIGINT, timeout: float = STOP_TIMEOUT) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            for pid in self.children():
                os.kill(pid, signal.SIGKILL)
            self.proc.kill()
            self.proc.wait(10)
            raise AssertionError(f"streamer local did not stop within {timeout}s:\n{self.stderr()[-4000:]}")
        if self._pump is not None:
            self._pump.join(10)
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        return code


def launch(
    tmp_dir: Path,
    *args: str,
    env: dict[str, str] | None = None,
    wait: bool = True,
    timeout: float = START_TIMEOUT,
) -> LocalStack:
    """Start ``python -m streamer.cli local ARGS`` and (by default) wait for its readiness line."""
    stderr_path = tmp_dir / f"streamer-local-{uuid.uuid4().hex[:8]}.stderr"
    full_env = {**os.environ, "STREAMER_JWT_SECRET": SECRET, "PYTHONUNBUFFERED": "1", **(env or {})}
    with stderr_path.open("w") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "streamer.cli", "local", *args],
            stdout=subprocess.PIPE,
            stderr=err,
            stdin=subprocess.DEVNULL,
            text=True,
            env=full_env,
            cwd=ROOT,
        )
    stack = LocalStack(proc, "", "", "", "", "", full_env["STREAMER_JWT_SECRET"], stderr_path)
    if not wait:
        return stack
    ready = threading.Event()

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            stack.stdout_lines.append(line.rstrip("\n"))
            if line.startswith(READY_PREFIX):
                fields = dict(part.split("=", 1) for part in line[len(READY_PREFIX) :].split()[1:] if "=" in part)
                stack.ws_url = line[len(READY_PREFIX) :].split()[0]
                stack.http_url = fields["http"]
                stack.lambda_url = fields["lambda"]
                stack.moto_url = fields["moto"]
                stack.sfn_url = fields["sfn"]
                ready.set()

    stack._pump = threading.Thread(target=pump, daemon=True)
    stack._pump.start()
    deadline = time.monotonic() + timeout
    while not ready.wait(0.1):
        if proc.poll() is not None or time.monotonic() > deadline:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
            stack._pump.join(5)
            if proc.stdout is not None:
                proc.stdout.close()
            raise AssertionError(f"streamer local not ready (exit code {proc.returncode}):\n{stack.stderr()[-4000:]}")
    return stack


@pytest.fixture(scope="session")
def local_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    tmp = tmp_path_factory.mktemp("local-stack")
    stack = launch(
        tmp,
        "--port",
        str(free_port()),
        "--idle-timeout",
        str(E2E_IDLE_TIMEOUT),
        "--max-connection-duration",
        str(E2E_MAX_DURATION),
        "--on-failure-file",
        str(tmp / "stream-failures.jsonl"),
    )
    try:
        yield stack
    finally:
        code = stack.stop(signal.SIGINT)
    assert code == 0, f"streamer local exited with {code}:\n{stack.stderr()[-4000:]}"


@pytest.fixture
def start_local(tmp_path: Path) -> Iterator[Callable[..., LocalStack]]:
    started: list[LocalStack] = []

    def start(*args: str, **kwargs: Any) -> LocalStack:
        stack = launch(tmp_path, *args, **kwargs)
        started.append(stack)
        return stack

    yield start
    for stack in started:
        if stack.proc.poll() is None:
            stack.stop(signal.SIGINT)
        elif stack.proc.stdout is not None:
            stack.proc.stdout.close()


@pytest.fixture(scope="session")
def short_limits_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    """A second stack whose idle timeout (3 s) and maximum connection duration (8 s) are short."""
    tmp = tmp_path_factory.mktemp("short-limits")
    stack = launch(tmp, "--port", str(free_port()), "--idle-timeout", "3", "--max-connection-duration", "8")
    try:
        yield stack
    finally:
        code = stack.stop(signal.SIGTERM)
    assert code == 0, f"streamer local exited with {code}:\n{stack.stderr()[-4000:]}"
