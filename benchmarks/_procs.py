"""What the benchmarks start and watch: ``streamer local``, the bare baselines, and /proc readings of them.

* :func:`streamer_local` — ``python -m streamer.cli local`` on a free port (a subprocess, as a user runs it);
* :func:`bare_echo_server` — the baseline for the gateway: a plain ``websockets`` echo server in its own process
  (``python -m benchmarks.baselines echo``);
* :func:`bare_engine` — the baseline for the whole request path: the same moto server ``streamer local`` ships
  (``python -m streamer.local.moto_server``: Step Functions executing ASL) with the ``echo`` state machine whose
  Lambda Tasks go to a no-op Lambda endpoint that the load generator serves (``benchmarks.load``);
* :class:`Watch` — samples RSS, CPU time, threads and open files of a process tree while a scenario runs (Linux
  ``/proc``; ``proc(5)``), so every figure says which process ran out of what.

Every process started here is stopped by the context manager that started it (SIGINT, then SIGKILL).
"""

from __future__ import annotations

import json
import os
import resource
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
SECRET = "bench-secret-" + "x" * 32
ACCOUNT, REGION = "123456789012", "us-east-1"
_TICKS = os.sysconf("SC_CLK_TCK")
_PAGE = os.sysconf("SC_PAGE_SIZE")


def raise_open_files_limit() -> int:
    """Soft RLIMIT_NOFILE up to the hard limit (10,000 sockets need it); children inherit it. Returns it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        hard = 1 << 20
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _env(**extra: str) -> dict[str, str]:
    env = {**os.environ, "AWS_DEFAULT_REGION": REGION, "AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench"}
    env.update(extra)
    return env


def _stop(proc: subprocess.Popen[str], timeout: float = 30) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def _ready_line(proc: subprocess.Popen[str], prefix: str, what: str, timeout: float = 120) -> str:
    """The first stdout line starting with ``prefix`` (read in a thread so a silent child cannot hang us)."""
    assert proc.stdout is not None
    found: list[str] = []

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            if line.startswith(prefix):
                found.append(line.strip())
                return

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    reader.join(timeout)
    if not found:
        _stop(proc)
        raise RuntimeError(f"{what} did not start within {timeout:.0f} s (exit code {proc.poll()})")
    return found[0]


@dataclass
class Stack:
    """A running ``streamer local``: its endpoints and its process id (the root of the tree to watch)."""

    pid: int
    ws: str
    endpoints: dict[str, str] = field(default_factory=dict)


#: A benchmark is a few users sending a lot: the per-user limits are raised out of its way, not turned off, so
#: their checks (and their DynamoDB calls) still run on every message.
QUOTAS_RAISED = {
    "STREAMER_RATE_LIMIT_PER_MINUTE": str(10**9),
    "STREAMER_MAX_MESSAGES_PER_SECOND_PER_USER": str(10**6),
    "STREAMER_MAX_REQUESTS_IN_FLIGHT_PER_USER": str(10**6),
    "STREAMER_MAX_CONNECTIONS_PER_USER": str(10**6),
}


@contextmanager
def streamer_local(**env: str) -> Iterator[Stack]:
    """``streamer local`` on a free port, per-user limits raised (:data:`QUOTAS_RAISED`)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamer.cli", "local", "--port", str(free_port()), "--log-level", "ERROR"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=_env(STREAMER_JWT_SECRET=SECRET, **QUOTAS_RAISED, **env),
        cwd=ROOT,
    )
    try:
        parts = _ready_line(proc, "streamer local ready ", "streamer local").split()
        fields = dict(p.split("=", 1) for p in parts[4:] if "=" in p)
        yield Stack(pid=proc.pid, ws=parts[3], endpoints=fields)
    finally:
        _stop(proc, 60)


@contextmanager
def bare_echo_server() -> Iterator[Stack]:
    """The gateway's baseline: a bare ``websockets`` echo server (no auth, no routing) in its own process."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "benchmarks.baselines", "echo", "--port", str(free_port())],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=_env(),
        cwd=ROOT,
    )
    try:
        url = _ready_line(proc, "echo ready ", "the bare echo server").split()[2]
        yield Stack(pid=proc.pid, ws=url)
    finally:
        _stop(proc)


@dataclass
class Engine:
    """The bare engine: moto's Step Functions running ``statemachine_arn``; no-op Lambdas on ``lambda_port``."""

    pid: int
    sfn: str
    statemachine_arn: str
    lambda_port: int


