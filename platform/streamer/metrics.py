"""The handlers' CloudWatch metrics: every name, unit and dimension in one place; recording, flushing, reading.

Contract:

* :data:`METRICS` lists every metric the platform publishes (``docs/observability.md`` documents each).
  Code records a fact with :func:`add` (``metrics.add(metrics.REQUESTS_FAILED, workflow="echo")``).
* Recording only counts inside a Lambda invocation: ``streamer.handlers._runtime.lambda_handler`` opens one
  buffer per invocation (:func:`invocation`) and flushes it once when the invocation ends, however it ends.
  Outside an invocation (the CLI, a test calling the service directly) :func:`add` does nothing. The buffer is
  a context variable, so concurrent invocations in one process (the local Lambda endpoint runs them in
  threads) never mix; a point added after its invocation flushed (a progress timer firing late) is written
  on its own instead of being lost.
* A flush writes CloudWatch Embedded Metric Format documents built by Powertools' EMF provider
  (``AmazonCloudWatchEMFProvider.serialize_metric_set``), one per dimension set, one JSON document a line
  (https://docs.aws.amazon.com/AmazonCloudWatch/latest/monitoring/CloudWatch_Embedded_Metric_Format_Specification.html).
  Powertools' shared ``Metrics`` object is not used: it keeps one metric set per process with one set of
  default dimensions, which neither separates concurrent invocations nor carries per-workflow and per-step
  dimensions side by side.
* Where the lines go: stdout on AWS (Lambda sends it to CloudWatch Logs, which extracts the metrics);
  ``$STREAMER_LOCAL_METRICS_FILE`` when set (``streamer local`` sets it for its Lambda endpoint) — a JSON-lines
  file kept under :data:`LOCAL_FILE_MAX_BYTES` by rotating to ``<file>.1``. :func:`read_local` and
  :func:`summarize` read that file back for the local console's overview.
* Namespace: ``$POWERTOOLS_METRICS_NAMESPACE`` (the template's ``MetricsNamespace`` parameter), default
  ``streamer``; every metric carries the ``service`` dimension (``$POWERTOOLS_SERVICE_NAME``, default
  ``streamer``). ``POWERTOOLS_METRICS_DISABLED=true`` turns writing off.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import math
import os
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.metrics.provider.cloudwatch_emf.cloudwatch import AmazonCloudWatchEMFProvider

from streamer.config import Env

__all__ = [
    "COLD_START",
    "CONNECTS_REFUSED",
    "CONNECT_REFUSAL_REASONS",
    "DEFAULT_NAMESPACE",
    "LOCAL_FILE_ENV",
    "LOCAL_FILE_MAX_BYTES",
    "MESSAGES_RATE_LIMITED",
    "METRICS",
    "PROGRESS_EVENTS_PUSHED",
    "PUSHES_FAILED",
    "PUSHES_TO_GONE_CONNECTIONS",
    "REQUESTS_CANCELLED",
    "REQUESTS_FAILED",
    "REQUESTS_STARTED",
    "REQUESTS_SUBMITTED",
    "REQUESTS_SUCCEEDED",
    "REQUESTS_TIMED_OUT",
    "REQUEST_DURATION",
    "STEP_ATTEMPTS",
    "STEP_DURATION",
    "STEP_ERRORS",
    "STREAM_RECORDS",
    "STREAM_RECORDS_RETRIED",
    "JsonLinesFile",
    "MetricDef",
    "Point",
    "Series",
    "add",
    "connect_refusal_reason",
    "emf_documents",
    "flush",
    "invocation",
    "local_metrics_file",
    "overview",
    "parse_emf",
    "read_local",
    "set_sink",
    "summarize",
    "terminal_metric",
]

DEFAULT_NAMESPACE = "streamer"
LOCAL_FILE_ENV = Env.LOCAL_METRICS_FILE
#: The local metrics file rotates to ``<file>.1`` past this size (so at most twice this on disk).
LOCAL_FILE_MAX_BYTES = 8 * 1024 * 1024
#: Powertools' EMF provider prints a document itself when a metric reaches 100 values (EMF's limit per
#: metric); documents are cut below that so every line goes through our sink.
_MAX_VALUES = 99


@dataclass(frozen=True)
class MetricDef:
    """One metric: its name, unit, dimensions (besides ``service``) and when it is recorded.

    ``rollup``: also published with ``service`` alone (the same document carries both dimension sets), so an
    alarm or a graph can use the total without listing every workflow.
    """

    name: str
    unit: MetricUnit
    dimensions: tuple[str, ...]
    when: str
    rollup: bool = False


def _count(name: str, dims: tuple[str, ...], when: str, rollup: bool = False) -> MetricDef:
    return MetricDef(name, MetricUnit.Count, dims, when, rollup)


REQUESTS_SUBMITTED = _count("RequestsSubmitted", ("workflow",), "the router stored a new request", True)
REQUESTS_STARTED = _count("RequestsStarted", ("workflow",), "the stream router started its execution", True)
REQUESTS_SUCCEEDED = _count("RequestsSucceeded", ("workflow",), "a request ended SUCCEEDED", True)
REQUESTS_FAILED = _count("RequestsFailed", ("workflow",), "a request ended FAILED (also: rejected at start)", True)
REQUESTS_CANCELLED = _count("RequestsCancelled", ("workflow",), "a request ended CANCELLED", True)
REQUESTS_TIMED_OUT = _count("RequestsTimedOut", ("workflow",), "a request ended TIMED_OUT", True)
REQUEST_DURATION = MetricDef(
    "RequestDuration",
    MetricUnit.Milliseconds,
    ("workflow",),
    "a request ended: from its submission to its terminal event (second resolution)",
    True,
)
STEP_DURATION = MetricDef("StepDuration", MetricUnit.Milliseconds, ("step",), "each attempt of a step ended")
STEP_ATTEMPTS = _count("StepAttempts", ("step",), "each attempt of a step (Sum: attempts; retries included)")
STEP_ERRORS = _count(
    "StepErrors", ("step", "error"), "an attempt ended with RetryableStepError (retried) or StepFailedError"
)
PROGRESS_EVENTS_PUSHED = _count("ProgressEventsPushed", ("workflow",), "a progress event was stored and pushed")
PUSHES_TO_GONE_CONNECTIONS = _count(
    "PushesToGoneConnections", (), "a push or reply found its connection gone (410); the row is deleted"
)
PUSHES_FAILED = _count("PushesFailed", (), "a push failed after botocore's retries (not gone)")
CONNECTS_REFUSED = _count("ConnectsRefused", ("reason",), "$connect refused (reason: CONNECT_REFUSAL_REASONS)", True)
MESSAGES_RATE_LIMITED = _count("MessagesRateLimited", (), "a message was answered RATE_LIMITED")
STREAM_RECORDS = _count("StreamRecords", ("outcome",), "the stream router handled a record (outcome of start)")
STREAM_RECORDS_RETRIED = _count(
    "StreamRecordsRetried", (), "a stream record failed and was reported in batchItemFailures (Lambda retries it)"
)
COLD_START = _count("ColdStart", ("function_name",), "the first invocation of a function in its container")

METRICS: tuple[MetricDef, ...] = (
    REQUESTS_SUBMITTED,
    REQUESTS_STARTED,
    REQUESTS_SUCCEEDED,
    REQUESTS_FAILED,
    REQUESTS_CANCELLED,
    REQUESTS_TIMED_OUT,
    REQUEST_DURATION,
    STEP_DURATION,
    STEP_ATTEMPTS,
    STEP_ERRORS,
    PROGRESS_EVENTS_PUSHED,
    PUSHES_TO_GONE_CONNECTIONS,
    PUSHES_FAILED,
    CONNECTS_REFUSED,
    MESSAGES_RATE_LIMITED,
    STREAM_RECORDS,
    STREAM_RECORDS_RETRIED,
    COLD_START,
)

_TERMINAL = {
    "SUCCEEDED": REQUESTS_SUCCEEDED,
    "FAILED": REQUESTS_FAILED,
    "CANCELLED": REQUESTS_CANCELLED,
    "TIMED_OUT": REQUESTS_TIMED_OUT,
}


def terminal_metric(status: str) -> MetricDef:
    """The counter of a terminal request status (``SUCCEEDED`` … ``TIMED_OUT``)."""
    return _TERMINAL[status]


# -- connect refusals: a bounded set of dimension values ---------------------------------------------------

#: Every ``reason`` value of ``ConnectsRefused``. Dimension values must stay few: each distinct combination
#: is a separate CloudWatch metric (and a separate charge).
CONNECT_REFUSAL_REASONS = (
    "bad_request",
    "origin",
    "quota",
    "no_token",
    "malformed",
    "expired",
    "not_yet_valid",
    "invalid_signature",
    "invalid_claims",
    "algorithm",
    "keys_unavailable",
    "forbidden",
    "invalid",
)
_REFUSALS = {
    "missing token": "no_token",
    "malformed token": "malformed",
    "token too large": "malformed",
    "token expired": "expired",
    "token not yet valid": "not_yet_valid",
    "invalid signature": "invalid_signature",
    "invalid issuer": "invalid_claims",
    "invalid audience": "invalid_claims",
    "algorithm not allowed": "algorithm",
    "signing keys unavailable": "keys_unavailable",
    "unknown signing key": "keys_unavailable",
    "missing key id": "keys_unavailable",
    "invalid key": "keys_unavailable",
}


def connect_refusal_reason(reason: str | None, status: int = 401) -> str:
    """Map an ``AuthError`` reason (free text, never the token) to one of :data:`CONNECT_REFUSAL_REASONS`."""
    if status == 403:
        return "forbidden"
    if not reason:
        return "no_token"
    if reason in _REFUSALS:
        return _REFUSALS[reason]
    if reason.startswith(("invalid claim", "missing claim")):
        return "invalid_claims"
    return "invalid"


# -- recording --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Point:
    """One value of one metric with its dimensions (``service`` excluded)."""

    metric: MetricDef
    value: float
    dimensions: tuple[tuple[str, str], ...]


@dataclass
class _Buffer:
    points: list[Point] = field(default_factory=list)
    closed: bool = False
    lock: threading.Lock = field(default_factory=threading.Lock)


_current: contextvars.ContextVar[_Buffer | None] = contextvars.ContextVar("streamer_metrics", default=None)


def add(metric: MetricDef, value: float = 1, **dimensions: str) -> None:
    """Record ``value`` for ``metric`` in the current invocation; a no-op outside one.

    ``dimensions`` must name exactly the metric's dimensions (a programming error otherwise: ``ValueError``).
    """
    if set(dimensions) != set(metric.dimensions):
        raise ValueError(f"{metric.name} takes dimensions {metric.dimensions}, got {tuple(sorted(dimensions))}")
    buffer = _current.get()
    if buffer is None:
        return
    dims = tuple((name, str(dimensions[name]) or "-") for name in metric.dimensions)
    point = Point(metric, float(value), dims)
    with buffer.lock:
        if not buffer.closed:
            buffer.points.append(point)
            return
    _write(emf_documents([point]))  # after its invocation flushed: on its own, not lost


@contextlib.contextmanager
def invocation() -> Iterator[None]:
    """One buffer for the duration of a Lambda invocation, flushed once at the end (also on error)."""
    buffer = _Buffer()
    token = _current.set(buffer)
    try:
        yield
    finally:
        _current.reset(token)
        with buffer.lock:
            buffer.closed = True
            points, buffer.points = buffer.points, []
        _write(emf_documents(points))


def flush() -> None:
    """Write what the current invocation recorded so far (the buffer stays open)."""
    buffer = _current.get()
    if buffer is None:
        return
    with buffer.lock:
        points, buffer.points = buffer.points, []
    _write(emf_documents(points))


def namespace() -> str:
    return os.environ.get("POWERTOOLS_METRICS_NAMESPACE") or DEFAULT_NAMESPACE


def service_name() -> str:
    return os.environ.get("POWERTOOLS_SERVICE_NAME") or "streamer"


def emf_documents(
    points: Iterable[Point], *, namespace_: str | None = None, service: str | None = None
) -> list[dict[str, Any]]:
    """EMF documents for ``points``: one per dimension set, each built by Powertools' EMF provider."""
    ns = namespace_ or namespace()
    svc = service or service_name()
    groups: dict[tuple[tuple[tuple[str, str], ...], bool], list[Point]] = defaultdict(list)
    for p in points:
        groups[(p.dimensions, p.metric.rollup)].append(p)
    docs: list[dict[str, Any]] = []
    for (dims, rollup), group in groups.items():
        chunks: list[list[Point]] = [[]]
        per_name: dict[str, int] = defaultdict(int)
        for p in group:
            if per_name[p.metric.name] >= _MAX_VALUES or len(per_name) >= _MAX_VALUES:
                chunks.append([])
                per_name.clear()
            chunks[-1].append(p)
            per_name[p.metric.name] += 1
        for chunk in chunks:
            provider = AmazonCloudWatchEMFProvider(namespace=ns, service=svc, default_dimensions={"service": svc})
            if rollup and dims:
                provider.add_dimensions(**dict(dims))  # [["service"], ["service", *dims]]
            else:
                for name, value in dims:
                    provider.add_dimension(name=name, value=value)
            for p in chunk:
                provider.add_metric(name=p.metric.name, unit=p.metric.unit, value=p.value)
            docs.append(dict(provider.serialize_metric_set()))
    return docs


