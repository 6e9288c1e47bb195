"""``streamer cost WORKFLOW [--payload JSON] [--json]``: what one request of a workflow costs on AWS.

It runs the workflow once, for real, in this process: moto in-process (DynamoDB with the template's tables
and streams, Step Functions executing the state machine, the Management API) and the platform's own
handlers — ``$connect``, ``$default`` (the submit), the stream router (fed the requests table's INSERT
record, as the template's event source mapping filters), the step runner and notify (served as Lambda
functions to moto's interpreter, as :class:`streamer.testing.LocalWorkflows` does). A botocore event hook
on the default session counts every AWS call the handlers make and sizes its items; the harness's own calls
go through a separate session and are not counted. Then :mod:`streamer.cost` prices the counts for a
Standard and an Express state machine.

What is measured here and what is not: AWS calls, items and their sizes, WebSocket messages, state
transitions are exact for this run. Lambda durations are this machine's, in-process against moto — a stand-in
for Lambda's (on AWS each call adds network round trips, so real durations are longer); they are shown so the
GB-second lines can be re-priced with real figures.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from streamer.config import LOCAL_REGION, Env
from streamer.cost import (
    PRICES,
    PRICES_AS_OF,
    WS_MESSAGE_BYTES,
    RequestCounts,
    break_even,
    cost_of,
    item_size,
    read_units,
    write_units,
)

__all__ = ["DESCRIPTION", "HELP", "arguments", "measure", "report"]

HELP = "what one request of a workflow costs on AWS (runs it once, in-process, and prices the counts)"
DESCRIPTION = f"""Run one request of WORKFLOW through the platform's handlers on in-process moto, count what it
uses (AWS calls, DynamoDB units, WebSocket messages, Lambda invocations and durations, state transitions) and
price it for a Standard and an Express state machine, with the break-even. Prices: us-east-1 list prices as of
{PRICES_AS_OF} (streamer.cost) — verify them before relying on them."""

_COUNTED_SERVICES = frozenset({"dynamodb", "stepfunctions", "apigatewaymanagementapi", "events"})
_REGION = LOCAL_REGION
_DOMAIN = f"abcdef1234.execute-api.{_REGION}.amazonaws.com"
_ENDPOINT = f"https://{_DOMAIN}/prod"
_SECRET = "cost-model-secret-" + "x" * 32


class _Meter:
    """Counts AWS calls and DynamoDB request units from botocore's ``provide-client-params``/``after-call``."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.calls: Counter[str] = Counter()
        self.read_units = 0.0
        self.write_units = 0.0
        self.ws_messages = 0
        self.on = False

    def reset(self) -> None:
        with self.lock:
            self.calls.clear()
            self.read_units = self.write_units = 0.0
            self.ws_messages = 0

    def params(self, params: dict[str, Any], model: Any, **_: Any) -> None:
        service = model.service_model.service_name
        if not self.on or service not in _COUNTED_SERVICES:
            return
        op = model.name
        with self.lock:
            self.calls[f"{service}.{op}"] += 1
            if service == "apigatewaymanagementapi" and op == "PostToConnection":
                data = params.get("Data", b"")
                self.ws_messages += max(1, math.ceil(len(data) / WS_MESSAGE_BYTES))
            if service != "dynamodb":
                return
            if op == "PutItem":
                self.write_units += write_units(item_size(params["Item"]))
            elif op in ("UpdateItem", "DeleteItem"):
                # The item's size after the write is not in the call: key + new values (items stay small).
                size = item_size(params["Key"]) + sum(
                    item_size({k: v}) for k, v in (params.get("ExpressionAttributeValues") or {}).items()
                )
                self.write_units += write_units(size)
            elif op == "TransactWriteItems":
                for entry in params["TransactItems"]:
                    ((kind, body),) = entry.items()
                    if kind == "ConditionCheck":
                        self.read_units += read_units(item_size(body["Key"]), transactional=True)
                    else:
                        size = item_size(body.get("Item") or body.get("Key") or {})
                        self.write_units += write_units(size, transactional=True)
            elif op == "BatchWriteItem":
                for requests in params["RequestItems"].values():
                    for r in requests:
                        body = r.get("PutRequest", {}).get("Item") or r.get("DeleteRequest", {}).get("Key", {})
                        self.write_units += write_units(item_size(body))

    def after(self, parsed: dict[str, Any], model: Any, **_: Any) -> None:
        if not self.on or model.service_model.service_name != "dynamodb":
            return
        op = model.name
        if op == "GetItem":
            size = item_size(parsed.get("Item") or {})
        elif op in ("Query", "Scan"):
            size = sum(item_size(i) for i in parsed.get("Items") or [])
        elif op == "BatchGetItem":
            size = sum(item_size(i) for items in (parsed.get("Responses") or {}).values() for i in items)
        else:
            return
        with self.lock:
            # Our reads are strongly consistent (the stores ask for ConsistentRead) or on keys just written.
            self.read_units += read_units(size)


