"""The AWS SDK's floor: what one boto3 call costs the process that makes it, and what that bounds.

``python -m benchmarks.sdk_floor [--rounds R] [--calls N] [--baselines] [--no-moto] [--json]``

Every AWS call our handlers make goes through a boto3 client (what ships to AWS; locally the same clients talk
to moto and to the gateway's Management API). This measures the client side alone: each call shape the
handlers make on the request path — a conditional ``PutItem``, a conditional ``UpdateItem`` returning the new
value, a ``Query``, ``StartExecution``, ``PostToConnection`` — sent to a stub HTTP server in another process
that answers each with a fixed, valid response and does nothing else. The figure is the CPU time of the calling
process per call (``time.process_time``): signing, serialising, botocore's events, the HTTP exchange, parsing.
The baseline, interleaved in the same rounds: the **same request bytes** (captured from the client) sent with
``http.client`` on a kept-alive connection — the HTTP exchange alone.

From those figures and the calls our handlers make (a new user's handshake: two quota writes and the
connection's ``PutItem``, ``tests/functional/test_limits.py``; one ``echo`` request: counted now by
``python -m benchmarks.aws_calls``), it prints the most any local stack could do with the SDK's cost alone,
everything else (the engine, the WebSocket, our code) taken as free:

* connect: handshakes a second, in the gateway process (its handlers run there, one core: the GIL) and on
  every core;
* echo: requests a second on every core;
* the noisy-neighbour shape of ``tests/e2e/test_reliability_edges.py`` (100 requests in flight, each pushing
  20 events 3 s apart to 20 connections): cores its accepted work needs.

Then the other side of the DynamoDB calls (unless ``--no-moto``): the same shapes answered by moto as
``streamer local`` runs it (``streamer.local.moto_server.make_app``, every patch applied), called as a WSGI app in
a child process — no socket, no HTTP server, no SDK — on tables made from the template; moto's CPU per call. With
it the ceilings of the SDK and moto's DynamoDB together: what a local stack built on both could do if the
WebSocket, the engine, the Lambda endpoint and our code were free.

``--baselines`` also measures, in the same run, what issue 11's goals compare with — the bare ``websockets``
server's handshake rate and moto's engine running ``echo`` with no-op Lambdas at 20 concurrent — and prints
the rate each goal needs next to the ceiling. docs/performance.md ("The SDK's floor") records the figures.
"""

from __future__ import annotations

import argparse
import http.client
import http.server
import json
import multiprocessing
import os
import queue
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
os.environ.setdefault("AWS_ACCESS_KEY_ID", "bench")
os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "bench")

__all__ = ["SHAPES", "Ceilings", "bench", "ceilings", "main", "measure"]


@dataclass(frozen=True)
class Shape:
    """One call as the handlers make it, and the stub's answer to it."""

    service: str
    operation: str  # boto3's method name
    params: dict[str, Any]
    response: bytes  # the stub's body (HTTP 200)


