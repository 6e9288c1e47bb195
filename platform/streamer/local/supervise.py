"""Child processes of ``streamer local``: sockets the supervisor owns, readiness, restarts, stopping.

The supervisor binds every listening socket itself (:func:`listen`) and hands each child its socket's file
descriptor, so a taken port is reported before anything starts (:class:`~streamer.local.StartupError`), a
restarted child keeps its port and the requests queued meanwhile wait in the socket's backlog, and no port
outlives the command. A :class:`Child` is ready when it prints its ready line on stdout; its stderr is passed
through (and the last lines kept for the reason when it dies). Children run in their own session, so Ctrl-C
reaches only the supervisor, which stops them in order; each child also exits when its stdin closes
(``--watch-stdin``), so even a SIGKILLed supervisor leaves no child behind.

:class:`Supervisor` watches the children: a child with ``restart=True`` (the Lambda endpoint) is restarted
when it dies, at most :data:`MAX_RESTARTS` times in :data:`RESTART_WINDOW` seconds; the death of any other
child (moto: its data is gone) stops everything with a reason.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from typing import IO

from streamer.config import Env
from streamer.local import StartupError

__all__ = [
    "CHILD_READY_TIMEOUT",
    "MAX_RESTARTS",
    "RESTART_WINDOW",
    "Child",
    "Supervisor",
    "child_base_env",
    "listen",
    "url_of",
]

log = logging.getLogger("streamer.local")

CHILD_READY_TIMEOUT = 90.0
#: Restarts of a restartable child allowed within RESTART_WINDOW seconds before giving up.
MAX_RESTARTS = 5
RESTART_WINDOW = 60.0


def child_base_env() -> dict[str, str]:
    """The parent's environment without AWS settings that could send a child to a real account."""
    drop = ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE")
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_ENDPOINT_URL") and k not in drop}
    env["AWS_CONFIG_FILE"] = os.devnull
    env["AWS_SHARED_CREDENTIALS_FILE"] = os.devnull
    env["PYTHONUNBUFFERED"] = "1"
    return env


def listen(host: str, port: int, what: str) -> socket.socket:
    try:
        return socket.create_server((host, port), backlog=1024)
    except OSError as exc:
        reason = "address already in use" if exc.errno == errno.EADDRINUSE else (exc.strerror or str(exc))
        raise StartupError(f"cannot listen on {host}:{port} for the {what}: {reason}") from exc


def url_of(sock: socket.socket, scheme: str = "http") -> str:
    host, port = sock.getsockname()[:2]
    return f"{scheme}://[{host}]:{port}" if ":" in host else f"{scheme}://{host}:{port}"


class Child:
    """One supervised subprocess serving on a socket the supervisor owns."""

    def __init__(self, name: str, argv: list[str], env: Mapping[str, str], sock: socket.socket, ready: str) -> None:
        self.name = name
        self.argv = argv
        self.env = dict(env)
        self.sock = sock
        self.ready_prefix = ready
        self.proc: subprocess.Popen[bytes] | None = None
        self._ready = threading.Event()
        self._stderr_tail: list[str] = []
        self._threads: list[threading.Thread] = []
        self.stopping = False
        self.restarts = 0  # how many times the supervisor restarted it; the child sees it (Env.LOCAL_RESTARTS)

    def start(self) -> None:
        self._ready.clear()
        self._stderr_tail = []
        fd = self.sock.fileno()
        self.proc = subprocess.Popen(
            [*self.argv, "--fd", str(fd), "--watch-stdin"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=self.env,
            pass_fds=(fd,),
            start_new_session=True,  # Ctrl-C reaches only the supervisor, which stops children in order
        )
        assert self.proc.stdout is not None and self.proc.stderr is not None
        self._threads = [
            threading.Thread(target=self._pump_stdout, args=(self.proc.stdout,), daemon=True),
            threading.Thread(target=self._pump_stderr, args=(self.proc.stderr,), daemon=True),
        ]
        for t in self._threads:
            t.start()

    def _pump_stdout(self, stream: IO[bytes]) -> None:
        out = logging.getLogger(f"streamer.local.{self.name}.stdout")
        for raw in iter(stream.readline, b""):
            line = raw.decode(errors="replace").rstrip("\n")
            if not self._ready.is_set() and line.startswith(self.ready_prefix):
                self._ready.set()
                continue
            out.info("%s", line)
        stream.close()

    def _pump_stderr(self, stream: IO[bytes]) -> None:
        for raw in iter(stream.readline, b""):
            line = raw.decode(errors="replace").rstrip("\n")
            self._stderr_tail = [*self._stderr_tail[-19:], line]
            sys.stderr.write(line + "\n")
            sys.stderr.flush()
        stream.close()

    def wait_ready(self, timeout: float) -> None:
        """Block until the child printed its ready line; :class:`StartupError` if it died or hung."""
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        while not self._ready.wait(0.05):
            code = self.proc.poll()
            if code is not None:
                for t in self._threads:
                    t.join(2)
                raise StartupError(f"{self.name} exited with code {code}: {self.last_error()}")
            if time.monotonic() > deadline:
                raise StartupError(f"{self.name} not ready after {timeout:.0f}s")

    def last_error(self) -> str:
        lines = [ln.strip() for ln in self._stderr_tail if ln.strip()]
        for ln in reversed(lines):
            if not ln.startswith(("File ", "Traceback", "^", "~")):
                return ln[:300]
        return "no output"

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout: float = 10.0) -> int | None:
        """SIGTERM, then SIGKILL after ``timeout``; returns the exit code."""
        self.stopping = True
        proc = self.proc
        if proc is None:
            return None
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                log.warning("%s did not stop within %.0fs; killing it", self.name, timeout)
                proc.kill()
                proc.wait(5)
        if proc.stdin is not None:
            with contextlib.suppress(OSError):
                proc.stdin.close()
        for t in self._threads:
            t.join(5)
        return proc.returncode


