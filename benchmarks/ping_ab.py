"""Ping through ``streamer local`` against the bare ``websockets`` echo server, in one run (an A/B helper).

``python -m benchmarks.ping_ab LABEL [RATE] [CONNS] [--rounds N] [--gc-probe]``: the bare server's closed loop
over 20 connections (6 s), then ``streamer local`` (as :mod:`benchmarks.suite` starts it): closed loop over
20 connections (8 s, with the stack's CPU sampled), then N open loops (default 1), 10 s apart, each at RATE
msg/s (default 800) over CONNS fresh connections (default 300) for 10 s. Prints one line per open loop:
throughput and ratio to the bare server, p99, CPU, and the open loop's rate, p50, p99, lost.

``--gc-probe`` runs the stack's processes with ``benchmarks/gc_probe`` on ``PYTHONPATH`` and prints, per
process, its full (generation 2) collections and their longest pauses — what a p99 of several hundred
milliseconds was made of before ``streamer.local.heap`` (docs/performance.md, "Garbage collection pauses").

``--connect N`` first times N authenticated handshakes (each a new user, 50 at a time, as the goal suite's
connect scenario) against the bare server and then ``streamer local``, and prints the rates, their ratio and
the CPU of each stack process during ours.

For before/after, run it from each checkout's root with ``PYTHONPATH=<checkout>/platform:<checkout>``.
"""

from __future__ import annotations

import argparse
import collections
import os
import sys
import tempfile
import time
from pathlib import Path

from benchmarks._procs import SECRET, Watch, bare_echo_server, run_load, streamer_local

PROBE_DIR = Path(__file__).resolve().parent / "gc_probe"
#: The stack's processes, by a part of their ``sys.argv`` as ``site`` sees it (``-m`` not yet resolved to the
#: module's path); the load processes are left out.
STACK_PROCESSES = {
    "-m local ": "gateway (streamer local)",
    "--role dynamodb": "moto (DynamoDB)",
    "--role stepfunctions": "moto (Step Functions)",
    "-m --template ": "Lambda endpoint",
}


def gc_pauses(directory: Path) -> dict[str, list[float]]:
    """Full-collection pauses (ms) per stack process, from the probe's logs."""
    out: dict[str, list[float]] = collections.defaultdict(list)
    for log in directory.glob("*.log"):
        lines = log.read_text().splitlines()
        if not lines:
            continue
        argv = lines[0]
        name = next((n for key, n in STACK_PROCESSES.items() if key in argv), None)
        if name is None:
            continue
        for line in lines[1:]:
            parts = line.split()
            if len(parts) == 4 and parts[1] == "gen2":
                out[name].append(float(parts[2]))
    return dict(out)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.ping_ab", description=__doc__.split("\n\n")[0])
    parser.add_argument("label", nargs="?", default="this tree")
    parser.add_argument("rate", nargs="?", type=int, default=800)
    parser.add_argument("conns", nargs="?", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=1, help="open loops, each on fresh connections")
    parser.add_argument("--gc-probe", action="store_true", help="report the stack's full-collection pauses")
    parser.add_argument("--connect", type=int, default=0, metavar="N", help="first time N authenticated handshakes")
    args = parser.parse_args(argv)
    probe = tempfile.TemporaryDirectory(prefix="gc-probe-") if args.gc_probe else None
    if probe is not None:
        os.environ["STREAMER_BENCH_GC_DIR"] = probe.name
        os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(PROBE_DIR), os.environ.get("PYTHONPATH")) if p)
    with bare_echo_server() as b:
        bare = run_load("ping", 120, url=b.ws, conns=20, duration=6, reply_timeout=5)
        if args.connect:
            bare_connect = run_load("ping", 300, url=b.ws, conns=args.connect, rate=1, duration=0.001)
    with streamer_local() as st:
        auth = {"auth": True, "secret": SECRET, "url": st.ws, "reply_timeout": 5}
        if args.connect:
            with Watch(st.pid) as w:
                ours = run_load("ping", 600, conns=args.connect, rate=1, duration=0.001, **auth)
            cpus = ", ".join(f"{n} {v['cpu_percent_of_one_core']:.0f} %" for n, v in w.summary().items())
            print(
                f"{args.label}: connect {ours['connect_rate']:.1f}/s over {ours['connected']} "
                f"(bare {bare_connect['connect_rate']:.0f}/s, "
                f"{ours['connect_rate'] / bare_connect['connect_rate']:.3f}x; errors {ours['connect_errors']}); "
                f"CPU: {cpus}",
                flush=True,
            )
        with Watch(st.pid) as w:
            closed = run_load("ping", 120, conns=20, duration=8, **auth)
        cpu = sum(v["cpu_percent_of_one_core"] for v in w.summary().values())
        print(
            f"{args.label}: closed {closed['throughput']:.0f} msg/s (bare {bare['throughput']:.0f}, "
            f"{closed['throughput'] / bare['throughput']:.3f}x) p99 {closed['p99_ms']:.1f} ms, stack CPU {cpu:.0f} %",
            flush=True,
        )
        for k in range(args.rounds):
            time.sleep(3 if k == 0 else 10)
            op = run_load("ping", 300, conns=args.conns, rate=args.rate, duration=10, connect_concurrency=50, **auth)
            print(
                f"{args.label}: open loop {k + 1}/{args.rounds}, {args.rate}/s over {args.conns}: "
                f"{op['throughput']:.0f} msg/s, p50 {op['p50_ms']:.1f} ms, p99 {op['p99_ms']:.1f} ms, "
                f"lost {op.get('lost')}",
                flush=True,
            )
    if probe is not None:
        for name, pauses in sorted(gc_pauses(Path(probe.name)).items()):
            longest = ", ".join(f"{p:.0f}" for p in sorted(pauses, reverse=True)[:5])
            print(f"{args.label}: {name}: {len(pauses)} full collections, longest {longest} ms")
        probe.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
