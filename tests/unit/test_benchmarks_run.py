"""The benchmark suite stays runnable: CI's smoke test of the quick mode (it runs, prints the goal table,
writes the JSON and the plots). No speed is asserted anywhere: ratios are for humans."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from benchmarks import __main__ as bench  # noqa: E402 - the repository root holds the benchmarks package
from benchmarks._procs import Watch, tree  # noqa: E402
from benchmarks.load import percentile  # noqa: E402
from benchmarks.suite import exhausted_first, table  # noqa: E402

GOALS = {"1 ping", "2 end to end", "4 cold start", "5 scale"}


@pytest.mark.timeout(900)
def test_quick_mode_prints_the_goal_table_and_writes_json_and_plots(tmp_path: Path) -> None:
    out = tmp_path / "result.json"
    proc = subprocess.Popen(
        [sys.executable, "-m", "benchmarks", "--json", str(out), "--plots", str(tmp_path)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        stdout, stderr = proc.communicate(timeout=840)
    except subprocess.TimeoutExpired:
        proc.terminate()  # SIGTERM: the runner stops the stacks and servers it started
        stdout, stderr = proc.communicate(timeout=60)
        pytest.fail(f"quick mode still running after 840 s: {stdout[-2000:]}")
    assert proc.returncode == 0, stderr[-3000:]
    assert "| goal | metric | ours | baseline | ratio | target | verdict |" in stdout
    assert "what runs out first:" in stdout
    result = json.loads(out.read_text())
    assert result["mode"] == "quick"
    assert {g["goal"] for g in result["goals"]} == GOALS
    for g in result["goals"]:
        assert {"metric", "ours", "baseline", "ratio", "target", "met"} <= set(g)
    assert not [s for s, v in result["scenarios"].items() if "failed" in v["result"]]
    assert [r["connections"] for r in result["series"]["connections"]] == [20, 100]
    assert [r["concurrent"] for r in result["series"]["executions"]] == [10, 20]
    assert result["machine"]["cpus"] >= 1 and len(result["machine"]["loadavg_before"]) == 3
    assert {r["benchmark"] for r in result["micro"]} >= {"parse_action(submit)"}
    for name in ("connections.png", "executions.png"):
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_named_benchmark_runs_alone(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    subprocess.run([sys.executable, "-m", "benchmarks", "parse", "--json", str(out)], cwd=ROOT, check=True,
                   capture_output=True, timeout=120)  # fmt: skip
    result = json.loads(out.read_text())
    assert result["goals"] == [] and "series" not in result
    (micro,) = result["micro"]
    assert micro["benchmark"] == "parse_action(submit)" and micro["baseline"] == "json.loads"
    assert micro["ratio"] > 0


def test_an_unknown_benchmark_is_refused(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "benchmarks", "no-such", "--json", str(tmp_path / "x.json")],
                          cwd=ROOT, capture_output=True, text=True, timeout=60)  # fmt: skip
    assert proc.returncode == 2 and "unknown benchmark" in proc.stderr
    assert not (tmp_path / "x.json").exists()


def test_a_broken_benchmark_is_recorded_and_the_run_goes_on(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken() -> None:
        raise RuntimeError("boom")

    monkeypatch.setitem(bench.BENCHMARKS, "broken", broken)
    monkeypatch.setitem(bench.BENCHMARKS, "missing", "benchmarks.no_such_module:f")
    monkeypatch.setattr(bench, "RESULTS", [])
    bench.run_benchmark("broken")
    bench.run_benchmark("missing")
    assert [r["benchmark"] for r in bench.RESULTS] == ["broken", "missing"]
    assert bench.RESULTS[0]["failed"] == "RuntimeError: boom"
    assert "ModuleNotFoundError" in bench.RESULTS[1]["failed"]


def test_the_console_benchmarks_are_registered() -> None:
    assert bench.BENCHMARKS["console_list"] == "benchmarks.console:bench_console_list"
    assert bench.BENCHMARKS["console_execution"] == "benchmarks.console:bench_console_execution"


def test_percentile_counts_lost_replies() -> None:
    assert percentile([0.1, 0.2, 0.3, 0.4], 50) == 0.2
    assert percentile([0.1] * 99 + [math.inf], 99) == 0.1
    assert percentile([0.1] * 98 + [math.inf] * 2, 99) == math.inf
    assert math.isnan(percentile([], 99))


def test_exhausted_first_reads_the_samples() -> None:
    busy = {"moto": {"cpu_percent_of_one_core": 97.0, "peak_threads": 20}, "gw": {"cpu_percent_of_one_core": 30.0,
                                                                                  "peak_threads": 5}}  # fmt: skip
    assert exhausted_first(busy, 2).startswith("CPU of one core in moto")
    spread = {n: {"cpu_percent_of_one_core": 60.0, "peak_threads": 1} for n in "abc"}
    assert exhausted_first(spread, 2).startswith("the machine's 2 cores")
    idle = {"a": {"cpu_percent_of_one_core": 10.0, "peak_threads": 300}}
    assert "latency-bound" in exhausted_first(idle, 2) and "300" in exhausted_first(idle, 2)
    assert exhausted_first({}, 2) == "nothing measured"


def test_table_marks_misses() -> None:
    rows = [{"goal": "1 ping", "metric": "m", "ours": 10.0, "baseline": 100.0, "baseline_name": "b", "ratio": 0.1,
             "target": "≥ 0.2x", "met": False},
            {"goal": "2 end to end", "metric": "n", "ours": None, "baseline": None, "baseline_name": "b",
             "ratio": None, "target": "t", "met": True}]  # fmt: skip
    text = table(rows)
    assert "| 1 ping | m | 10.00 | 100 (b) | 0.10x | ≥ 0.2x | MISSED |" in text
    assert "| 2 end to end | n | — | — (b) | — | t | met |" in text


def test_watch_samples_a_process_tree() -> None:
    child = subprocess.Popen([sys.executable, "-c", "import subprocess, sys, time; "
                              "p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(30)']); "
                              "sum(range(10**7)); time.sleep(30)"])  # fmt: skip
    try:
        with Watch(child.pid, interval=0.05) as w:
            import time

            time.sleep(1.0)
        assert len(tree(child.pid)) == 2
        summary = w.summary()
        assert len(summary) == 2
        for v in summary.values():
            assert v["peak_rss_mib"] > 1 and v["peak_threads"] >= 1 and v["peak_fds"] >= 3
        assert w.busiest()[1] >= 0
    finally:
        for pid in tree(child.pid)[1:]:
            subprocess.run(["kill", str(pid)], check=False)
        child.kill()
        child.wait()