class Supervisor:
    """The children of one stack, by name; :meth:`watch` until stopped or a child is lost for good."""

    def __init__(self) -> None:
        self.children: dict[str, Child] = {}
        self._restartable: set[str] = set()
        self._restarts: list[float] = []

    def add(self, child: Child, *, restart: bool) -> None:
        self.children[child.name] = child
        if restart:
            self._restartable.add(child.name)

    async def start_all(self) -> None:
        """Start every child and wait until all are ready (:class:`StartupError` otherwise)."""
        for child in self.children.values():
            child.start()
        await asyncio.gather(*(asyncio.to_thread(c.wait_ready, CHILD_READY_TIMEOUT) for c in self.children.values()))

    async def watch(self, stop: asyncio.Event) -> str | None:
        """Until ``stop`` is set: restart restartable children that die. Returns the reason to stop the
        stack when a child is lost for good (``None`` when stopped)."""
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=0.5)
            if stop.is_set():
                return None
            for name, child in self.children.items():
                if child.alive() or child.stopping:
                    continue
                code = child.proc.poll() if child.proc else None
                if name not in self._restartable:
                    return f"{self._what(name)} exited with code {code}: {child.last_error()}"
                reason = await self._restart(child, code)
                if reason is not None:
                    return reason
        return None

    async def _restart(self, child: Child, code: int | None) -> str | None:
        now = time.monotonic()
        self._restarts = [t for t in self._restarts if now - t < RESTART_WINDOW] + [now]
        if len(self._restarts) > MAX_RESTARTS:
            return (
                f"{self._what(child.name)} died {len(self._restarts)} times in {RESTART_WINDOW:.0f}s "
                f"(last exit code {code}: {child.last_error()})"
            )
        log.error("%s exited with code %s (%s); restarting it", self._what(child.name), code, child.last_error())
        await asyncio.to_thread(child.stop, 1.0)
        child.stopping = False
        child.restarts += 1
        child.env[Env.LOCAL_RESTARTS] = str(child.restarts)
        child.start()
        try:
            await asyncio.to_thread(child.wait_ready, CHILD_READY_TIMEOUT)
        except StartupError as exc:
            log.error("%s restart failed: %s", self._what(child.name), exc)
            return None
        log.info("%s restarted", self._what(child.name))
        return None

    @staticmethod
    def _what(name: str) -> str:
        return {"lambda": "Lambda endpoint", "moto": "moto server", "moto-sfn": "moto server (Step Functions)"}.get(
            name, name
        )

    def kill_all(self) -> None:
        """A second Ctrl-C: no more waiting."""
        for child in self.children.values():
            if child.proc is not None and child.proc.poll() is None:
                child.proc.kill()

    async def stop_all(self, order: tuple[str, ...]) -> None:
        """Stop the children in ``order`` (then any other), each SIGTERM then SIGKILL."""
        names = [n for n in order if n in self.children] + [n for n in self.children if n not in order]
        for name in names:
            code = await asyncio.to_thread(self.children[name].stop)
            log.info("%s stopped (exit code %s)", name, code)