_N = {"N": "1796180000"}
#: The call shapes of the request path (docs/performance.md, "AWS calls per request").
SHAPES: dict[str, Shape] = {
    "dynamodb:PutItem": Shape(
        "dynamodb", "put_item",
        {"TableName": "streamer-connections", "ConditionExpression": "attribute_not_exists(connection_id)",
         "Item": {"connection_id": {"S": "Ab3dEfGhIjKlMnO="}, "user_id": {"S": "user-1"}, "connected_at": _N,
                  "expires_at": _N, "ttl": _N}},
        b"{}",
    ),
    "dynamodb:UpdateItem": Shape(
        "dynamodb", "update_item",
        {"TableName": "streamer-requests", "Key": {"user_id": {"S": "user-1"}, "request_id": {"S": "r-1"}},
         "UpdateExpression": "SET last_seq = last_seq + :one",
         "ConditionExpression": "#s IN (:pending, :running) AND incarnation = :inc",
         "ExpressionAttributeNames": {"#s": "status"},
         "ExpressionAttributeValues": {":one": {"N": "1"}, ":pending": {"S": "PENDING"},
                                       ":running": {"S": "RUNNING"}, ":inc": {"S": "i-1"}},
         "ReturnValues": "UPDATED_NEW"},
        b'{"Attributes": {"last_seq": {"N": "3"}}}',
    ),
    "dynamodb:Query": Shape(
        "dynamodb", "query",
        {"TableName": "streamer-connections", "IndexName": "by_user", "KeyConditionExpression": "user_id = :u",
         "ExpressionAttributeValues": {":u": {"S": "user-1"}}},
        b'{"Items": [{"connection_id": {"S": "c1"}, "user_id": {"S": "user-1"}}], "Count": 1, "ScannedCount": 1}',
    ),
    "stepfunctions:StartExecution": Shape(
        "stepfunctions", "start_execution",
        {"stateMachineArn": "arn:aws:states:us-east-1:123456789012:stateMachine:streamer-echo",
         "name": "r-1-i-1", "input": json.dumps({"request": {"user_id": "user-1", "request_id": "r-1"}})},
        b'{"executionArn": "arn:aws:states:us-east-1:123456789012:execution:streamer-echo:r-1-i-1",'
        b' "startDate": 1796180000.0}',
    ),
    "apigatewaymanagementapi:PostToConnection": Shape(
        "apigatewaymanagementapi", "post_to_connection",
        {"ConnectionId": "Ab3dEfGhIjKlMnO=",
         "Data": json.dumps({"type": "progress", "request_id": "r-1", "seq": 1, "data": {"i": 1}}).encode()},
        b"",
    ),
}  # fmt: skip

#: A new user's handshake (tests/functional/test_limits.py: the refused reservation, the map's creation) and
#: the connection's row; a user's later connection makes one quota write.
CONNECT_CALLS = {"dynamodb:UpdateItem": 2, "dynamodb:PutItem": 1}
#: The noisy-neighbour test's accepted work (tests/e2e/test_reliability_edges.py, its defaults).
NOISY_IN_FLIGHT, NOISY_CONNECTIONS, NOISY_EVENT_SECONDS = 100, 20, 3.0


# ------------------------------------------------------------------------------------------------ the stub


