"""Cold start per Lambda handler: a fresh interpreter importing the handler module, against a fresh interpreter
doing ``import boto3`` and creating a DynamoDB client (what any Python Lambda that touches DynamoDB pays).

The figure is the CPU time of the whole child process (interpreter start-up + the import, as a Lambda
container's init pays it), read from ``getrusage(RUSAGE_CHILDREN)``: an import from a warm page cache is
CPU-bound, and CPU time is what other work on 2 shared cores disturbs least. The import alone (CPU and wall,
timed inside the child) is recorded too. Rounds interleave the baseline and every handler so machine drift
hits all alike; each figure is the median of ``rounds`` (5 by default, as issue 11 asks).

``python -m benchmarks.coldstart [--importtime] [--pythonpath DIR]`` prints the medians and, with
``--importtime``, each handler's ten most expensive packages from ``python -X importtime`` (self time summed
per top-level package), the table ``docs/performance.md`` records; ``--pythonpath`` measures another checkout
of ``platform/`` (e.g. ``git archive`` of an older commit) for a before/after.
"""

from __future__ import annotations

import argparse
import collections
import os
import resource
import statistics
import subprocess
import sys

HANDLERS = ("connect", "disconnect", "router", "stream_router", "notify", "step_runner", "execution_events")
BASELINE = "import boto3; boto3.client('dynamodb')"
_TIMED = (
    "import time; c, t = time.process_time(), time.perf_counter(); {code}; "
    "print(time.process_time() - c, time.perf_counter() - t)"
)


def _env(pythonpath: str | None) -> dict[str, str]:
    env = {**os.environ, "AWS_DEFAULT_REGION": "us-east-1", "AWS_ACCESS_KEY_ID": "x", "AWS_SECRET_ACCESS_KEY": "x"}
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    if pythonpath:
        env["PYTHONPATH"] = pythonpath
    return env


def code_for(handler: str | None) -> str:
    return BASELINE if handler is None else f"import streamer.handlers.{handler}"


def time_import(handler: str | None, pythonpath: str | None = None) -> tuple[float, float, float]:
    """CPU seconds of a fresh interpreter importing the handler (``None``: the boto3 baseline), whole process;
    and CPU, wall seconds of the import alone."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    out = subprocess.run(
        [sys.executable, "-c", _TIMED.format(code=code_for(handler))],
        capture_output=True,
        text=True,
        check=True,
        env=_env(pythonpath),
        timeout=120,
    )
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    process_cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    cpu, wall = out.stdout.strip().splitlines()[-1].split()
    return process_cpu, float(cpu), float(wall)


def measure(rounds: int = 5, pythonpath: str | None = None) -> dict[str, dict[str, float]]:
    """Medians (process CPU, import CPU, import wall; seconds) of the baseline and every handler."""
    for h in (None, *HANDLERS):  # one untimed pass: bytecode caches written, files in the page cache
        time_import(h, pythonpath)
    samples: dict[str, list[tuple[float, float, float]]] = collections.defaultdict(list)
    for _ in range(rounds):
        for h in (None, *HANDLERS):
            samples[h or "baseline"].append(time_import(h, pythonpath))
    return {
        name: {
            "process_cpu": statistics.median(p for p, _, _ in v),
            "cpu": statistics.median(c for _, c, _ in v),
            "wall": statistics.median(w for _, _, w in v),
        }
        for name, v in samples.items()
    }


def importtime_top(
    handler: str | None, n: int = 10, pythonpath: str | None = None, runs: int = 3
) -> list[tuple[str, float]]:
    """The ``n`` top-level packages with the most import self-time (ms) under ``python -X importtime``, each the
    median of ``runs`` fresh interpreters (one run on a shared machine is too noisy to rank by)."""
    samples: dict[str, list[float]] = collections.defaultdict(list)
    for _ in range(runs):
        err = subprocess.run(
            [sys.executable, "-X", "importtime", "-c", code_for(handler)],
            capture_output=True,
            text=True,
            check=True,
            env=_env(pythonpath),
            timeout=120,
        ).stderr
        per_package: collections.Counter[str] = collections.Counter()
        for line in err.splitlines():
            if not line.startswith("import time:") or "self [us]" in line:
                continue
            self_us, _cumulative, name = line.split(":", 1)[1].split("|")
            per_package[name.strip().split(".")[0]] += int(self_us)
        for pkg, us in per_package.items():
            samples[pkg].append(us / 1000)
    medians = {pkg: statistics.median(v + [0.0] * (runs - len(v))) for pkg, v in samples.items()}
    return sorted(medians.items(), key=lambda kv: -kv[1])[:n]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.coldstart", description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--importtime", action="store_true", help="also print each handler's top 10 packages")
    parser.add_argument("--pythonpath", default=None, help="measure the streamer package found here")
    args = parser.parse_args(argv)
    medians = measure(args.rounds, args.pythonpath)
    base = medians["baseline"]
    print("| handler | process CPU (ms) | ratio | import CPU (ms) | ratio | import wall (ms) | ratio |")
    print("|---|---|---|---|---|---|---|")
    for name in ("baseline", *HANDLERS):
        m = medians[name]
        print(f"| {name} | " + " | ".join(f"{m[k] * 1000:.0f} | {m[k] / base[k]:.2f}x" for k in m) + " |")
    if args.importtime:
        for h in (None, *HANDLERS):
            top = importtime_top(h, pythonpath=args.pythonpath)
            print(f"\n{h or 'baseline'}: " + ", ".join(f"{pkg} {ms:.1f}" for pkg, ms in top))
    return 0


if __name__ == "__main__":
    sys.exit(main())
