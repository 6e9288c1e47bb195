"""The load generator: ``python -m benchmarks.load SCENARIO 'JSON-ARGS'`` prints one JSON line of results.

It always runs in its own process (never inside the process under test), started by the benchmark runner
through :func:`benchmarks._procs.run_load`. Scenarios:

* ``ping`` — open ``conns`` WebSocket connections (authenticated with one minted token each when ``auth``,
  ``connect_concurrency`` handshakes in flight), then either a **closed loop** (``rate`` null: every connection
  sends a ping and waits for the reply, for ``duration`` seconds) or an **open loop** (``rate`` messages/s spread
  round-robin over the connections, on a fixed schedule whatever the replies do; latency is measured from the
  *scheduled* send time so a stalled server cannot hide its queue — no coordinated omission), or a **burst**
  (``burst`` messages sent at once over the connections). Replies not back ``reply_timeout`` seconds after the
  last send count as lost; the percentiles then include them as infinite.
* ``echo`` — ``conns`` authenticated connections, each submitting ``per_conn`` ``echo`` requests one after the
  other (so ``conns`` requests are in flight) and timing submit → terminal event.
* ``engine`` — the bare engine's client: serves a no-op Lambda on ``lambda_port`` (``{}`` for every Task; the
  ``kind: result`` notify Task marks an execution done), starts ``total`` executions of ``statemachine_arn`` with
  ``concurrency`` in flight, and times StartExecution → the final notify Task.
"""

from __future__ import annotations