# -- where the lines go ------------------------------------------------------------------------------------

Sink = Callable[[str], None]
_sink: Sink | None = None
_files: dict[str, JsonLinesFile] = {}
_files_lock = threading.Lock()


def set_sink(sink: Sink | None) -> None:
    """Send EMF lines to ``sink`` (one JSON document a call) instead of stdout/the local file; None resets."""
    global _sink
    _sink = sink


def _disabled() -> bool:
    return os.environ.get("POWERTOOLS_METRICS_DISABLED", "").strip().lower() in ("1", "true", "yes", "on")


def _write(docs: list[dict[str, Any]]) -> None:
    if not docs or _disabled():
        return
    sink = _sink
    if sink is None:
        path = os.environ.get(LOCAL_FILE_ENV)
        if path:
            with _files_lock:
                target = _files.get(path)
                if target is None:
                    target = _files[path] = JsonLinesFile(Path(path))
            sink = target.append
        else:
            sink = _stdout
    for doc in docs:
        sink(json.dumps(doc, separators=(",", ":")))


def _stdout(line: str) -> None:
    # What Powertools' flush_metrics does: one EMF document a line on stdout, which Lambda sends to
    # CloudWatch Logs, which extracts the metrics.
    print(line, flush=True)


class JsonLinesFile:
    """Append-only JSON lines, rotated to ``<path>.1`` past ``max_bytes`` (one old file kept)."""

    def __init__(self, path: Path, max_bytes: int = LOCAL_FILE_MAX_BYTES) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self._lock = threading.Lock()

    def append(self, line: str) -> None:
        data = (line.rstrip("\n") + "\n").encode()
        with self._lock:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self.path.open("ab") as f:
                f.write(data)
                size = f.tell()
            if size > self.max_bytes:
                os.replace(self.path, self.path.with_name(self.path.name + ".1"))


