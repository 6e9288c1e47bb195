"""Where the time goes under load: ``python -m benchmarks.profile ping|echo|connect [--seconds S]``.

Starts ``streamer local``, drives it from a separate load process (ping closed loop over 20 connections, 20
concurrent echo requests, or authenticated handshakes of new users 50 at a time), and samples every process of the
stack with ``py-spy record`` (sampling from outside: the processes run unmodified; ``--nonblocking`` so they are not
paused; ``--gil`` so only the thread holding the GIL is sampled, i.e. CPU spent in Python, not threads waiting).
Each process's samples are split by where the sampled frame's code lives — ours (``streamer``), the engine
(``moto``, and ``werkzeug`` / ``http.server`` serving it), the AWS SDK (``botocore``/``boto3``/``urllib3``), the web
stack (``aiohttp``, ``websockets``), pydantic, and the interpreter/kernel (``threading``, ``socket``, ``selectors``,
idle waits) — and the top self-time functions are listed. ``docs/performance.md`` records the figures and what they
mean.

Needs ``py-spy`` (dev extra) and permission to ptrace the children (root, or ``ptrace_scope`` 0).
"""

from __future__ import annotations

import argparse
import collections
import os
import shutil
import subprocess
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any

from benchmarks._procs import SECRET, _name, raise_open_files_limit, run_load, streamer_local, tree

BUCKETS = (
    ("ours (streamer)", ("streamer/",)),
    ("engine (moto)", ("moto/",)),
    ("engine's HTTP server (werkzeug, http.server, socketserver)", ("werkzeug/", "http/server.py", "socketserver.py")),
    ("AWS SDK (botocore, boto3, urllib3, http.client)", ("botocore/", "boto3/", "urllib3/", "http/client.py")),
    ("web stack (aiohttp, websockets, yarl, multidict)", ("aiohttp/", "websockets/", "yarl/", "multidict/")),
    ("pydantic", ("pydantic/", "pydantic_core/")),
    ("logging / Powertools / X-Ray", ("logging/", "aws_lambda_powertools/", "aws_xray_sdk/")),
    ("json / copy / re / uuid", ("json/", "copy.py", "re/", "uuid.py")),
    ("sockets, threads, event loop", ("threading.py", "selectors.py", "socket.py", "queue.py", "asyncio/", "ssl.py",
                                      "concurrent/futures")),
)


def _in(frame: str, needle: str) -> bool:
    """py-spy prints ``func (path:line)`` with the path shortened to the package (``moto/core/parse.py``)."""
    return f"({needle}" in frame or f"/{needle}" in frame


def bucket_of(stack: str) -> str:
    """The bucket of the innermost frame whose file falls in one (frames are ``func (file:line)``)."""
    for frame in reversed(stack.split(";")):
        for name, needles in BUCKETS:
            if any(_in(frame, n) for n in needles):
                return name
    return "other"


def summarize(raw: str, top: int = 12) -> dict[str, Any]:
    """Collapsed stacks (``py-spy --format raw``) → share per bucket and the top self-time frames."""
    buckets: collections.Counter[str] = collections.Counter()
    leaves: collections.Counter[str] = collections.Counter()
    total = 0
    for line in raw.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        total += n
        buckets[bucket_of(stack)] += n
        leaves[stack.split(";")[-1].strip()] += n
    return {
        "samples": total,
        "buckets": {k: round(100 * v / total, 1) for k, v in buckets.most_common()} if total else {},
        "top_self": [(k, round(100 * v / total, 1)) for k, v in leaves.most_common(top)] if total else [],
    }


def profile(kind: str, seconds: float, raw_dir: str | None = None) -> dict[str, dict[str, Any]]:
    spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    raise_open_files_limit()
    out: dict[str, dict[str, Any]] = {}
    with streamer_local() as st, tempfile.TemporaryDirectory() as tmp:
        pids = tree(st.pid)
        load_args: dict[str, Any] = {"url": st.ws, "secret": SECRET}
        if kind == "ping":
            load_args.update(auth=True, conns=20, duration=seconds + 4)
            load = threading.Thread(target=run_load, args=("ping", seconds + 60), kwargs=load_args)
        elif kind == "connect":  # authenticated handshakes, each a new user, 50 at a time (the suite's shape)
            load_args.update(auth=True, conns=int(120 * (seconds + 4)), rate=1, duration=0.001)
            load = threading.Thread(target=run_load, args=("ping", seconds + 600), kwargs=load_args)
        else:
            load_args.update(conns=20, per_conn=max(3, int(seconds)))
            load = threading.Thread(target=run_load, args=("echo", seconds + 300), kwargs=load_args)
        load.start()
        spies = []
        for pid in pids:
            path = os.path.join(tmp, f"{pid}.txt")
            cmd = [spy, "record", "--pid", str(pid), "--duration", str(int(seconds)), "--rate", "100", "--nonblocking",
                   "--gil", "--format", "raw", "--output", path]  # fmt: skip
            spy_proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
            spies.append((pid, path, spy_proc))
        for pid, path, proc in spies:
            _, err = proc.communicate(timeout=seconds + 60)
            name = _name(pid)
            if proc.returncode != 0 or not os.path.exists(path):
                out[name] = {"error": err.strip()[-300:]}
                continue
            out[name] = summarize(Path(path).read_text())
            if raw_dir is not None:  # the collapsed stacks, for a flame graph or a grep
                os.makedirs(raw_dir, exist_ok=True)
                shutil.copy(path, os.path.join(raw_dir, f"{name.replace(' ', '_')}.{pid}.txt"))
        load.join()
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.profile", description=__doc__.splitlines()[0])
    parser.add_argument("kind", choices=["ping", "echo", "connect"])
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--raw", metavar="DIR", help="also keep each process's collapsed stacks (py-spy raw) here")
    args = parser.parse_args(argv)
    for name, s in profile(args.kind, args.seconds, raw_dir=args.raw).items():
        if "error" in s:
            print(f"\n{name}: py-spy failed: {s['error']}")
            continue
        print(f"\n{name} ({s['samples']} samples)")
        for b, pct in s["buckets"].items():
            print(f"  {pct:5.1f}%  {b}")
        print("  top self time:")
        for frame, pct in s["top_self"]:
            print(f"    {pct:5.1f}%  {frame[:110]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