@contextmanager
def _environment(meter: _Meter) -> Iterator[None]:
    """The handlers' environment (settings, secret, endpoint) and the meter on the default boto3 session."""
    import boto3

    keys = (Env.JWT_SECRET, Env.APIGW_ENDPOINT, Env.REPLY_ROUTE_RESPONSE, "AWS_DEFAULT_REGION", "AWS_ACCESS_KEY_ID",
            "AWS_SECRET_ACCESS_KEY")  # fmt: skip
    saved = {k: os.environ.get(k) for k in keys}
    # As the template deploys the router: its reply is the $default route's route response.
    os.environ.update({Env.JWT_SECRET: _SECRET, Env.APIGW_ENDPOINT: _ENDPOINT, Env.REPLY_ROUTE_RESPONSE: "$default",
                       "AWS_DEFAULT_REGION": _REGION})  # fmt: skip
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "cost")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "cost")
    boto3.setup_default_session(region_name=_REGION)
    events = boto3.DEFAULT_SESSION.events  # type: ignore[union-attr]  # set just above
    events.register("provide-client-params", meter.params)
    events.register("after-call", meter.after)
    from streamer.handlers import _runtime

    _runtime.reset()
    logger = _runtime.get_logger()
    level = logger.log_level
    logger.setLevel("WARNING")  # the handlers' info lines are not the report
    from streamer import metrics

    metrics.set_sink(lambda _line: None)  # nor are the handlers' metric lines (EMF): dropped, not printed
    try:
        with contextlib.redirect_stdout(sys.stderr):  # anything else a handler prints stays off the report
            yield
    finally:
        metrics.set_sink(None)
        logger.setLevel(level)
        _runtime.reset()
        events.unregister("provide-client-params", meter.params)
        events.unregister("after-call", meter.after)
        boto3.DEFAULT_SESSION = None
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


class _Timed:
    """A handler that records its invocations and billed milliseconds (rounded up to 1 ms, as Lambda bills)."""

    def __init__(self, name: str, fn: Callable[[dict[str, Any], Any], Any], counts: RequestCounts) -> None:
        self.name, self.fn, self.counts = name, fn, counts
        self.lock = threading.Lock()

    def __call__(self, event: dict[str, Any], context: Any) -> Any:
        t = time.perf_counter()
        try:
            return self.fn(event, context)
        finally:
            ms = math.ceil((time.perf_counter() - t) * 1000)
            with self.lock:
                c = self.counts
                c.lambda_invocations[self.name] = c.lambda_invocations.get(self.name, 0) + 1
                c.lambda_billed_ms[self.name] = c.lambda_billed_ms.get(self.name, 0) + ms


def _ws_event(route: str, connection_id: str, **extra: Any) -> dict[str, Any]:
    ctx = {"routeKey": route, "eventType": {"$connect": "CONNECT"}.get(route, "MESSAGE"), "stage": "prod",
           "connectionId": connection_id, "domainName": _DOMAIN,
           "apiId": "abcdef1234", "requestId": f"cost-{route}", "connectedAt": int(time.time() * 1000),
           "requestTimeEpoch": int(time.time() * 1000), "identity": {"sourceIp": "203.0.113.10"}}  # fmt: skip
    return {"requestContext": ctx, "isBase64Encoded": False, **extra}


