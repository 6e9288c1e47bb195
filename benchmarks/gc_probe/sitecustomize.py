"""Garbage-collection pauses of every Python process started with this directory on ``PYTHONPATH``.

``python -m benchmarks.ping_ab … --gc-probe`` puts it there for the stack it starts: each process appends,
to ``$STREAMER_BENCH_GC_DIR/<pid>.log``, its ``argv`` and one line per collection that took over 10 ms or
was a full (generation 2) one — wall time from ``gc.callbacks``' start to stop, the generation, the objects
collected. A collection stops every thread of the process, so a long one is a pause of the whole process.
Not part of streamer: a diagnostic for the benchmarks (docs/performance.md, "Garbage collection pauses").
"""

import gc
import os
import sys
import time

_DIR = os.environ.get("STREAMER_BENCH_GC_DIR")
if _DIR:
    _out = open(os.path.join(_DIR, f"{os.getpid()}.log"), "a", buffering=1)  # noqa: SIM115 - for the process's life
    _out.write(f"argv {' '.join(sys.argv)}\n")
    _started = [0.0]

    def _probe(phase: str, info: dict) -> None:
        if phase == "start":
            _started[0] = time.perf_counter()
            return
        ms = (time.perf_counter() - _started[0]) * 1000
        if ms > 10 or info["generation"] == 2:
            _out.write(f"{time.time():.3f} gen{info['generation']} {ms:.1f} {info['collected']}\n")

    gc.callbacks.append(_probe)