def _serve(port_out: Any) -> None:
    responses = {s.operation: s.response for s in SHAPES.values()}
    by_target = {
        "DynamoDB_20120810.PutItem": responses["put_item"],
        "DynamoDB_20120810.UpdateItem": responses["update_item"],
        "DynamoDB_20120810.Query": responses["query"],
        "AWSStepFunctions.StartExecution": responses["start_execution"],
    }

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True  # one write per response, sent at once

        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length", "0")))
            body = by_target.get(self.headers.get("X-Amz-Target", ""), responses["post_to_connection"])
            kind = "application/x-amz-json-1.0" if body else "application/json"
            head = f"HTTP/1.1 200 OK\r\nContent-Type: {kind}\r\nContent-Length: {len(body)}\r\n\r\n"
            self.wfile.write(head.encode() + body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    port_out.put(server.server_address[1])
    server.serve_forever()


class Stub:
    """The stub server in its own process (its CPU is not the caller's)."""

    def __enter__(self) -> str:
        ctx = multiprocessing.get_context("spawn")
        port: Any = ctx.Queue()
        self.proc = ctx.Process(target=_serve, args=(port,), daemon=True)
        self.proc.start()
        return f"http://127.0.0.1:{port.get(timeout=30)}"

    def __exit__(self, *exc: object) -> None:
        self.proc.terminate()
        self.proc.join(10)
        self.proc.close()


# ------------------------------------------------------------------------------------------------ measure


def _pair(shape: Shape, url: str) -> tuple[Callable[[], None], Callable[[], None], Callable[[], None]]:
    """(the boto3 call, the same request bytes over http.client, close both)."""
    import boto3

    client = boto3.client(shape.service, endpoint_url=url)  # type: ignore[call-overload]  # a runtime name
    sent: list[Any] = []
    client.meta.events.register("before-send", lambda request, **_: sent.append(request))
    method = getattr(client, shape.operation)
    method(**shape.params)
    req = sent[-1]
    client.meta.events.unregister("before-send")
    parts = urlsplit(req.url)
    path = parts.path + (f"?{parts.query}" if parts.query else "")
    headers = {k: (v.decode() if isinstance(v, bytes) else v) for k, v in req.headers.items()}
    body = req.body if isinstance(req.body, bytes | None) else req.body.encode()
    conn = http.client.HTTPConnection(parts.hostname, parts.port)

    def sdk() -> None:
        method(**shape.params)

    def raw() -> None:
        conn.request(req.method, path, body, headers)
        resp = conn.getresponse()
        resp.read()
        if resp.status != 200:
            raise RuntimeError(f"stub answered {resp.status}")

    def close() -> None:
        conn.close()
        client.close()

    return sdk, raw, close


def measure(rounds: int = 7, calls: int = 100, url: str | None = None) -> dict[str, dict[str, float]]:
    """CPU milliseconds per call of each shape: {"sdk", "raw", "ratio"}; rounds interleave both, median."""
    if url is None:
        with Stub() as stub:
            return measure(rounds, calls, stub)
    pairs = {name: _pair(shape, url) for name, shape in SHAPES.items()}
    cpu: dict[str, dict[str, list[float]]] = {n: {"sdk": [], "raw": []} for n in pairs}
    try:
        for _ in range(rounds):
            for name, (sdk, raw, _close) in pairs.items():
                for kind, fn in (("raw", raw), ("sdk", sdk)):
                    t = time.process_time()
                    for _ in range(calls):
                        fn()
                    cpu[name][kind].append((time.process_time() - t) / calls * 1000)
    finally:
        for _sdk, _raw, close in pairs.values():
            close()
    out = {}
    for name, c in cpu.items():
        sdk_ms, raw_ms = statistics.median(c["sdk"]), statistics.median(c["raw"])
        out[name] = {"sdk_ms": sdk_ms, "raw_ms": raw_ms, "ratio": sdk_ms / raw_ms if raw_ms else float("inf")}
    return out


#: The shapes moto's DynamoDB answers in the local stack (the others go to the engine and to the gateway).
MOTO_SHAPES = tuple(name for name in SHAPES if name.startswith("dynamodb:"))


def _moto_calls(rounds: int, calls: int, out: Any) -> None:
    """In a child process: each DynamoDB shape answered by the local stack's moto app (``make_app``: every patch
    ``streamer local`` applies), called as WSGI with the request body the SDK sends — no socket, no SDK — on tables
    made from the template, so each call succeeds as in the stack; moto's CPU ms per call, median of rounds."""
    from werkzeug.test import EnvironBuilder

    from streamer.deploy.template import table_definitions
    from streamer.local.moto_server import make_app

    app = make_app(None)

    def environ(target: str, body: bytes) -> dict[str, Any]:
        return EnvironBuilder(path="/", method="POST", data=body, headers={
            "Host": "127.0.0.1:4566", "X-Amz-Target": target, "Content-Type": "application/x-amz-json-1.0",
            "Authorization": "AWS4-HMAC-SHA256 Credential=bench/20261202/us-east-1/dynamodb/aws4_request, "
                             "SignedHeaders=host;x-amz-target, Signature=0"}).get_environ()  # fmt: skip

    def send(target: str, params: dict[str, Any]) -> None:
        env = environ(f"DynamoDB_20120810.{target}", json.dumps(params).encode())
        status: list[str] = []
        b"".join(app(env, lambda s, h, e=None: status.append(s)))
        if not status[0].startswith("200"):
            raise RuntimeError(f"moto answered {status[0]} to {target}")

    for logical_id, spec in table_definitions().items():
        spec = {k: v for k, v in spec.items() if k != "TimeToLiveSpecification"}
        name = {"ConnectionsTable": "streamer-connections", "RequestsTable": "streamer-requests"}.get(logical_id)
        if name:
            send("CreateTable", {"TableName": name, **spec})
    update = SHAPES["dynamodb:UpdateItem"].params
    send("PutItem", {"TableName": update["TableName"], "Item": {**update["Key"], "status": {"S": "RUNNING"},
                     "incarnation": {"S": "i-1"}, "last_seq": {"N": "0"}}})  # fmt: skip
    put = SHAPES["dynamodb:PutItem"].params
    for i in range(3):  # the user's connections the Query finds
        send("PutItem", {**put, "Item": {**put["Item"], "connection_id": {"S": f"seed-{i}"}}})

    def body(name: str, key: str) -> bytes:
        """The call as in the stack: a new connection's put (its condition holds; another user's, so the Query's
        user keeps its three), the claim on the running request, the user's connections."""
        params = SHAPES[name].params
        if name == "dynamodb:PutItem":
            params = {**params, "Item": {**params["Item"], "connection_id": {"S": key}, "user_id": {"S": key}}}
        return json.dumps(params).encode()

    cpu: dict[str, list[float]] = {name: [] for name in MOTO_SHAPES}
    for r in range(rounds):
        for name in MOTO_SHAPES:
            target = f"DynamoDB_20120810.{name.split(':')[1]}"
            envs = [environ(target, body(name, f"r{r}-{i}")) for i in range(calls)]
            status: list[str] = []
            record = status.append
            t = time.process_time()
            for env in envs:
                b"".join(app(env, lambda s, h, e=None, record=record: record(s)))
            cpu[name].append((time.process_time() - t) / calls * 1000)
            bad = [s for s in status if not s.startswith("200")]
            if bad:
                raise RuntimeError(f"moto answered {bad[0]} to {name}")
    out.put({name: statistics.median(v) for name, v in cpu.items()})


def moto_per_call(rounds: int = 7, calls: int = 100) -> dict[str, float]:
    """moto's CPU ms per call of each DynamoDB shape, in the local stack's moto app (``_moto_calls``)."""
    ctx = multiprocessing.get_context("spawn")
    q: Any = ctx.Queue()
    proc = ctx.Process(target=_moto_calls, args=(rounds, calls, q), daemon=True)
    proc.start()
    try:
        while True:
            try:
                result: dict[str, float] = q.get(timeout=1)
                return result
            except queue.Empty:
                if not proc.is_alive():  # it raised (its traceback is on stderr) or was killed
                    raise RuntimeError(f"moto's measurement ended without figures (exit {proc.exitcode})") from None
    finally:
        proc.join(30)
        proc.close()


@dataclass(frozen=True)
class Ceilings:
    """What the SDK's cost alone allows (everything else free)."""

    connect_sdk_ms: float  # per new user's handshake
    connect_one_core: float  # handshakes/s: the gateway runs $connect in its own process
    connect_all_cores: float
    echo_calls: int
    echo_sdk_ms: float  # per echo request
    echo_all_cores: float  # requests/s
    noisy_cores: float  # cores the noisy-neighbour shape's accepted work needs in the SDK alone
    cores: int
    # With moto's DynamoDB too (``moto_per_call``: the same calls answered by the local stack's moto, no socket):
    connect_moto_ms: float | None = None  # SDK + moto per handshake
    connect_moto_all_cores: float | None = None
    echo_moto_ms: float | None = None  # SDK + moto per echo request
    echo_moto_all_cores: float | None = None


def ceilings(
    per_call: dict[str, dict[str, float]],
    echo_calls: dict[str, int],
    cores: int,
    moto: dict[str, float] | None = None,
) -> Ceilings:
    """The bounds above from CPU ms per call (``measure``) and the echo request's calls by operation; with
    ``moto`` (``moto_per_call``) also the bounds of the SDK and moto's DynamoDB together."""

    def ms(calls: dict[str, int]) -> float:
        return sum(n * per_call[op]["sdk_ms"] for op, n in calls.items())

    def moto_ms(calls: dict[str, int]) -> float:
        return sum(n * (moto or {}).get(op, 0.0) for op, n in calls.items())

    connect = ms(CONNECT_CALLS)
    echo = ms(echo_calls)
    events_per_s = NOISY_IN_FLIGHT / NOISY_EVENT_SECONDS
    # Per event: its seq claim, its put, the audience's read (events 3 s apart: the 1 s audience is stale) and
    # one push per connection.
    per_event = ms({"dynamodb:UpdateItem": 1, "dynamodb:PutItem": 1, "dynamodb:Query": 1,
                    "apigatewaymanagementapi:PostToConnection": NOISY_CONNECTIONS})  # fmt: skip
    return Ceilings(
        connect_sdk_ms=connect,
        connect_one_core=1000 / connect,
        connect_all_cores=cores * 1000 / connect,
        echo_calls=sum(echo_calls.values()),
        echo_sdk_ms=echo,
        echo_all_cores=cores * 1000 / echo,
        noisy_cores=events_per_s * per_event / 1000,
        cores=cores,
        connect_moto_ms=connect + moto_ms(CONNECT_CALLS) if moto else None,
        connect_moto_all_cores=cores * 1000 / (connect + moto_ms(CONNECT_CALLS)) if moto else None,
        echo_moto_ms=echo + moto_ms(echo_calls) if moto else None,
        echo_moto_all_cores=cores * 1000 / (echo + moto_ms(echo_calls)) if moto else None,
    )


def echo_calls() -> dict[str, int]:
    """One ``echo`` request's calls by operation, counted by ``python -m benchmarks.aws_calls`` (moto, in a
    child process)."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.aws_calls", "--json"], capture_output=True, text=True, cwd=root,
        timeout=300, check=True,
    )  # fmt: skip
    calls: dict[str, int] = json.loads(proc.stdout.strip().splitlines()[-1])["calls"]
    unknown = set(calls) - set(SHAPES)
    if unknown:
        raise RuntimeError(f"no call shape measured for {sorted(unknown)}")
    return calls


def baselines(connect_n: int = 1000, executions: int = 400) -> dict[str, float]:
    """The goals' baselines in this run: the bare server's handshakes/s; the bare engine's echo executions/s at
    20 concurrent and the engine process's CPU per execution (our stack runs the same engine on the same state
    machine, so its requests cost at least that too)."""
    from benchmarks._procs import Watch, bare_echo_server, bare_engine, raise_open_files_limit, run_load

    raise_open_files_limit()
    with bare_echo_server() as b:
        bare = run_load("ping", 300, url=b.ws, conns=connect_n, rate=1, duration=0.001)
    with bare_engine() as e, Watch(e.pid) as w:
        engine = run_load("engine", 600, sfn=e.sfn, statemachine_arn=e.statemachine_arn, lambda_port=e.lambda_port,
                          concurrency=20, total=executions, timeout=300)  # fmt: skip
    engine_cpu = sum(w.last[p]["cpu"] - w.first[p]["cpu"] for p in w.last)
    return {
        "bare_connect_per_s": float(bare["connect_rate"]),
        "bare_engine_per_s": float(engine["throughput"]),
        "engine_cpu_ms_per_execution": engine_cpu * 1000 / executions,
    }


def report(
    per_call: dict[str, dict[str, float]],
    c: Ceilings,
    base: dict[str, float] | None,
    moto: dict[str, float] | None = None,
) -> str:
    lines = [f"{'call (client side)':44} {'boto3 CPU ms':>12} {'http.client':>12} {'ratio':>7}"
             + (f" {'moto CPU ms':>12}" if moto else "")]  # fmt: skip
    for name, f in per_call.items():
        answered = (f" {moto[name]:12.2f}" if name in moto else f" {'-':>12}") if moto else ""
        lines.append(f"{name:44} {f['sdk_ms']:12.2f} {f['raw_ms']:12.2f} {f['ratio']:6.1f}x{answered}")
    lines += [
        "",
        f"connect (a new user: {sum(CONNECT_CALLS.values())} calls): {c.connect_sdk_ms:.1f} ms of SDK CPU per handshake"
        f" -> at most {c.connect_one_core:.0f}/s in the gateway's one process, {c.connect_all_cores:.0f}/s on all"
        f" {c.cores} cores",
        f"echo ({c.echo_calls} calls, benchmarks.aws_calls): {c.echo_sdk_ms:.1f} ms of SDK CPU per request -> at most"
        f" {c.echo_all_cores:.0f} requests/s on all {c.cores} cores",
        f"noisy neighbour ({NOISY_IN_FLIGHT} in flight, an event every {NOISY_EVENT_SECONDS:.0f} s each, to"
        f" {NOISY_CONNECTIONS} connections): {c.noisy_cores:.2f} cores of SDK CPU (the machine has {c.cores})",
    ]
    if c.connect_moto_ms is not None and c.echo_moto_ms is not None:
        lines += [
            f"with moto's DynamoDB answering (no socket): connect {c.connect_moto_ms:.1f} ms per handshake -> at most"
            f" {c.connect_moto_all_cores:.0f}/s on all {c.cores} cores; echo {c.echo_moto_ms:.1f} ms per request ->"
            f" at most {c.echo_moto_all_cores:.1f} requests/s",
        ]
    if base:
        need_connect = base["bare_connect_per_s"] / 3
        need_echo = 0.8 * base["bare_engine_per_s"]
        engine_ms = base["engine_cpu_ms_per_execution"]
        echo_floor = c.cores * 1000 / (c.echo_sdk_ms + engine_ms)
        moto_lines = []
        if c.connect_moto_all_cores is not None and c.echo_moto_ms is not None:
            moto_floor = c.cores * 1000 / (c.echo_moto_ms + engine_ms)
            moto_lines = [
                f"  with moto's DynamoDB answering too: connect {c.connect_moto_all_cores:.0f}/s: "
                f"{_verdict(need_connect, c.connect_moto_all_cores)}; echo {moto_floor:.1f}/s: "
                f"{_verdict(need_echo, moto_floor)}",
            ]
        lines += [
            "",
            f"goal 5 needs >= 1/3 of the bare server's {base['bare_connect_per_s']:.0f} handshakes/s = "
            f"{need_connect:.0f}/s; the SDK alone allows {c.connect_one_core:.0f}/s in one process "
            f"({c.connect_all_cores:.0f}/s on all cores): {_verdict(need_connect, c.connect_all_cores)}",
            f"goal 2 needs >= 0.8 x the bare engine's {base['bare_engine_per_s']:.1f} executions/s = "
            f"{need_echo:.1f}/s; the SDK alone allows {c.echo_all_cores:.1f}/s: "
            f"{_verdict(need_echo, c.echo_all_cores)}",
            f"  with the engine's own {engine_ms:.1f} ms of CPU per execution (the same engine runs ours): "
            f"{echo_floor:.1f}/s: {_verdict(need_echo, echo_floor)}",
            *moto_lines,
        ]
    return "\n".join(lines)


def _verdict(need: float, ceiling: float) -> str:
    return "within the ceiling" if ceiling >= need else f"above the ceiling ({need / ceiling:.1f}x it)"


def bench() -> None:
    """``python -m benchmarks sdk_floor``: each call shape, boto3 against the same bytes over http.client."""
    from benchmarks import runner

    for name, f in measure(rounds=5, calls=50).items():
        runner().report(f"boto3 {name.split(':')[1]} (CPU)", "the same bytes, http.client", f["raw_ms"] / 1000,
                     f["sdk_ms"] / 1000)  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.sdk_floor", description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=7, help="interleaved rounds (median; default 7)")
    ap.add_argument("--calls", type=int, default=100, help="calls of each shape per round (default 100)")
    ap.add_argument("--baselines", action="store_true", help="also the goals' baselines, in this run")
    ap.add_argument("--no-moto", action="store_true", help="skip moto's own CPU per DynamoDB call")
    ap.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = ap.parse_args(argv)
    per_call = measure(args.rounds, args.calls)
    moto = None if args.no_moto else moto_per_call(args.rounds, args.calls)
    cores = os.cpu_count() or 1
    c = ceilings(per_call, echo_calls(), cores, moto)
    base = baselines() if args.baselines else None
    if args.json:
        print(json.dumps({"per_call": per_call, "moto_per_call": moto, "ceilings": c.__dict__, "baselines": base}))
    else:
        print(report(per_call, c, base, moto))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