def measure(workflow: str, payload: dict[str, Any], *, timeout: float = 120.0) -> RequestCounts:
    """Run one ``workflow`` request through the platform's handlers on in-process moto; its counts."""
    import boto3

    from streamer.auth import mint_token
    from streamer.config import Settings
    from streamer.deploy.template import functions, load_template, table_definitions
    from streamer.handlers import connect, notify, router, step_runner, stream_router
    from streamer.local.plan import local_table_names
    from streamer.local.stream_poller import lambda_record
    from streamer.testing import LocalWorkflows

    template = load_template()
    specs = functions(template)
    by_module = {spec.module: logical_id for logical_id, spec in specs.items()}
    counts = RequestCounts(workflow=workflow)
    counts.lambda_memory_mb = {fn: spec.memory for fn, spec in specs.items()}

    def timed(module: Any) -> _Timed:
        fn = by_module[module.__name__]
        return _Timed(fn, module.handler, counts)

    meter = _Meter()

    class Workflows(LocalWorkflows):
        def _step_runner(self) -> Callable[[dict[str, Any], Any], dict[str, Any]]:
            return timed(step_runner)

    # moto drops boto3's default session when it starts: the meter goes on the one made after it.
    with Workflows(notify=timed(notify)) as local, _environment(meter):
        own = boto3.session.Session(region_name=_REGION)  # the harness's calls: not counted
        ddb, sfn = own.client("dynamodb"), own.client("stepfunctions")
        # botocore 1.44 resolves DynamoDB Streams to a host moto 5.2.5 does not route: name moto's one.
        streams = own.client("dynamodbstreams", endpoint_url=f"https://streams.dynamodb.{_REGION}.amazonaws.com")
        settings = Settings.from_env()  # the local names: streamer-connections, … (streamer.local.plan)
        table_names = local_table_names(template)
        for logical_id, spec in table_definitions(template).items():
            kwargs = dict(spec)
            ttl = kwargs.pop("TimeToLiveSpecification", None)
            ddb.create_table(TableName=table_names[logical_id], **kwargs)
            if ttl:
                ddb.update_time_to_live(TableName=table_names[logical_id], TimeToLiveSpecification=ttl)
        local.deploy(workflow)

        cid = "costConnection="
        token = mint_token(_SECRET, "cost-user")
        meter.on = True
        headers = {"Sec-WebSocket-Protocol": f"streamer.v1, bearer.{token}"}
        conn = connect.handler(_ws_event("$connect", cid, headers=headers), None)
        if conn.get("statusCode") != 200:
            raise RuntimeError(f"$connect refused ({conn.get('statusCode')})")
        meter.reset()
        counts.lambda_invocations.clear()
        counts.lambda_billed_ms.clear()

        frame = json.dumps({"action": "submit", "workflow": workflow, "payload": payload})
        counts.ws_messages = max(1, math.ceil(len(frame.encode()) / WS_MESSAGE_BYTES))
        started = time.monotonic()
        answer = timed(router)(_ws_event("$default", cid, body=frame), None)
        if isinstance(answer, dict) and isinstance(answer.get("body"), str):  # the route response: a message too
            counts.ws_messages += max(1, math.ceil(len(answer["body"].encode()) / WS_MESSAGE_BYTES))

        stream_arn = ddb.describe_table(TableName=settings.requests_table)["Table"]["LatestStreamArn"]
        records: list[dict[str, Any]] = []
        for shard in streams.describe_stream(StreamArn=stream_arn)["StreamDescription"]["Shards"]:
            it = streams.get_shard_iterator(StreamArn=stream_arn, ShardId=shard["ShardId"],
                                            ShardIteratorType="TRIM_HORIZON")["ShardIterator"]  # fmt: skip
            got = streams.get_records(ShardIterator=it)["Records"]
            counts.stream_reads += 1
            records += [lambda_record(r, stream_arn, _REGION) for r in got if r.get("eventName") == "INSERT"]
        if not records:
            raise RuntimeError("the submit stored no request (no INSERT on the requests table's stream)")
        timed(stream_router)({"Records": records}, None)

        listed = sfn.list_executions(stateMachineArn=local.deployed[workflow])["executions"]
        arns = [e["executionArn"] for e in listed]
        if not arns:
            raise RuntimeError("the stream router started no execution")
        deadline = time.monotonic() + timeout
        while (desc := sfn.describe_execution(executionArn=arns[0]))["status"] == "RUNNING":
            if time.monotonic() > deadline:
                raise RuntimeError(f"the {workflow} execution did not end within {timeout:.0f} s")
            time.sleep(0.02)
        counts.connection_minutes = (time.monotonic() - started) / 60
        if desc["status"] != "SUCCEEDED":
            raise RuntimeError(f"the {workflow} execution ended {desc['status']}: {desc.get('cause', '')[:200]}")
        history = sfn.get_execution_history(executionArn=arns[0], maxResults=1000)["events"]
        # Standard bills "each time a step of your workflow is executed": every state entered (Map iterations
        # and retries included) — https://aws.amazon.com/step-functions/pricing/
        counts.state_transitions = sum(1 for e in history if e["type"].endswith("StateEntered"))
        counts.execution_seconds = (desc["stopDate"] - desc["startDate"]).total_seconds()
        meter.on = False
        counts.aws_calls = dict(sorted(meter.calls.items()))
        counts.ws_messages += meter.ws_messages
        counts.ddb_read_units = meter.read_units
        counts.ddb_write_units = meter.write_units
    return counts


