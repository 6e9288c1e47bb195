"""The benchmark suite stays runnable (no timing is asserted here: ratios are for humans)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_parse_benchmark_runs_and_reports_a_ratio(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    subprocess.run([sys.executable, "-m", "benchmarks", "parse", "--json", str(out)], cwd=ROOT, check=True,
                   capture_output=True, timeout=120)
    (result,) = json.loads(out.read_text())
    assert result["benchmark"] == "parse_action(submit)" and result["baseline"] == "json.loads"
    assert result["ratio"] > 0