def local_metrics_file(environ: Mapping[str, str] | None = None) -> Path:
    """Where ``streamer local`` keeps its metrics: ``$STREAMER_LOCAL_METRICS_FILE``, else beside the local
    stack's state file (``streamer.observe.localstate``: ``$STREAMER_LOCAL_STATE_FILE``, else
    ``$XDG_STATE_HOME/streamer/local.json``, else ``~/.local/state/streamer/local.json``) as
    ``<its stem>.metrics.jsonl`` — so whoever finds the stack finds its metrics."""
    env = os.environ if environ is None else environ
    if env.get(LOCAL_FILE_ENV):
        return Path(env[LOCAL_FILE_ENV])
    if env.get(Env.LOCAL_STATE_FILE):
        state = Path(env[Env.LOCAL_STATE_FILE])
    else:
        base = Path(env["XDG_STATE_HOME"]) if env.get("XDG_STATE_HOME") else Path.home() / ".local" / "state"
        state = base / "streamer" / "local.json"
    return state.with_name(state.stem + ".metrics.jsonl")


# -- reading ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Series:
    """The values of one metric with one set of dimension values, read back from EMF lines."""

    timestamp: float  # seconds since the epoch
    name: str
    unit: str
    dimensions: tuple[tuple[str, str], ...]  # the most specific dimension set, ``service`` included
    values: tuple[float, ...]


