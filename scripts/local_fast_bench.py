"""A short before/after check of ``streamer local``'s fast path (docs/performance.md, "local stack").

``.venv/bin/python scripts/local_fast_bench.py [--duration S] [--conns N] [--echo N] [--before DIR]``

In one run, on the same machine: a bare ``websockets`` echo server and the bare engine (moto's Step Functions
running ``echo`` with no-op Lambdas), then ``streamer local`` with the route functions over HTTP
(``STREAMER_LOCAL_INVOKE=http``) and in process (the default) — and, with ``--before DIR``, the ``platform``
directory of another checkout (``git worktree add DIR <commit>``) run the same way, first.
Per-user quotas are raised (``benchmarks._procs``: one benchmark user sends far more than 20 messages a
second). Each gets a
closed-loop ping over ``--conns`` authenticated connections for ``--duration`` seconds and, for the stacks, a
2,000-ping burst over 10 connections (lost replies, error frames, the most threads any process of the stack had);
the CPU each process of a stack spent per ping (``/proc/<pid>/stat``)
and ``--echo`` echo requests from 20 connections. Prints one JSON line per measurement and a table. It asserts
nothing: speed depends on the machine and what else runs on it. The load runs in its own process
(``benchmarks.load``); the stacks are started by ``benchmarks._procs``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._procs import SECRET, bare_echo_server, bare_engine, run_load, streamer_local, tree


def _threads(pid: int) -> int:
    """Threads of the process tree rooted at ``pid`` (the busiest process's count)."""
    most = 0
    for p in tree(pid):
        try:
            most = max(most, len(os.listdir(f"/proc/{p}/task")))
        except OSError:
            continue
    return most


def _role(pid: int) -> str:
    try:
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return "gone"
    return "lambda" if b"lambda_endpoint" in cmd else "moto" if b"moto_server" in cmd else "gateway"


def _cpu_seconds(pids: list[int]) -> dict[int, float]:
    out: dict[int, float] = {}
    for pid in pids:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2 :].split()
        out[pid] = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return out


class _PeakThreads:
    def __init__(self, pid: int) -> None:
        self.pid, self.peak, self._stop = pid, 0, threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.05):
            self.peak = max(self.peak, _threads(self.pid))

    def __enter__(self) -> _PeakThreads:
        self._t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._t.join()


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--conns", type=int, default=20)
    parser.add_argument("--echo", type=int, default=40, help="echo requests per stack (0: none)")
    parser.add_argument("--before", default=None, help="a checkout whose platform/ is measured as 'before'")
    args = parser.parse_args()
    rows: list[tuple[str, dict[str, Any]]] = []
    ping = {"conns": args.conns, "duration": args.duration, "secret": SECRET, "reply_timeout": 15}

    with bare_echo_server() as bare:
        rows.append(("bare echo server: ping", run_load("ping", 120, url=bare.ws, **ping)))
    if args.echo:
        with bare_engine() as e:
            engine = {"sfn": e.sfn, "statemachine_arn": e.statemachine_arn, "lambda_port": e.lambda_port}
            rows.append(("bare engine: echo", run_load("engine", 300, concurrency=20, total=args.echo, **engine)))
    runs: list[tuple[str, dict[str, str]]] = [("http", {}), ("inprocess", {})]
    if args.before:
        before = str(Path(args.before).resolve() / "platform")
        runs.insert(0, ("before", {"PYTHONPATH": before}))
    for mode, extra in runs:
        env = {"STREAMER_LOCAL_INVOKE": mode, **extra}  # quotas raised by benchmarks._procs
        with streamer_local(**env) as stack:
            pids = tree(stack.pid)
            cpu_before = _cpu_seconds(pids)
            result = run_load("ping", 120, url=stack.ws, auth=True, **ping)
            cpu_after = _cpu_seconds(pids)
            done = max(1, int(result.get("completed", 0)))
            result["cpu_ms_per_ping"] = {
                _role(p): round((cpu_after[p] - cpu_before[p]) / done * 1000, 2)
                for p in cpu_after
                if p in cpu_before and cpu_after[p] - cpu_before[p] > 0.05
            }
            rows.append((f"{mode}: ping", result))
            with _PeakThreads(stack.pid) as peak:
                burst = run_load(
                    "ping", 120, url=stack.ws, auth=True, conns=10, burst=2000, secret=SECRET, reply_timeout=30
                )
            rows.append((f"{mode}: burst 2000", {**burst, "peak_threads": peak.peak}))
            if args.echo:
                per = max(1, args.echo // 20)
                rows.append(
                    (f"{mode}: echo", run_load("echo", 300, url=stack.ws, conns=20, per_conn=per, secret=SECRET))
                )
    for name, r in rows:
        print(json.dumps({"name": name, **r}, default=str))
    for name, r in rows:
        if "cpu_ms_per_ping" in r:
            print(f"CPU per ping, {name.split(':')[0]}: {r['cpu_ms_per_ping']}")
    print(f"{'measurement':28} {'msg/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'lost':>5} {'errors':>6} {'threads':>7}")
    for name, r in rows:
        print(
            f"{name:28} {r.get('throughput', 0):8.1f} {r.get('p50_ms', 0):8.1f} {r.get('p99_ms', 0):8.1f} "
            f"{r.get('lost', 0):5} {r.get('error_frames', r.get('errors', 0)):6} {r.get('peak_threads', ''):>7}"
        )
    return 0


if __name__ == "__main__":
    t0 = time.time()
    rc = main()
    print(f"({time.time() - t0:.0f} s)", file=sys.stderr)
    sys.exit(rc)