@contextmanager
def bare_engine(workflow: str = "echo") -> Iterator[Engine]:
    """moto server (the one ``streamer local`` ships) with ``statemachines/<workflow>.asl.json`` created.

    Its Lambda Tasks are forwarded to ``127.0.0.1:<lambda_port>``, where the load generator serves a no-op
    Lambda (it returns ``{}`` and notes when the final ``NotifyResult`` Task of an execution is called).
    """
    lambda_port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamer.local.moto_server", "--port", "0", "--log-level", "ERROR",
         "--lambda-endpoint", f"http://127.0.0.1:{lambda_port}"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=_env(),
        cwd=ROOT,
    )  # fmt: skip
    try:
        url = _ready_line(proc, "moto server ready ", "the bare moto engine").split()[3]
        import boto3

        sfn = boto3.client(
            "stepfunctions", endpoint_url=url, region_name=REGION, aws_access_key_id="b", aws_secret_access_key="b"
        )
        text = (ROOT / "statemachines" / f"{workflow}.asl.json").read_text()
        fn = f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:"
        text = text.replace("${StepRunnerFunctionArn}", fn + "StepRunnerFunction")
        text = text.replace("${NotifyFunctionArn}", fn + "NotifyFunction")
        arn = sfn.create_state_machine(
            name=f"bare-{workflow}", definition=text, roleArn=f"arn:aws:iam::{ACCOUNT}:role/bench"
        )["stateMachineArn"]
        yield Engine(pid=proc.pid, sfn=url, statemachine_arn=arn, lambda_port=lambda_port)
    finally:
        _stop(proc)


# ------------------------------------------------------------------------------------------- /proc


def _children(pid: int) -> list[int]:
    out: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*/children"):
        try:
            out += [int(c) for c in task.read_text().split()]
        except OSError:
            continue
    return out


def tree(pid: int) -> list[int]:
    """``pid`` and all its descendants."""
    pids, todo = [], [pid]
    while todo:
        p = todo.pop()
        pids.append(p)
        todo += _children(p)
    return pids


def _name(pid: int) -> str:
    """A short name: the module a ``python -m`` child runs, else its executable."""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return str(pid)
    args = [a.decode(errors="replace") for a in argv if a]
    if "-m" in args and args.index("-m") + 1 < len(args):
        i = args.index("-m")
        rest = args[i + 1 : i + 3]
        name = " ".join(r for r in rest if not r.startswith("-"))
        if "--role" in args and args.index("--role") + 1 < len(args):  # streamer local's two moto servers
            name += f" ({args[args.index('--role') + 1]})"
        return name
    return Path(args[0]).name if args else str(pid)


def sample(pid: int) -> dict[str, float] | None:
    """RSS (bytes), CPU seconds, threads and open fds of one process, or ``None`` when it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        statm = Path(f"/proc/{pid}/statm").read_text().split()
        fds = len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return None
    fields_ = stat[stat.rindex(")") + 2 :].split()
    return {
        "rss": int(statm[1]) * _PAGE,
        "cpu": (int(fields_[11]) + int(fields_[12])) / _TICKS,
        "threads": int(fields_[17]),
        "fds": fds,
    }


class Watch:
    """Samples a process tree every ``interval`` seconds in a thread, between ``with`` entry and exit.

    ``summary()`` gives per process: peak RSS, CPU share of one core over the window, peak threads and fds.
    """

    def __init__(self, pid: int, interval: float = 0.25) -> None:
        self.pid, self.interval = pid, interval
        self.names: dict[int, str] = {}
        self.first: dict[int, dict[str, float]] = {}
        self.last: dict[int, dict[str, float]] = {}
        self.peak: dict[int, dict[str, float]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.t0 = self.t1 = 0.0

    def _tick(self) -> None:
        for p in tree(self.pid):
            s = sample(p)
            if s is None:
                continue
            self.names.setdefault(p, _name(p))
            self.first.setdefault(p, s)
            self.last[p] = s
            pk = self.peak.setdefault(p, dict(s))
            for k in ("rss", "threads", "fds"):
                pk[k] = max(pk[k], s[k])

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self._tick()

    def __enter__(self) -> Watch:
        self._tick()
        self.t0 = time.monotonic()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._tick()
        self.t1 = time.monotonic()

    def summary(self) -> dict[str, dict[str, float]]:
        span = max(self.t1 - self.t0, 1e-9)
        out: dict[str, dict[str, float]] = {}
        for p, pk in self.peak.items():
            name = self.names[p]
            while name in out:
                name += "'"
            out[name] = {
                "peak_rss_mib": round(pk["rss"] / 2**20, 1),
                "cpu_percent_of_one_core": round(100 * (self.last[p]["cpu"] - self.first[p]["cpu"]) / span, 1),
                "peak_threads": pk["threads"],
                "peak_fds": pk["fds"],
            }
        return out

    def total_rss_mib(self) -> float:
        return round(sum(v["peak_rss_mib"] for v in self.summary().values()), 1)

    def busiest(self) -> tuple[str, float]:
        """The process that used the most CPU in the window, and its share of one core (percent)."""
        s = self.summary()
        name = max(s, key=lambda n: s[n]["cpu_percent_of_one_core"]) if s else "-"
        return name, s[name]["cpu_percent_of_one_core"] if s else 0.0


def run_load(scenario: str, limit: float, **args: Any) -> dict[str, Any]:
    """Run one load scenario in a separate process (``python -m benchmarks.load``), at most ``limit`` seconds,
    and return its JSON."""
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.load", scenario, json.dumps(args)],
        capture_output=True,
        text=True,
        timeout=limit,
        env=_env(),
        cwd=ROOT,
    )
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"load {scenario} failed ({proc.returncode}): {proc.stderr.strip()[-2000:]}")
    result: dict[str, Any] = json.loads(lines[-1])
    return result