def parse_emf(doc: Mapping[str, Any]) -> list[Series]:
    """The metrics of one EMF document (``ValueError`` when it is not one)."""
    meta = doc.get("_aws")
    if not isinstance(meta, Mapping) or not isinstance(meta.get("CloudWatchMetrics"), list):
        raise ValueError("not an EMF document (no _aws.CloudWatchMetrics)")
    ts = float(meta.get("Timestamp", 0)) / 1000.0
    out: list[Series] = []
    for directive in meta["CloudWatchMetrics"]:
        sets = [list(s) for s in directive.get("Dimensions", [])]
        keys = max(sets, key=len) if sets else []
        dims = tuple((k, str(doc.get(k, ""))) for k in keys)
        for m in directive.get("Metrics", []):
            raw = doc.get(m["Name"])
            values = raw if isinstance(raw, list) else [raw]
            nums = tuple(float(v) for v in values if isinstance(v, int | float) and not isinstance(v, bool))
            out.append(Series(ts, m["Name"], str(m.get("Unit", "None")), dims, nums))
    return out


def read_local(
    path: Path | None = None, *, since: float | None = None, until: float | None = None
) -> list[Series]:
    """The series in the local metrics file (and its rotated ``.1``), oldest first, optionally in a window
    of epoch seconds; unreadable lines are skipped (a line being written as we read)."""
    target = path or local_metrics_file()
    out: list[Series] = []
    for file in (target.with_name(target.name + ".1"), target):
        try:
            text = file.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            continue
        for line in text.splitlines():
            try:
                series = parse_emf(json.loads(line))
            except (ValueError, TypeError, KeyError):
                continue
            out.extend(
                s for s in series if (since is None or s.timestamp >= since) and (until is None or s.timestamp < until)
            )
    return out


