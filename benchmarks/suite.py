"""Issue 11's goals, each measured against its baseline in the same run: ``python -m benchmarks goals [--full]``.

What runs (processes started by :mod:`benchmarks._procs`, load from :mod:`benchmarks.load` in its own process):

=====================  ==============================================  ==========================================
goal                   ours                                            baseline (same run)
=====================  ==============================================  ==========================================
1 ping throughput      closed loop, 20 authenticated connections       the bare ``websockets`` echo server
1 ping p99 open loop   ``rate`` msg/s over N authenticated conns       the bare server at the same load
1 burst                2,000 pings at once on 10 connections           (errors, lost replies, peak threads)
2 echo throughput      20 concurrent echo requests, closed loop        moto's engine, same ASL, no-op Lambdas
2 p99 ≤ 2x p50         submit → result                                 —
4 cold start           each handler: fresh interpreter + import        ``import boto3`` + a DynamoDB client
5 connect rate         authenticated handshakes, 50 in flight          the bare server's handshakes
5 held connections     N held, ping p99 at a low open-loop rate        the bare server holding N
=====================  ==============================================  ==========================================

Quick mode (the default, the CI smoke test) shrinks every size so the whole suite runs in under 2 minutes;
``--full`` uses the issue's sizes (connections 100 / 1,000 / 10,000; concurrent executions 10 / 100 / 1,000).
Every scenario also records, per process, peak RSS, CPU share of one core, peak threads and open files
(:class:`benchmarks._procs.Watch`), from which :func:`exhausted_first` says which resource runs out first.
Nothing here asserts a speed: the table says ``met`` / ``MISSED`` and the JSON keeps every figure.
"""

from __future__ import annotations

import math
import os
import platform
import time
from dataclasses import dataclass
from typing import Any

from benchmarks._procs import (
    SECRET,
    Watch,
    bare_echo_server,
    bare_engine,
    raise_open_files_limit,
    run_load,
    streamer_local,
)


@dataclass(frozen=True)
class Sizes:
    conns_series: tuple[int, ...]
    exec_series: tuple[int, ...]
    closed_conns: int
    closed_seconds: float
    open_rate: int
    open_conns: int
    open_seconds: float
    burst: int
    burst_conns: int
    connect_n: int
    held_n: int
    held_rate: int
    held_seconds: float
    echo_concurrency: int
    echo_per_conn: int
    coldstart_rounds: int
    reply_timeout: float


QUICK = Sizes(
    conns_series=(20, 100), exec_series=(10, 20), closed_conns=20, closed_seconds=3, open_rate=100, open_conns=100,
    open_seconds=3, burst=200, burst_conns=10, connect_n=100, held_n=100, held_rate=50, held_seconds=3,
    echo_concurrency=20, echo_per_conn=2, coldstart_rounds=3, reply_timeout=3,
)
FULL = Sizes(
    conns_series=(100, 1000, 10000), exec_series=(10, 100, 1000), closed_conns=20, closed_seconds=10,
    open_rate=1000, open_conns=1000, open_seconds=10, burst=2000, burst_conns=10, connect_n=1000, held_n=10000,
    held_rate=100, held_seconds=10, echo_concurrency=20, echo_per_conn=5, coldstart_rounds=5, reply_timeout=15,
)


def _num(v: Any) -> float | None:
    """JSON-safe number: inf/NaN (lost replies, nothing measured) become ``None``."""
    return float(v) if isinstance(v, int | float) and math.isfinite(v) else None


@dataclass
class Goal:
    goal: str
    metric: str
    ours: float | None
    baseline: float | None
    baseline_name: str
    target: str
    met: bool | None
    unit: str = ""

    @property
    def ratio(self) -> float | None:
        if self.ours is None or not self.baseline:
            return None
        return self.ours / self.baseline

    def as_dict(self) -> dict[str, Any]:
        return {**self.__dict__, "ratio": self.ratio}


def exhausted_first(watch: dict[str, dict[str, float]], cores: int) -> str:
    """Which resource runs out first in one scenario, read from its per-process samples."""
    if not watch:
        return "nothing measured"
    name = max(watch, key=lambda n: watch[n]["cpu_percent_of_one_core"])
    busiest = watch[name]["cpu_percent_of_one_core"]
    total = sum(v["cpu_percent_of_one_core"] for v in watch.values())
    threads = max(watch, key=lambda n: watch[n]["peak_threads"])
    if busiest >= 85:
        return (f"CPU of one core in {name} ({busiest:.0f}%): one Python process cannot use a second core "
                f"(the GIL), so this process is the ceiling")
    if total >= 85 * cores:
        return f"the machine's {cores} cores ({total:.0f}% of one core across the processes measured)"
    return (f"no resource saturated (busiest: {name} at {busiest:.0f}% of a core; most threads: {threads} with "
            f"{watch[threads]['peak_threads']:.0f}): latency-bound — work waits on round trips between processes")


