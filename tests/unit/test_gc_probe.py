"""``benchmarks/gc_probe``: the full-collection pauses ``python -m benchmarks.ping_ab --gc-probe`` reports."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from benchmarks.ping_ab import PROBE_DIR, gc_pauses  # noqa: E402 - the repository root holds the benchmarks package


def _python(tmp_path: Path, *argv: str) -> None:
    env = {**os.environ, "STREAMER_BENCH_GC_DIR": str(tmp_path), "PYTHONPATH": str(PROBE_DIR)}
    code = "import gc\nfor _ in range(3): gc.collect()"
    subprocess.run([sys.executable, "-c", code, *argv], check=True, env=env, timeout=60)


def test_each_process_logs_its_full_collections_and_ping_ab_names_the_stacks(tmp_path: Path) -> None:
    _python(tmp_path, "--role", "dynamodb")
    _python(tmp_path, "something-else")  # not a process of the stack: left out
    pauses = gc_pauses(tmp_path)
    assert list(pauses) == ["moto (DynamoDB)"]
    assert len(pauses["moto (DynamoDB)"]) >= 3  # gc.collect() is a full collection
    assert all(p >= 0 for p in pauses["moto (DynamoDB)"])
    logs = list(tmp_path.glob("*.log"))
    assert len(logs) == 2 and all(log.read_text().startswith("argv ") for log in logs)


def test_without_the_directory_the_probe_does_nothing(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "STREAMER_BENCH_GC_DIR"}
    env["PYTHONPATH"] = str(PROBE_DIR)
    proc = subprocess.run(
        [sys.executable, "-c", "import gc, sys; gc.collect(); print(len(gc.callbacks))"],
        capture_output=True, text=True, env=env, timeout=60, cwd=tmp_path,
    )
    assert proc.returncode == 0 and proc.stdout.strip() == "0"
