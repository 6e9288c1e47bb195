"""Ping through ``streamer local`` against the bare ``websockets`` echo server, in one run (an A/B helper).

``python -m benchmarks.ping_ab LABEL [RATE] [CONNS]``: the bare server's closed loop over 20 connections (6 s),
then ``streamer local`` (as :mod:`benchmarks.suite` starts it): closed loop over 20 connections (8 s, with the
stack's CPU sampled), then an open loop at RATE msg/s (default 800) over CONNS connections (default 300) for
10 s. Prints one line: throughput and ratio to the bare server, p99, CPU, and the open loop's rate, p50, p99,
lost. For before/after, run it from each checkout's root with ``PYTHONPATH=<checkout>/platform:<checkout>``.
"""

from __future__ import annotations

import sys
import time

from benchmarks._procs import SECRET, Watch, bare_echo_server, run_load, streamer_local


def main(argv: list[str]) -> int:
    label = argv[0] if argv else "this tree"
    rate = int(argv[1]) if len(argv) > 1 else 800
    conns = int(argv[2]) if len(argv) > 2 else 300
    with bare_echo_server() as b:
        bare = run_load("ping", 120, url=b.ws, conns=20, duration=6, reply_timeout=5)
    with streamer_local() as st:
        auth = {"auth": True, "secret": SECRET, "url": st.ws, "reply_timeout": 5}
        with Watch(st.pid) as w:
            closed = run_load("ping", 120, conns=20, duration=8, **auth)
        cpu = sum(v["cpu_percent_of_one_core"] for v in w.summary().values())
        time.sleep(3)
        op = run_load("ping", 300, conns=conns, rate=rate, duration=10, connect_concurrency=50, **auth)
    print(
        f"{label}: closed {closed['throughput']:.0f} msg/s (bare {bare['throughput']:.0f}, "
        f"{closed['throughput'] / bare['throughput']:.3f}x) p99 {closed['p99_ms']:.1f} ms, stack CPU {cpu:.0f} % "
        f"| open {rate}/s over {conns}: {op['throughput']:.0f} msg/s, p50 {op['p50_ms']:.1f} ms, "
        f"p99 {op['p99_ms']:.1f} ms, lost {op.get('lost')}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