class Suite:
    def __init__(self, sizes: Sizes, log: Any = print) -> None:
        self.sizes = sizes
        self.log = log
        self.goals: list[Goal] = []
        self.scenarios: dict[str, dict[str, Any]] = {}
        self.series: dict[str, list[dict[str, Any]]] = {"connections": [], "executions": []}
        self.cores = os.cpu_count() or 1

    # -------------------------------------------------------------------------------------------- helpers

    def _record(self, name: str, result: dict[str, Any], watch: Watch | None) -> dict[str, Any]:
        summary = watch.summary() if watch else {}
        self.scenarios[name] = {
            "seconds": round(watch.t1 - watch.t0, 1) if watch else None,
            "result": {k: (_num(v) if isinstance(v, float) else v) for k, v in result.items()},
            "processes": summary,
            "exhausted_first": exhausted_first(summary, self.cores) if summary else None,
        }
        p99 = result.get("p99_ms")
        self.log(f"  {name:<34} {result.get('throughput', 0):9.1f}/s  p50 {result.get('p50_ms', math.nan):8.1f} ms"
                 f"  p99 {p99 if p99 is not None else math.nan:8.1f} ms  lost {result.get('lost', 0)}")
        return result

    def _load(self, name: str, pid: int, scenario: str, limit: float, **args: Any) -> dict[str, Any]:
        args.setdefault("reply_timeout", self.sizes.reply_timeout)
        with Watch(pid) as w:
            try:
                result = run_load(scenario, limit, **args)
            except Exception as exc:  # a scenario that dies is a finding, not the end of the run
                result = {"failed": f"{type(exc).__name__}: {str(exc)[-300:]}", "throughput": 0.0, "lost": -1}
        recorded = self._record(name, result, w)
        self._settle(pid)
        return recorded

    def _settle(self, pid: int, limit: float = 120.0) -> None:
        """Wait (at most ``limit`` s) until the tree uses under 20 % of a core: a queue left by one scenario
        must not be measured by the next."""
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline:
            with Watch(pid, interval=1.0) as w:
                time.sleep(1.0)
            if sum(v["cpu_percent_of_one_core"] for v in w.summary().values()) < 20:
                return

    def _goal(self, *args: Any, **kwargs: Any) -> None:
        g = Goal(*args, **kwargs)
        self.goals.append(g)

    # ------------------------------------------------------------------------------------------ scenarios

    def coldstart(self) -> None:
        from benchmarks import coldstart

        medians = coldstart.measure(self.sizes.coldstart_rounds)
        base = medians["baseline"]["process_cpu"]
        self.scenarios["coldstart"] = {"result": medians, "processes": {}, "exhausted_first": None}
        for h in coldstart.HANDLERS:
            ours = medians[h]["process_cpu"]
            self._goal("4 cold start", f"{h}: fresh interpreter + import (CPU ms)", ours * 1000, base * 1000,
                       "import boto3 + DynamoDB client", "≤ 1.2x", ours / base <= 1.2, "ms")
            self.log(f"  cold start {h:<22} {ours * 1000:6.0f} ms  vs {base * 1000:6.0f} ms  {ours / base:5.2f}x")

    def gateway(self) -> None:
        s = self.sizes
        bare: dict[str, dict[str, Any]] = {}
        with bare_echo_server() as b:
            bare["closed"] = self._load("bare: ping closed loop", b.pid, "ping", 120, url=b.ws, conns=s.closed_conns,
                                        duration=s.closed_seconds)
            bare["open"] = self._load("bare: ping open loop", b.pid, "ping", 300, url=b.ws, conns=s.open_conns,
                                      rate=s.open_rate, duration=s.open_seconds)
            for n in s.conns_series:
                bare[f"held{n}"] = self._load(f"bare: {n} held, ping open loop", b.pid, "ping", 600, url=b.ws,
                                              conns=n, rate=s.held_rate, duration=s.held_seconds)
                bare[f"held{n}"]["rss_mib"] = self._rss(f"bare: {n} held, ping open loop")
            if s.held_n not in s.conns_series:
                bare[f"held{s.held_n}"] = self._load(f"bare: {s.held_n} held", b.pid, "ping", 600, url=b.ws,
                                                     conns=s.held_n, rate=s.held_rate, duration=s.held_seconds)
            bare["connect"] = self._load("bare: connect", b.pid, "ping", 300, url=b.ws, conns=s.connect_n,
                                         rate=1, duration=0.001)
        ours: dict[str, dict[str, Any]] = {}
        with streamer_local() as st:
            auth = {"auth": True, "secret": SECRET, "url": st.ws}
            ours["connect"] = self._load("ours: connect", st.pid, "ping", 600, conns=s.connect_n, rate=1,
                                         duration=0.001, **auth)
            ours["closed"] = self._load("ours: ping closed loop", st.pid, "ping", 300, conns=s.closed_conns,
                                        duration=s.closed_seconds, **auth)
            for n in s.conns_series:
                name = f"ours: {n} held, ping open loop"
                ours[f"held{n}"] = self._load(name, st.pid, "ping", 1800, conns=n, rate=s.held_rate,
                                              duration=s.held_seconds, connect_concurrency=50, **auth)
                ours[f"held{n}"]["rss_mib"] = self._rss(name)
            if s.held_n not in s.conns_series:
                ours[f"held{s.held_n}"] = self._load(f"ours: {s.held_n} held", st.pid, "ping", 1800, conns=s.held_n,
                                                     rate=s.held_rate, duration=s.held_seconds, **auth)
            # Last: an open loop or a burst faster than the stack leaves a queue that would disturb what follows.
            ours["open"] = self._load("ours: ping open loop", st.pid, "ping", 600, conns=s.open_conns,
                                      rate=s.open_rate, duration=s.open_seconds, **auth)
            self._settle(st.pid)
            ours["burst"] = self._load("ours: burst", st.pid, "ping", 600, conns=s.burst_conns, burst=s.burst, **auth)
        for n in s.conns_series:
            o, b_ = ours[f"held{n}"], bare[f"held{n}"]
            self.series["connections"].append({
                "connections": n,
                "ours": {"p50_ms": _num(o.get("p50_ms")), "p99_ms": _num(o.get("p99_ms")),
                         "rss_mib": o.get("rss_mib"), "connected": o.get("connected")},
                "bare": {"p50_ms": _num(b_.get("p50_ms")), "p99_ms": _num(b_.get("p99_ms")),
                         "rss_mib": b_.get("rss_mib"), "connected": b_.get("connected")},
            })
        c, bc = ours["closed"], bare["closed"]
        self._goal("1 ping", f"closed-loop throughput, {s.closed_conns} connections (msg/s)",
                   _num(c.get("throughput")), _num(bc.get("throughput")), "bare websockets echo", "≥ 0.2x",
                   bool(bc.get("throughput")) and c.get("throughput", 0) / bc["throughput"] >= 0.2, "msg/s")
        o, bo = ours["open"], bare["open"]
        p99 = _num(o.get("p99_ms"))
        self._goal("1 ping", f"p99 at {s.open_rate} msg/s open loop over {s.open_conns} connections (ms)", p99,
                   _num(bo.get("p99_ms")), "bare server, same load", "p99 ≤ 50 ms and rate held",
                   p99 is not None and p99 <= 50 and o.get("lost", 1) == 0
                   and o.get("throughput", 0) >= 0.95 * s.open_rate, "ms")
        bu = ours["burst"]
        threads = max((v["peak_threads"] for v in self.scenarios["ours: burst"]["processes"].values()), default=0)
        self._goal("1 ping", f"burst of {s.burst} on {s.burst_conns} connections: lost + error frames",
                   float(bu.get("lost", 0) + bu.get("error_frames", 0)), None, "—",
                   f"0, threads bounded (peak {threads:.0f})", bu.get("lost") == 0 and not bu.get("error_frames"),
                   "msgs")
        cr, bcr = ours["connect"], bare["connect"]
        self._goal("5 scale", f"connect rate, {s.connect_n} authenticated handshakes (conn/s)",
                   _num(cr.get("connect_rate")), _num(bcr.get("connect_rate")), "bare websockets server", "≥ 0.33x",
                   bool(bcr.get("connect_rate")) and cr.get("connect_rate", 0) / bcr["connect_rate"] >= 1 / 3,
                   "conn/s")
        h, bh = ours[f"held{s.held_n}"], bare[f"held{s.held_n}"]
        hp99 = _num(h.get("p99_ms"))
        self._goal("5 scale", f"{s.held_n} connections held: connected / ping p99 at {s.held_rate} msg/s (ms)",
                   hp99, _num(bh.get("p99_ms")), "bare server holding as many",
                   f"all {s.held_n} held, p99 measured", h.get("connected") == s.held_n and hp99 is not None, "ms")

    def _rss(self, scenario: str) -> float:
        return round(sum(float(v["peak_rss_mib"]) for v in self.scenarios[scenario]["processes"].values()), 1)

    def requests(self) -> None:
        s = self.sizes
        total = s.echo_concurrency * s.echo_per_conn
        engine: dict[int, dict[str, Any]] = {}
        with bare_engine() as e:
            for c in sorted({s.echo_concurrency, *s.exec_series}):
                n = total if c == s.echo_concurrency else c
                args = {"sfn": e.sfn, "statemachine_arn": e.statemachine_arn, "lambda_port": e.lambda_port}
                engine[c] = self._load(f"bare engine: {c} concurrent", e.pid, "engine", 1800, concurrency=c,
                                       total=n, timeout=600, **args)
                engine[c]["rss_mib"] = self._rss(f"bare engine: {c} concurrent")
        ours: dict[int, dict[str, Any]] = {}
        with streamer_local() as st:
            for c in sorted({s.echo_concurrency, *s.exec_series}):
                per = s.echo_per_conn if c == s.echo_concurrency else 1
                ours[c] = self._load(f"ours: echo, {c} concurrent", st.pid, "echo", 1800, url=st.ws, secret=SECRET,
                                     conns=c, per_conn=per, timeout=600)
                ours[c]["rss_mib"] = self._rss(f"ours: echo, {c} concurrent")
        for c in s.exec_series:
            self.series["executions"].append({
                "concurrent": c,
                "ours": {k: _num(ours[c].get(k)) for k in ("p50_ms", "p99_ms", "throughput")}
                | {"rss_mib": ours[c].get("rss_mib"), "lost": ours[c].get("lost")},
                "bare": {k: _num(engine[c].get(k)) for k in ("p50_ms", "p99_ms", "throughput")}
                | {"rss_mib": engine[c].get("rss_mib"), "lost": engine[c].get("lost")},
            })
        o, b = ours[s.echo_concurrency], engine[s.echo_concurrency]
        self._goal("2 end to end", f"echo throughput, {s.echo_concurrency} concurrent (req/s)",
                   _num(o.get("throughput")), _num(b.get("throughput")), "moto engine, no-op Lambdas", "≥ 0.8x",
                   bool(b.get("throughput")) and o.get("throughput", 0) / b["throughput"] >= 0.8, "req/s")
        p50, p99 = _num(o.get("p50_ms")), _num(o.get("p99_ms"))
        self._goal("2 end to end", f"submit→result p99, {s.echo_concurrency} concurrent (ms; baseline = our p50)",
                   p99, p50, "our p50", "≤ 2x", p50 is not None and p99 is not None and p99 <= 2 * p50, "ms")

    # ------------------------------------------------------------------------------------------------ run

    def run(self, parts: tuple[str, ...] = ("coldstart", "gateway", "requests")) -> dict[str, Any]:
        raise_open_files_limit()
        load_before = os.getloadavg()
        t0 = time.time()
        for part in parts:
            self.log(f"[{part}]")
            getattr(self, part)()
        return {
            "machine": {
                "cpus": self.cores,
                "platform": platform.platform(),
                "python": platform.python_version(),
                "loadavg_before": load_before,
                "loadavg_after": os.getloadavg(),
            },
            "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t0)),
            "seconds": round(time.time() - t0, 1),
            "goals": [g.as_dict() for g in self.goals],
            "series": self.series,
            "scenarios": self.scenarios,
        }


def table(goals: list[dict[str, Any]]) -> str:
    """The goals as a Markdown table: ours / baseline / ratio / goal / verdict."""

    def f(v: float | None) -> str:
        return "—" if v is None else (f"{v:,.0f}" if abs(v) >= 100 else f"{v:,.2f}")

    lines = ["| goal | metric | ours | baseline | ratio | target | verdict |", "|---|---|---|---|---|---|---|"]
    for g in goals:
        ratio = "—" if g["ratio"] is None else f"{g['ratio']:.2f}x"
        verdict = "met" if g["met"] else "MISSED"
        lines.append(f"| {g['goal']} | {g['metric']} | {f(g['ours'])} | {f(g['baseline'])} ({g['baseline_name']}) "
                     f"| {ratio} | {g['target']} | {verdict} |")
    return "\n".join(lines)