def _percentile(sorted_values: list[float], q: float) -> float:
    """Nearest-rank percentile (what CloudWatch's pNN statistics approximate)."""
    rank = max(1, math.ceil(q / 100.0 * len(sorted_values)))
    return sorted_values[rank - 1]


def summarize(
    series: Iterable[Series],
    *,
    window_seconds: float = 3600.0,
    bucket_seconds: float = 60.0,
    now: float | None = None,
    by: tuple[str, ...] | None = None,
) -> list[dict[str, Any]]:
    """Aggregate series over the last ``window_seconds``: one row per metric and dimension values.

    Each row: ``name``, ``unit``, ``dimensions`` (dict, without ``service``), ``samples`` (number of values),
    ``sum``, ``min``, ``max``, ``p50``, ``p99`` and ``buckets`` — ``[[bucket start (epoch s), sum], …]`` of
    ``bucket_seconds`` each, oldest first, empty buckets included (a plot needs them). ``by`` keeps only those
    dimensions (``by=()`` totals over all of them). Rows are sorted by name, then dimensions.
    """
    end = time.time() if now is None else now
    start = end - window_seconds
    n_buckets = max(1, math.ceil(window_seconds / bucket_seconds))
    first = end - n_buckets * bucket_seconds
    groups: dict[tuple[str, str, tuple[tuple[str, str], ...]], list[tuple[float, float]]] = defaultdict(list)
    for s in series:
        if not start <= s.timestamp <= end:
            continue
        dims = tuple((k, v) for k, v in s.dimensions if k != "service" and (by is None or k in by))
        groups[(s.name, s.unit, dims)].extend((s.timestamp, v) for v in s.values)
    rows: list[dict[str, Any]] = []
    for (name, unit, dims), pairs in sorted(groups.items()):
        values = sorted(v for _, v in pairs)
        buckets = [0.0] * n_buckets
        for ts, v in pairs:
            buckets[min(n_buckets - 1, max(0, int((ts - first) // bucket_seconds)))] += v
        rows.append(
            {
                "name": name,
                "unit": unit,
                "dimensions": dict(dims),
                "samples": len(values),
                "sum": sum(values),
                "min": values[0] if values else None,
                "max": values[-1] if values else None,
                "p50": _percentile(values, 50) if values else None,
                "p99": _percentile(values, 99) if values else None,
                "buckets": [[first + i * bucket_seconds, b] for i, b in enumerate(buckets)],
            }
        )
    return rows


_STATUS_OF = {
    REQUESTS_SUCCEEDED.name: "SUCCEEDED",
    REQUESTS_FAILED.name: "FAILED",
    REQUESTS_CANCELLED.name: "CANCELLED",
    REQUESTS_TIMED_OUT.name: "TIMED_OUT",
}


def overview(
    series: Iterable[Series] | None = None, *, window_seconds: float = 3600.0, now: float | None = None
) -> dict[str, Any]:
    """The console's overview figures from the metrics alone (``series`` default: :func:`read_local`).

    ``by_status``: requests that ended in the window per terminal status, plus ``STARTED`` and ``SUBMITTED``;
    ``by_workflow``: requests submitted per workflow; ``per_minute``: ``[[minute start (epoch s), submitted],
    …]`` oldest first, empty minutes included; ``durations``: ``{"workflow", "step", "count", "p50_ms",
    "p99_ms"}`` per workflow (``RequestDuration``, ``step`` None) and per step (``StepDuration``,
    ``workflow`` None); ``connects_refused`` per reason; ``rate_limited``, ``pushes_to_gone_connections``,
    ``stream_records_retried`` totals. ``since``/``until`` are epoch seconds.
    """
    end = time.time() if now is None else now
    window = list(read_local(since=end - window_seconds) if series is None else series)
    rows = summarize(window, window_seconds=window_seconds, bucket_seconds=60.0, now=end)

    def total(name: str) -> float:
        return float(sum(r["sum"] for r in rows if r["name"] == name))

    by_status: dict[str, int] = {}
    by_workflow: dict[str, int] = {}
    n_minutes = max(1, math.ceil(window_seconds / 60.0))
    per_minute = [[end - (n_minutes - i) * 60.0, 0.0] for i in range(n_minutes)]  # summarize's buckets
    durations: list[dict[str, Any]] = []
    refused: dict[str, int] = {}
    for r in rows:
        name, dims = r["name"], r["dimensions"]
        if name in _STATUS_OF:
            by_status[_STATUS_OF[name]] = by_status.get(_STATUS_OF[name], 0) + int(r["sum"])
        elif name == REQUESTS_STARTED.name:
            by_status["STARTED"] = by_status.get("STARTED", 0) + int(r["sum"])
        elif name == REQUESTS_SUBMITTED.name:
            by_status["SUBMITTED"] = by_status.get("SUBMITTED", 0) + int(r["sum"])
            wf = dims.get("workflow", "")
            by_workflow[wf] = by_workflow.get(wf, 0) + int(r["sum"])
            for i, (_, v) in enumerate(r["buckets"]):
                per_minute[i][1] += v
        elif name in (REQUEST_DURATION.name, STEP_DURATION.name) and r["samples"]:
            durations.append(
                {
                    "workflow": dims.get("workflow"),
                    "step": dims.get("step"),
                    "count": r["samples"],
                    "p50_ms": r["p50"],
                    "p99_ms": r["p99"],
                }
            )
        elif name == CONNECTS_REFUSED.name:
            refused[dims.get("reason", "")] = refused.get(dims.get("reason", ""), 0) + int(r["sum"])
    return {
        "window_seconds": window_seconds,
        "since": end - window_seconds,
        "until": end,
        "by_status": by_status,
        "by_workflow": by_workflow,
        "per_minute": [[m, int(v)] for m, v in per_minute],
        "durations": durations,
        "connects_refused": refused,
        "rate_limited": int(total(MESSAGES_RATE_LIMITED.name)),
        "pushes_to_gone_connections": int(total(PUSHES_TO_GONE_CONNECTIONS.name)),
        "stream_records_retried": int(total(STREAM_RECORDS_RETRIED.name)),
    }