def _usd(v: float) -> str:
    return f"${v:,.2f}" if v >= 1 else f"${v:.6f}".rstrip("0").rstrip(".") if v else "$0"


def report(counts: RequestCounts) -> dict[str, Any]:
    """Counts, both costs and the break-even, as one JSON-able dict (what ``--json`` prints)."""
    standard, express = cost_of(counts, "STANDARD"), cost_of(counts, "EXPRESS")
    return {
        "workflow": counts.workflow,
        "prices_as_of": PRICES_AS_OF,
        "prices_note": "us-east-1 list prices as published by AWS to our knowledge on that date; verify them",
        "prices": {k: {"usd": p.usd, "unit": p.unit, "source": p.source, "note": p.note} for k, p in PRICES.items()},
        "counts": counts.as_dict(),
        "standard": standard.as_dict(),
        "express": express.as_dict(),
        "break_even": break_even(counts).as_dict(),
    }


def _print(rep: dict[str, Any]) -> None:
    c = rep["counts"]
    print(f"streamer cost {rep['workflow']}: one request, measured on in-process moto with the platform's handlers")
    print(f"  AWS calls by our handlers: {sum(c['aws_calls'].values())}  "
          + ", ".join(f"{k.split('.', 1)[1]} {v}" for k, v in c["aws_calls"].items()))  # fmt: skip
    print(f"  WebSocket messages {c['ws_messages']}, state transitions {c['state_transitions']}, "
          f"execution {c['execution_seconds']:.2f} s, "
          f"DynamoDB RRU {c['ddb_read_units']:g} / WRU {c['ddb_write_units']:g}")  # fmt: skip
    for fn, n in sorted(c["lambda_invocations"].items()):
        print(f"  Lambda {fn}: {n} invocation(s), {c['lambda_billed_ms'][fn]:.0f} ms billed here, "
              f"{c['lambda_memory_mb'][fn]} MB")  # fmt: skip
    for kind in ("standard", "express"):
        r = rep[kind]
        print(f"\n{r['workflow_type']}: {_usd(r['usd_per_request'])} per request, "
              f"{_usd(r['usd_per_million'])} per million requests")  # fmt: skip
        for line in r["lines"]:
            if line["usd"]:
                print(f"  {line['item']:<52} {line['quantity']:>10.4g} x {line['unit_usd']:.3g} = "
                      f"{_usd(line['usd'] * 1e6)} per million")  # fmt: skip
    be = rep["break_even"]
    print(f"\nStep Functions part: Standard {_usd(be['standard_sfn_usd'] * 1e6)} vs Express "
          f"{_usd(be['express_sfn_usd'] * 1e6)} per million; Express is cheaper while an execution lasts under "
          f"{be['express_cheaper_below_seconds']:.1f} s (and Express runs at most 300 s, at-least-once).")  # fmt: skip
    print(f"Prices: us-east-1 as of {rep['prices_as_of']}, from AWS's pricing pages as known that day — verify "
          "before relying on them (--json lists each with its source).")  # fmt: skip


def _run(args: argparse.Namespace) -> int:
    try:
        payload = json.loads(args.payload)
    except ValueError as exc:
        print(f"error: --payload is not JSON: {exc}", file=sys.stderr)
        return 2
    if not isinstance(payload, dict):
        print("error: --payload must be a JSON object", file=sys.stderr)
        return 2
    try:
        counts = measure(args.workflow, payload, timeout=args.timeout)
    except (RuntimeError, LookupError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    rep = report(counts)
    if args.json:
        print(json.dumps(rep, indent=2, default=str))
    else:
        _print(rep)
    return 0


def arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("workflow", metavar="WORKFLOW", help="an installed workflow, e.g. echo or textstats")
    p.add_argument("--payload", default='{"message": "hello"}', help="the request's payload, a JSON object")
    p.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for the execution (default 120)")
    p.add_argument("--json", action="store_true", help="print counts, prices and costs as JSON")
    p.set_defaults(func=_run)
