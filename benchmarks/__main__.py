"""``make bench`` / ``python -m benchmarks [--full] [NAME ...]``.

Machines here are noisy (2 shared cores), so no benchmark prints an absolute verdict: each measures a
baseline in the same run, interleaved with the subject where it can, and reports the subject/baseline ratio.
Absolute numbers are printed for context only.

Without names, the quick mode (under 2 minutes; CI's smoke test) runs ``goals`` (issue 11's goal table, see
:mod:`benchmarks.suite`) at small sizes plus the in-process micro-benchmarks; ``--full`` runs ``goals`` at the
issue's sizes and every registered benchmark (the slow ``local_roundtrip`` and the console's too). The goal
table and every figure go to ``.artifacts/bench/result.json`` (``--json``), the plots next to it.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import statistics
import sys
import time
import tracemalloc
from collections.abc import Callable
from typing import Any

os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
os.environ.setdefault("AWS_ACCESS_KEY_ID", "bench")
os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "bench")

RESULTS: list[dict[str, Any]] = []


def interleaved(
    baseline: Callable[[], None], subject: Callable[[], None], rounds: int, inner: int
) -> tuple[float, float]:
    """Median seconds per call of each, alternating rounds so drift hits both alike."""
    b, s = [], []
    for _ in range(rounds):
        t = time.perf_counter()
        for _ in range(inner):
            baseline()
        b.append((time.perf_counter() - t) / inner)
        t = time.perf_counter()
        for _ in range(inner):
            subject()
        s.append((time.perf_counter() - t) / inner)
    return statistics.median(b), statistics.median(s)


def report(name: str, baseline_name: str, base: float, subj: float, unit: str = "s") -> None:
    ratio = subj / base if base else float("inf")
    RESULTS.append(
        {
            "benchmark": name,
            "baseline": baseline_name,
            "baseline_value": base,
            "subject_value": subj,
            "ratio": ratio,
            "unit": unit,
        }
    )
    fmt = (lambda v: f"{v * 1e6:9.1f} µs") if unit == "s" else (lambda v: f"{v / 1024:9.1f} KiB")
    print(f"{name:<38} {fmt(subj)}  vs {baseline_name:<28} {fmt(base)}  ratio {ratio:6.2f}x", flush=True)


def _service() -> Any:
    import boto3
    from tests.functional.conftest import create_tables

    from streamer.aws.connections import ConnectionManager
    from streamer.aws.executions import Executions
    from streamer.aws.store import ConnectionStore, EventStore, RequestStore
    from streamer.config import Settings
    from streamer.service import RequestService

    ddb = boto3.client("dynamodb")
    create_tables(ddb)
    s = Settings(rate_limit_per_minute=10**9)
    conns = ConnectionStore(s.connections_table, ddb)
    return ddb, RequestService(
        s,
        connections=conns,
        requests=RequestStore(s.requests_table, ddb),
        events=EventStore(s.events_table, ddb),
        manager=ConnectionManager("http://127.0.0.1:9"),
        executions=Executions(s.state_machine_arn_prefix),
    )


def bench_parse() -> None:
    """Protocol validation cost: parse_action vs bare json.loads of the same frame."""
    from streamer.protocol import parse_action

    frame = json.dumps(
        {"action": "submit", "workflow": "echo", "request_id": "abc-123", "payload": {"message": "x" * 200, "steps": 5}}
    )
    base, subj = interleaved(lambda: json.loads(frame), lambda: parse_action(frame), rounds=15, inner=2000)
    report("parse_action(submit)", "json.loads", base, subj)


def bench_event_append() -> None:
    """A progress event's store cost: RequestService.progress's writes (seq claim UpdateItem + event PutItem; no
    connection, so nothing is pushed) vs a plain put_item (moto, in-process)."""
    from moto import mock_aws

    with mock_aws():
        ddb, svc = _service()
        n = iter(range(10**9))

        def plain() -> None:
            ddb.put_item(
                TableName="streamer-events",
                Item={"request_key": {"S": "plain"}, "seq": {"N": str(next(n) + 1)}, "body": {"S": "{}"}},
            )

        ref = svc.submit("bench", "echo", {}, "seqd").request.ref
        svc.connections.for_user = lambda user_id, now=None: []  # store cost only: no push

        def append() -> None:
            svc.progress(ref, "step", 50, "")

        base, subj = interleaved(plain, append, rounds=10, inner=50)
        report("progress event (seq claim+put)", "put_item", base, subj)


def bench_router_message() -> None:
    """The $default route's cost before the action: handle_message(ping) (who is asking + rate limit in one
    UpdateItem) vs one GetItem of the connection row (moto, in-process)."""
    from moto import mock_aws

    from streamer.models import Connection
    from streamer.router import Router

    with mock_aws():
        _, svc = _service()
        svc.connections.put(Connection(connection_id="c", user_id="u", connected_at=0, expires_at=2**31))
        router = Router(svc, dict, rate_limit_per_minute=10**9)
        base, subj = interleaved(
            lambda: svc.connections.get("c"), lambda: router.handle_message("c", '{"action":"ping"}'), 10, 50
        )
        report("router.handle_message(ping)", "one GetItem", base, subj)


def bench_router_memory() -> None:
    """Peak memory of routing 500 submits vs 500 pings (tracemalloc; moto in-process)."""
    from moto import mock_aws

    from streamer.router import Router

    class Wf:
        name, description, payload_model = "echo", "", None

    with mock_aws():
        _, svc = _service()
        from streamer.models import Connection

        svc.connections.put(Connection(connection_id="c", user_id="u", connected_at=0, expires_at=2**31))
        router = Router(svc, lambda: {"echo": Wf()})
        peaks = []
        for make in (
            lambda i: '{"action":"ping"}',
            lambda i: json.dumps({"action": "submit", "workflow": "echo", "payload": {"i": i}}),
        ):
            tracemalloc.start()
            for i in range(500):
                router.handle("c", "u", make(i))
            peaks.append(tracemalloc.get_traced_memory()[1])
            tracemalloc.stop()
        report("router: 500 submits (peak memory)", "500 pings", peaks[0], peaks[1], unit="B")


def bench_moto_speedups() -> None:
    """The local stack's DynamoDB in moto (``streamer.local.moto_server``: ``speed_up_dynamodb_queries``,
    ``speed_up_dynamodb_responses``, ``speed_up_dynamodb_updates``, ``speed_up_dynamodb_validation``,
    ``speed_up_dynamodb_conditions`` and the request ids of ``speed_up_dispatch``) vs moto's own, in one process,
    interleaved (the patches switched per call): a request's events (``EventStore.after``; 5,000 events of 500
    requests in the table), a user's connections (``ConnectionStore.for_user``, the ``by_user`` index; 2,000 rows),
    a ``ping`` through the router (one ``UpdateItem``) and a request's life in the service (submit, two progress
    events, the result, a replay; moto in-process, no push)."""
    from moto import mock_aws
    from moto.core.responses import ActionResult
    from moto.dynamodb.comparisons import ConditionExpressionParser
    from moto.dynamodb.models.table import Table
    from moto.dynamodb.parsing.ast_nodes import DepthFirstTraverser
    from moto.dynamodb.parsing.expressions import UpdateExpressionParser
    from moto.dynamodb.parsing.validators import UpdateExpressionValidator
    from moto.moto_api._internal.moto_random import MotoRandom

    from streamer.local.moto_atomic import serialize_dynamodb
    from streamer.local.moto_server import (
        speed_up_dispatch,
        speed_up_dynamodb_conditions,
        speed_up_dynamodb_queries,
        speed_up_dynamodb_responses,
        speed_up_dynamodb_updates,
        speed_up_dynamodb_validation,
    )
    from streamer.models import Connection
    from streamer.protocol import RequestStatus
    from streamer.router import Router

    speed_up_dispatch()  # its listings in both (the local moto server has them either way); its request ids switched
    serialize_dynamodb()
    speed_up_dynamodb_queries()
    speed_up_dynamodb_responses()
    speed_up_dynamodb_updates()
    speed_up_dynamodb_validation()
    speed_up_dynamodb_conditions()
    slots: tuple[tuple[Any, str], ...] = (
        (Table, "query"),
        (ActionResult, "execute_result"),
        (UpdateExpressionParser, "make"),
        (ConditionExpressionParser, "_lex_condition_expression"),
        (UpdateExpressionValidator, "__init__"),
        (UpdateExpressionValidator, "validate"),
        (DepthFirstTraverser, "nodes_to_be_processed"),
        (DepthFirstTraverser, "process"),
        (MotoRandom, "get_random_string"),
    )
    fast = tuple(owner.__dict__[name] for owner, name in slots)

    def own(patched: Any) -> Any:
        if isinstance(patched, classmethod):  # make: the original classmethod, kept on the function
            return patched.__func__._streamer_original
        original = getattr(patched, "_streamer_original", None)
        return original if original is not None else patched.__wrapped__  # functools.wraps: query, execute_result

    moto_own = tuple(own(f) for f in fast)

    def put(patches: tuple[Any, ...]) -> None:
        for (owner, name), value in zip(slots, patches, strict=True):
            setattr(owner, name, value)

    with mock_aws():
        ddb, svc = _service()
        for i in range(5000):
            ddb.put_item(
                TableName=svc.events.table,
                Item={
                    "request_key": {"S": f"k{i % 500}"},
                    "seq": {"N": str(i // 500 + 1)},
                    "body": {"S": "{}"},
                    "created_at": {"N": "0"},
                },
            )
        for i in range(2000):
            ddb.put_item(
                TableName=svc.connections.table,
                Item={
                    "connection_id": {"S": f"c{i}"},
                    "user_id": {"S": f"u{i % 400}"},
                    "connected_at": {"N": "0"},
                    "expires_at": {"N": str(2**31)},
                },
            )
        svc.connections.put(Connection(connection_id="pinger", user_id="p", connected_at=0, expires_at=2**31))
        router = Router(svc, dict, rate_limit_per_minute=10**9)
        n = iter(range(10**9))

        def life() -> None:
            req = svc.submit("life", "echo", {"message": "x"}, f"r{next(n)}").request
            svc.requests.mark_running(req.ref, "arn:x", svc.now())
            svc.progress(req.ref, "echo", 50, "")
            svc.progress(req.ref, "echo", 100, "")
            svc.finish(req.ref, RequestStatus.SUCCEEDED, output={"ok": True})
            svc.replay("life", req.ref.request_id, 0)

        def using(patches: tuple[Any, ...], call: Callable[[], Any]) -> Callable[[], None]:
            def run() -> None:
                put(patches)
                call()

            return run

        try:
            for label, call, inner in (
                ("events Query, 5,000 in table", lambda: list(svc.events.after("k7", 0)), 20),
                ("by_user Query, 2,000 rows", lambda: svc.connections.for_user("u7"), 20),
                ("ping (router, one UpdateItem)", lambda: router.handle_message("pinger", '{"action":"ping"}'), 50),
                ("request life (service, no push)", life, 5),
            ):
                base, subj = interleaved(using(moto_own, call), using(fast, call), rounds=7, inner=inner)
                report(f"local moto: {label}", "moto's own", base, subj)
        finally:
            put(fast)


def bench_status_poller() -> None:
    """The local EventBridge stand-in's poll (``ExecutionEventsPoller.poll_once``, moto's Step Functions
    in-process; the template's rule: FAILED, TIMED_OUT, ABORTED) of a state machine with 1,000 ended
    executions vs one with none, for a history of successes and one of failures: a poll reads what changed
    (the newest executions and the running ones), so the ratio stays near 1 however long ``streamer local``
    has run (before: every ended execution of a status the rule matches, every poll — twice a second)."""
    import json as json_
    import threading

    import boto3
    from moto import mock_aws

    from streamer.local.eventbridge import DETAIL_TYPE, ExecutionEventsPoller, RuleConfig, TargetConfig
    from streamer.local.invoke import InvokeResult
    from streamer.local.moto_server import speed_up_dispatch, speed_up_dynamodb_responses

    speed_up_dispatch()  # as the local stack's moto server answers (ListExecutions without moto's serializer)
    speed_up_dynamodb_responses()
    history = 1000
    rule = RuleConfig(
        "Ended",
        {
            "source": ["aws.states"],
            "detail-type": [DETAIL_TYPE],
            "detail": {"status": ["FAILED", "TIMED_OUT", "ABORTED"]},
        },
        (TargetConfig("Fn", 0),),
    )
    ends = {
        "SUCCEEDED": {"StartAt": "P", "States": {"P": {"Type": "Pass", "End": True}}},
        "FAILED": {"StartAt": "F", "States": {"F": {"Type": "Fail", "Error": "Boom"}}},
    }
    logging.getLogger("moto").setLevel(logging.CRITICAL)  # a line per failed execution
    for status, definition in ends.items():
        with mock_aws(config={"stepfunctions": {"execute_state_machine": True}}):
            sfn = boto3.client("stepfunctions")
            arns = {
                name: sfn.create_state_machine(
                    name=name, definition=json_.dumps(definition), roleArn="arn:aws:iam::123456789012:role/r"
                )["stateMachineArn"]
                for name in ("long", "fresh")
            }
            for i in range(history):
                sfn.start_execution(stateMachineArn=arns["long"], name=f"e{i}")
            pages = sfn.get_paginator("list_executions")
            ended = {"stateMachineArn": arns["long"], "statusFilter": status}
            while sum(len(p["executions"]) for p in pages.paginate(**ended)) < history:
                threading.Event().wait(0.2)
            # The poller lists again what started in the 0.25 s before the newest start it saw: a pause, then
            # one execution more, so that what is compared is the history, not a burst's tail.
            threading.Event().wait(0.3)
            sfn.start_execution(stateMachineArn=arns["long"], name="last")
            threading.Event().wait(0.3)
            pollers = {
                name: ExecutionEventsPoller(
                    [rule], sfn=sfn, state_machine_arns=[arn], invoke=lambda f, e: InvokeResult(True)
                )
                for name, arn in arns.items()
            }
            for p in pollers.values():
                p.prime()
            base, subj = interleaved(pollers["fresh"].poll_once, pollers["long"].poll_once, rounds=5, inner=4)
        report(f"status poll, {history} {status.lower()} before", "no execution before", base, subj)


def bench_local_roundtrip() -> None:
    """Through `streamer local` (subprocess, real sockets): a whole echo request (submit → stream → Step
    Functions → step → notify → result) vs a ping round trip on the same connection."""
    import asyncio

    from benchmarks._procs import SECRET, streamer_local
    from streamer.auth import mint_token
    from streamer.client import StreamerClient

    async def main(url: str) -> tuple[list[float], list[float]]:
        pings, requests = [], []
        async with await StreamerClient.connect(url, mint_token(SECRET, "bench")) as c:
            await c.submit("echo", {"message": "warm-up", "steps": 1})  # cold starts out of the way
            await asyncio.sleep(2)
            for i in range(12):
                t = time.perf_counter()
                await c.call({"action": "ping"})
                pings.append(time.perf_counter() - t)
                t = time.perf_counter()
                rid = await c.submit("echo", {"message": str(i), "steps": 1})
                async for _ in c.events(rid, timeout=60):
                    pass
                requests.append(time.perf_counter() - t)
        return pings, requests

    with streamer_local() as stack:
        pings, reqs = asyncio.run(main(stack.ws))
    report("local: echo request, submit→result", "ping round trip", statistics.median(pings), statistics.median(reqs))


#: Every benchmark by name; ``"module:function"`` entries are imported when run (the console's are theirs).
BENCHMARKS: dict[str, Callable[[], None] | str] = {
    "parse": bench_parse,
    "append": bench_event_append,
    "router_message": bench_router_message,
    "router_memory": bench_router_memory,
    "moto_speedups": bench_moto_speedups,
    "status_poller": bench_status_poller,
    "local_roundtrip": bench_local_roundtrip,
    "sdk_floor": "benchmarks.sdk_floor:bench",
    "console_list": "benchmarks.console:bench_console_list",
    "console_execution": "benchmarks.console:bench_console_execution",
}
#: What the quick mode runs besides ``goals`` (in-process, seconds each).
QUICK = ("parse", "append", "router_message", "router_memory", "moto_speedups", "status_poller")
DEFAULT_OUT = os.path.join(".artifacts", "bench")


def run_benchmark(name: str) -> None:
    """Run one registered benchmark; one that breaks is reported and recorded, and the run goes on."""
    entry = BENCHMARKS[name]
    try:
        if isinstance(entry, str):
            import importlib

            module, _, func = entry.partition(":")
            entry = getattr(importlib.import_module(module), func)
        assert callable(entry)
        entry()
    except Exception as exc:
        print(f"{name:<38} FAILED: {type(exc).__name__}: {exc}", flush=True)
        RESULTS.append({"benchmark": name, "failed": f"{type(exc).__name__}: {exc}"})


def run_goals(full: bool) -> dict[str, Any]:
    from benchmarks.suite import FULL, QUICK, Suite, table

    result = Suite(FULL if full else QUICK).run()
    print("\n" + table(result["goals"]), flush=True)
    print("\nwhat runs out first:", flush=True)
    for name, sc in result["scenarios"].items():
        if sc.get("exhausted_first"):
            print(f"  {name}: {sc['exhausted_first']}", flush=True)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.splitlines()[0])
    names = ["goals", *BENCHMARKS]
    parser.add_argument("names", nargs="*", metavar="NAME", help=f"any of {names}; default: the mode's set")
    parser.add_argument("--full", action="store_true", help="the issue's sizes and every benchmark (long)")
    parser.add_argument("--json", default=os.path.join(DEFAULT_OUT, "result.json"), help="result file")
    parser.add_argument("--plots", default=DEFAULT_OUT, help="directory for the PNG plots (goals only)")
    args = parser.parse_args(argv)
    # SIGTERM (a CI timeout, kill PID) unwinds like Ctrl-C, so every started stack and server is stopped.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    unknown = [n for n in args.names if n not in names]
    if unknown:
        parser.error(f"unknown benchmark(s) {unknown}; known: {names}")
    sys.path.insert(0, os.getcwd())
    chosen = args.names or (names if args.full else ["goals", *QUICK])
    mode = "full" if args.full else "quick"
    out: dict[str, Any] = {"mode": mode, "goals": [], "micro": RESULTS}
    os.makedirs(os.path.dirname(args.json) or ".", exist_ok=True)

    def save() -> None:
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump(out, fh, indent=2)

    if "goals" in chosen:
        out.update(run_goals(args.full))
        save()  # the goals are kept even if a micro-benchmark below breaks the process
    for name in chosen:
        if name != "goals":
            run_benchmark(name)
    save()
    print(f"\nresult: {args.json}", flush=True)
    if out.get("series"):
        from pathlib import Path

        from benchmarks.plots import write_plots

        for path in write_plots(out, Path(args.plots)):
            print(f"plot: {path}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