import asyncio
import json
import math
import sys
import threading
import time
import uuid
from collections import deque
from typing import Any


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (``q`` in 0..100); ``inf`` entries count (lost replies); NaN when empty."""
    if not values:
        return math.nan
    ordered = sorted(values)
    k = max(0, min(len(ordered) - 1, math.ceil(q / 100 * len(ordered)) - 1))
    return ordered[k]


def _latency_summary(lat: list[float], elapsed: float) -> dict[str, Any]:
    done = [x for x in lat if math.isfinite(x)]
    return {
        "completed": len(done),
        "lost": len(lat) - len(done),
        "throughput": len(done) / elapsed if elapsed > 0 else 0.0,
        "p50_ms": percentile(lat, 50) * 1000,
        "p99_ms": percentile(lat, 99) * 1000,
        "max_ms": (max(done) * 1000) if done else math.nan,
        "elapsed_s": elapsed,
    }


async def _open_connections(a: dict[str, Any]) -> tuple[list[Any], int, float]:
    from websockets.asyncio.client import connect
    from websockets.typing import Subprotocol

    from streamer.auth import mint_token

    secret: str = a.get("secret", "")
    sem = asyncio.Semaphore(int(a.get("connect_concurrency", 50)))
    conns: list[Any] = []
    errors = 0

    n = int(a["conns"])
    # Each client holds its token before it connects (minted here, outside the timed handshakes: minting is
    # the client's work, and the bare server's clients send none).
    tokens = [mint_token(secret, f"bench-{i}") for i in range(n)] if a.get("auth") else []

    async def one(i: int) -> None:
        nonlocal errors
        protocols = None
        if tokens:
            protocols = [Subprotocol("streamer.v1"), Subprotocol(f"bearer.{tokens[i]}")]
        async with sem:
            try:
                ws = await connect(a["url"], subprotocols=protocols, open_timeout=60, ping_interval=None,
                                   close_timeout=2, max_size=2**20)  # fmt: skip
                conns.append(ws)
            except Exception:
                errors += 1

    t = time.perf_counter()
    await asyncio.gather(*(one(i) for i in range(n)))
    return conns, errors, time.perf_counter() - t


async def _ping(a: dict[str, Any]) -> dict[str, Any]:
    conns, connect_errors, connect_s = await _open_connections(a)
    out: dict[str, Any] = {
        "connected": len(conns),
        "connect_errors": connect_errors,
        "connect_s": connect_s,
        "connect_rate": len(conns) / connect_s if connect_s > 0 else 0.0,
    }
    if not conns:
        return {**out, **_latency_summary([], 1.0), "error_frames": 0}
    frame = json.dumps({"action": "ping"})
    outstanding: list[deque[float]] = [deque() for _ in conns]
    lat: list[float] = []
    error_frames = 0
    reply_timeout = float(a.get("reply_timeout", 10))
    got = [asyncio.Event() for _ in conns]  # the closed loop waits on these (no busy wait: 2 shared cores)

    async def reader(i: int) -> None:
        nonlocal error_frames
        try:
            async for raw in conns[i]:
                now = time.perf_counter()
                if outstanding[i]:
                    lat.append(now - outstanding[i].popleft())
                got[i].set()
                if '"error"' in str(raw)[:40]:
                    error_frames += 1
        except Exception:  # a closed connection ends its reader; its pings count as lost
            pass

    readers = [asyncio.create_task(reader(i)) for i in range(len(conns))]
    await asyncio.sleep(0.2)  # let any frame sent on connect arrive first
    for q in outstanding:
        q.clear()
    sent = 0
    t0 = time.perf_counter()
    if a.get("burst"):
        for k in range(int(a["burst"])):
            i = k % len(conns)
            outstanding[i].append(time.perf_counter())
            try:
                await conns[i].send(frame)
            except Exception:  # a dead connection: the ping is lost
                continue
            sent += 1
    elif a.get("rate"):
        rate, duration = float(a["rate"]), float(a["duration"])
        total = int(rate * duration)
        for k in range(total):
            due = t0 + k / rate
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            i = k % len(conns)
            outstanding[i].append(due)  # from the schedule: no coordinated omission
            try:
                await conns[i].send(frame)
            except Exception:  # a dead connection: the ping is lost
                continue
            sent += 1
    else:  # closed loop
        duration = float(a["duration"])
        end = t0 + duration

        async def loop(i: int) -> None:
            nonlocal sent
            while time.perf_counter() < end:
                got[i].clear()
                outstanding[i].append(time.perf_counter())
                await conns[i].send(frame)
                sent += 1
                try:
                    await asyncio.wait_for(got[i].wait(), reply_timeout)
                except TimeoutError:
                    return  # this connection's ping is lost; it stops

        await asyncio.gather(*(loop(i) for i in range(len(conns))), return_exceptions=True)
    last_send = time.perf_counter()
    while any(outstanding) and time.perf_counter() - last_send < reply_timeout:
        await asyncio.sleep(0.01)
    elapsed = time.perf_counter() - t0
    lost = sum(len(q) for q in outstanding)
    lat += [math.inf] * lost
    for r in readers:
        r.cancel()
    await asyncio.gather(*(c.close() for c in conns), return_exceptions=True)
    return {**out, **_latency_summary(lat, elapsed), "sent": sent, "error_frames": error_frames}


async def _echo(a: dict[str, Any]) -> dict[str, Any]:
    from streamer.auth import mint_token
    from streamer.client import StreamerClient

    lat: list[float] = []
    errors: list[str] = []
    per_conn, steps = int(a.get("per_conn", 1)), int(a.get("steps", 1))
    timeout = float(a.get("timeout", 120))

    async def one(i: int) -> None:
        try:
            client = await StreamerClient.connect(a["url"], mint_token(a["secret"], f"bench-echo-{i}"), open_timeout=60)
        except Exception as exc:
            errors.append(f"connect: {type(exc).__name__}")
            lat.extend([math.inf] * per_conn)
            ready.append(i)
            return
        ready.append(i)
        async with client as c:
            await start.wait()
            for n in range(per_conn):
                t = time.perf_counter()
                try:
                    payload = {"message": f"{i}-{n}", "steps": steps}
                    ack = await c.call({"action": "submit", "workflow": "echo", "payload": payload}, timeout=timeout)
                    if "request_id" not in ack:  # e.g. {"type": "closed"}: the connection went away
                        raise RuntimeError(f"no ack: {ack.get('type')} {ack.get('code', '')}".strip())
                    rid = str(ack["request_id"])
                    last: dict[str, Any] = {}
                    async for ev in c.events(rid, timeout=timeout):
                        last = ev
                    if last.get("type") != "result":
                        errors.append(f"terminal {last.get('type')}")
                    lat.append(time.perf_counter() - t)
                except Exception as exc:
                    errors.append(f"{type(exc).__name__}: {str(exc)[:80]}")
                    lat.append(math.inf)

    start = asyncio.Event()
    ready: list[int] = []
    tasks = [asyncio.create_task(one(i)) for i in range(int(a["conns"]))]
    while len(ready) < len(tasks):  # every connection up (or failed) before the clock starts
        await asyncio.sleep(0.05)
    t0 = time.perf_counter()
    start.set()
    await asyncio.gather(*tasks)
    summary = _latency_summary(lat, time.perf_counter() - t0)
    return {**summary, "errors": len(errors), "error_kinds": sorted(set(errors))}


def _engine(a: dict[str, Any]) -> dict[str, Any]:
    """StartExecution → final notify Task, ``concurrency`` in flight, no-op Lambdas served here."""
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    import boto3
    from botocore.config import Config

    done: dict[str, threading.Event] = {}
    lock = threading.Lock()

    class NoOpLambda(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            try:
                event = json.loads(body or b"{}")
            except ValueError:
                event = {}
            if isinstance(event, dict) and event.get("kind") == "result":
                rid = str((event.get("request") or {}).get("request_id"))
                with lock:
                    ev = done.get(rid)
                if ev is not None:
                    ev.set()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"{}")

        def log_message(self, *args: Any) -> None:
            return

    server = ThreadingHTTPServer(("127.0.0.1", int(a["lambda_port"])), NoOpLambda)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    concurrency, total, timeout = int(a["concurrency"]), int(a["total"]), float(a.get("timeout", 120))
    sfn = boto3.client(
        "stepfunctions",
        endpoint_url=a["sfn"],
        region_name="us-east-1",
        aws_access_key_id="bench",
        aws_secret_access_key="bench",
        config=Config(max_pool_connections=concurrency + 4, retries={"mode": "standard"}),
    )
    lat: list[float] = []
    errors: list[str] = []
    counter = iter(range(total))
    counter_lock = threading.Lock()
    gate = threading.Event()

    def worker() -> None:
        gate.wait()
        while True:
            with counter_lock:
                n = next(counter, None)
            if n is None:
                return
            rid = uuid.uuid4().hex
            ev = threading.Event()
            with lock:
                done[rid] = ev
            request = {"request_id": rid, "user_id": "bench", "workflow": "echo"}
            t = time.perf_counter()
            try:
                sfn.start_execution(
                    stateMachineArn=a["statemachine_arn"],
                    name=rid,
                    input=json.dumps({"request": request, "payload": {"message": str(n), "steps": 1}}),
                )
            except Exception as exc:
                errors.append(type(exc).__name__)
                lat.append(math.inf)
                continue
            lat.append(time.perf_counter() - t if ev.wait(timeout) else math.inf)

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(concurrency)]
    for t in threads:
        t.start()
    t0 = time.perf_counter()
    gate.set()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - t0
    server.shutdown()
    return {**_latency_summary(lat, elapsed), "errors": len(errors), "error_kinds": sorted(set(errors))}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    scenario, args = argv[0], json.loads(argv[1])
    from benchmarks._procs import raise_open_files_limit

    raise_open_files_limit()
    if scenario == "ping":
        result = asyncio.run(_ping(args))
    elif scenario == "echo":
        result = asyncio.run(_echo(args))
    elif scenario == "engine":
        result = _engine(args)
    else:
        print(f"unknown scenario {scenario!r}", file=sys.stderr)
        return 2
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
