"""The local stack's fast path, piece by piece: bounded pools, the in-process invoker, and its parity with the
HTTP path (a real gateway, real WebSocket clients, a real Lambda endpoint, real boto3 Management API clients).

The whole stack under a burst, and the two paths through the real router: ``test_local_fast_stack.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import json
import os
import queue
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from concurrent.futures import CancelledError
from concurrent.futures import ThreadPoolExecutor as ClientThreads
from typing import Any

import boto3
import pytest
from botocore.config import Config
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from streamer.aws.connections import ConnectionManager
from streamer.deploy.template import FunctionSpec
from streamer.errors import WebSocketDisconnectedError
from streamer.local.gateway import Gateway, GatewayConfig
from streamer.local.inprocess import INVOKE_MODE_ENV, InProcessInvoker, invoke_mode
from streamer.local.invoke import HttpAsyncInvoker, InvokeResult
from streamer.local.lambda_endpoint import LambdaEndpoint, serve_in_thread
from streamer.local.serving import DaemonPool
from tests.functional.moto_process import create, moto_server, run_to_end

# -- DaemonPool ---------------------------------------------------------------------------------------------


def test_a_daemon_pool_never_starts_more_threads_than_its_size() -> None:
    pool = DaemonPool(4, name="t")
    running = 0
    most = 0
    lock = threading.Lock()

    def work(i: int) -> int:
        nonlocal running, most
        with lock:
            running += 1
            most = max(most, running)
        time.sleep(0.002)
        with lock:
            running -= 1
        return i * 2

    futures = [pool.submit(work, i) for i in range(200)]
    assert [f.result(30) for f in futures] == [i * 2 for i in range(200)]
    assert pool.threads <= 4 and most <= 4
    assert all(t.daemon for t in threading.enumerate() if t.name.startswith("t-"))
    pool.shutdown()


def test_a_daemon_pool_passes_exceptions_and_refuses_work_after_shutdown() -> None:
    pool = DaemonPool(1)

    def boom() -> None:
        raise KeyError("x")

    with pytest.raises(KeyError):
        pool.submit(boom).result(10)
    gate, running = threading.Event(), threading.Event()

    def first_call() -> bool:
        running.set()
        return gate.wait(10)

    first = pool.submit(first_call)
    assert running.wait(10)
    queued = pool.submit(lambda: 1)
    pool.shutdown(wait=False, cancel_futures=True)
    gate.set()
    assert first.result(10) is True
    with pytest.raises(CancelledError):
        queued.result(10)
    with pytest.raises(RuntimeError, match="after shutdown"):
        pool.submit(lambda: 1)
    with pytest.raises(ValueError):
        DaemonPool(0)


def test_keyed_work_is_served_round_robin_so_a_flooding_key_waits_behind_itself() -> None:
    pool = DaemonPool(1)
    gate, running, order = threading.Event(), threading.Event(), []

    def hold() -> None:
        running.set()
        gate.wait(10)

    pool.submit_keyed("flood", hold)
    assert running.wait(10)
    futures = [pool.submit_keyed("flood", order.append, f"flood-{i}") for i in range(5)]
    futures += [pool.submit_keyed("quiet", order.append, "quiet-0"), pool.submit(order.append, "unkeyed")]
    futures.append(pool.submit_keyed("quiet", order.append, "quiet-1"))
    gate.set()
    for f in futures:
        f.result(10)
    assert order == ["flood-0", "quiet-0", "unkeyed", "flood-1", "quiet-1", "flood-2", "flood-3", "flood-4"]
    pool.shutdown()


def test_the_fair_queue_hands_out_every_item_once_in_each_keys_order_under_concurrency() -> None:
    from streamer.local.serving import FairQueue

    q: FairQueue[tuple[int, int]] = FairQueue()
    got: list[tuple[int, int]] = []
    lock = threading.Lock()

    def producer(key: int) -> None:
        for i in range(500):
            q.put((key, i), key)

    def consumer() -> None:
        for _ in range(1000):
            item = q.get()
            with lock:
                got.append(item)

    threads = [threading.Thread(target=producer, args=(k,)) for k in range(8)]
    threads += [threading.Thread(target=consumer) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert sorted(got) == [(k, i) for k in range(8) for i in range(500)] and q.qsize() == 0
    with pytest.raises(queue.Empty):
        q.get_nowait()
    # One consumer sees each key's items in the order they were put.
    for item, key in (((0, 0), "a"), ((0, 1), "a"), ((1, 0), "b")):
        q.put(item, key)
    assert [q.get_nowait() for _ in range(3)] == [(0, 0), (1, 0), (0, 1)]


def test_the_in_process_invoker_queues_each_connection_behind_itself_only() -> None:
    """One worker, a connection with 20 queued invocations, then another connection's: it runs second."""
    order: list[str] = []
    # The worker holds the first invocation until the quiet one is queued: else a fast worker can finish the
    # whole flood before the quiet connection asks, which says nothing about the queue.
    gate = threading.Event()

    def fn(e: dict[str, Any], c: Any) -> None:
        gate.wait(5)
        order.append(e["requestContext"]["connectionId"])

    invoker = InProcessInvoker({"Fn": FunctionSpec(fn, timeout=10)}, max_workers=1)

    def event(cid: str) -> dict[str, Any]:
        return {"requestContext": {"connectionId": cid}}

    async def scenario() -> None:
        try:
            flood = [asyncio.ensure_future(invoker("Fn", event("flood"))) for _ in range(20)]
            await asyncio.sleep(0)
            quiet = asyncio.ensure_future(invoker("Fn", event("quiet")))
            await asyncio.sleep(0.05)
            gate.set()
            await asyncio.gather(quiet, *flood)
        finally:
            await invoker.close()

    _run(scenario())
    assert order.index("quiet") <= 2 and len(order) == 21


# -- the Lambda endpoint under a burst ---------------------------------------------------------------------


def _threads_named(prefix: str) -> int:
    return sum(1 for t in threading.enumerate() if t.name.startswith(prefix))


def test_the_lambda_endpoint_serves_a_burst_with_a_bounded_number_of_threads() -> None:
    peak = {"conn": 0, "fn": 0}

    def slow(event: Any, context: Any) -> dict[str, Any]:
        time.sleep(0.01)
        peak["conn"] = max(peak["conn"], _threads_named("LambdaEndpoint-conn"))
        peak["fn"] = max(peak["fn"], _threads_named("lambda-fn"))
        return {"n": event["n"]}

    server, url = serve_in_thread({"Slow": FunctionSpec(slow, timeout=30)})
    try:

        def call(n: int) -> int:
            req = urllib.request.Request(
                f"{url}/2015-03-31/functions/Slow/invocations", data=json.dumps({"n": n}).encode(), method="POST"
            )
            with urllib.request.urlopen(req, timeout=60) as resp:
                return int(json.loads(resp.read())["n"])

        with ClientThreads(max_workers=200) as clients:  # 200 connections at once, 600 invocations
            assert sorted(clients.map(call, range(600))) == list(range(600))
    finally:
        server.shutdown()
        server.server_close()
    assert 0 < peak["conn"] <= LambdaEndpoint.pool_size
    assert 0 < peak["fn"] <= LambdaEndpoint.pool_size


class _OneThreadEndpoint(LambdaEndpoint):
    pool_size = 1


def test_a_kept_alive_connection_yields_its_thread_to_a_waiting_one() -> None:
    server = _OneThreadEndpoint(("127.0.0.1", 0), {"Ok": FunctionSpec(lambda e, c: {"ok": True}, timeout=30)})
    threading.Thread(target=server.serve_forever, daemon=True).start()
    host, port = server.server_address[:2]
    path = "/2015-03-31/functions/Ok/invocations"
    try:
        kept = http.client.HTTPConnection(str(host), port, timeout=10)
        kept.request("POST", path, body=b"{}")
        assert kept.getresponse().read() == b'{"ok": true}'
        # The only thread now waits for the kept-alive connection's next request; another client must not
        # wait for that connection's idle timeout.
        other = http.client.HTTPConnection(str(host), port, timeout=10)
        started = time.monotonic()
        other.request("POST", path, body=b"{}")
        kept.request("POST", path, body=b"{}")  # the kept connection is served too (reconnecting if closed)
        assert other.getresponse().read() == b'{"ok": true}'
        assert time.monotonic() - started < 4.5  # under IDLE_SECONDS: not served by the idle timeout
        # Either served, or closed for the waiting one, as designed (a client then reconnects).
        with contextlib.suppress(http.client.RemoteDisconnected, ConnectionResetError):
            assert kept.getresponse().read() == b'{"ok": true}'

        other.close()
        kept.close()
    finally:
        server.shutdown()
        server.server_close()


# -- the in-process invoker --------------------------------------------------------------------------------


def _run(coro: Any) -> Any:
    return asyncio.run(coro)


def test_the_in_process_invoker_answers_like_the_lambda_endpoint() -> None:
    class Unserialisable:
        pass

    def fails(event: Any, context: Any) -> Any:
        raise RuntimeError("no")

    def ctx(event: Any, context: Any) -> Any:
        return {
            "name": context.function_name,
            "arn": context.invoked_function_arn,
            "remaining": context.get_remaining_time_in_millis(),
            "tuple": (1, 2),
        }

    invoker = InProcessInvoker(
        {
            "Ctx": FunctionSpec(ctx, timeout=5),
            "Fails": FunctionSpec(fails, timeout=5),
            "Odd": FunctionSpec(lambda e, c: Unserialisable(), timeout=5),
        }
    )

    async def scenario() -> list[InvokeResult]:
        try:
            return [await invoker(name, {}) for name in ("Ctx", "Fails", "Odd", "Missing")]
        finally:
            await invoker.close()

    ok, failed, odd, missing = _run(scenario())
    assert ok.ok and ok.payload["name"] == "Ctx" and ok.payload["arn"].endswith(":function:Ctx")
    assert 0 < ok.payload["remaining"] <= 5000 and ok.payload["tuple"] == [1, 2]
    assert not failed.ok and failed.transport_error is None
    assert failed.payload["errorType"] == "RuntimeError" and failed.payload["errorMessage"] == "no"
    assert failed.payload["stackTrace"]
    assert not odd.ok and odd.payload["errorType"] == "Runtime.MarshalError"
    assert not missing.ok and missing.transport_error is not None and "404" in missing.transport_error


def test_a_function_past_its_timeout_is_sandbox_timedout_and_past_29_s_the_integration_times_out() -> None:
    release = threading.Event()
    invoker = InProcessInvoker(
        {
            "Short": FunctionSpec(lambda e, c: release.wait(10), timeout=0.2),
            "Long": FunctionSpec(lambda e, c: release.wait(10), timeout=60),
        },
        integration_timeout=0.3,
    )

    async def scenario() -> tuple[InvokeResult, InvokeResult]:
        try:
            return await invoker("Short", {}), await invoker("Long", {})
        finally:
            release.set()
            await invoker.close()

    short, long_ = _run(scenario())
    assert not short.ok and not short.timed_out and short.payload["errorType"] == "Sandbox.Timedout"
    assert not long_.ok and long_.timed_out and long_.transport_error == "no answer within 0.3s"


def test_a_function_that_waited_for_a_worker_times_out_by_its_own_timeout_from_its_start() -> None:
    release = threading.Event()
    invoker = InProcessInvoker(
        {
            "Busy": FunctionSpec(lambda e, c: time.sleep(0.4), timeout=5),
            "Stuck": FunctionSpec(lambda e, c: release.wait(10), timeout=0.3),
        },
        max_workers=1,
        integration_timeout=5.0,
    )

    async def scenario() -> tuple[list[InvokeResult], float]:
        t0 = time.monotonic()
        try:
            return list(await asyncio.gather(invoker("Busy", {}), invoker("Stuck", {}))), time.monotonic() - t0
        finally:
            release.set()
            await invoker.close()

    (busy, stuck), elapsed = _run(scenario())
    assert busy.ok
    # Queued 0.4 s, then 0.3 s of its own: Sandbox.Timedout at ~0.7 s, long before the 5 s integration timeout.
    assert not stuck.ok and not stuck.timed_out and stuck.payload["errorType"] == "Sandbox.Timedout"
    assert 0.6 <= elapsed < 3.0, elapsed


def _quick(event: Any, context: Any) -> str:
    time.sleep(0.05)
    return "done"


def test_time_queued_for_a_worker_does_not_count_against_the_functions_timeout() -> None:
    invoker = InProcessInvoker(
        {
            "Busy": FunctionSpec(lambda e, c: time.sleep(0.5), timeout=5),
            "Quick": FunctionSpec(_quick, timeout=0.3),
        },
        max_workers=1,
    )

    async def scenario() -> list[InvokeResult]:
        try:
            return list(await asyncio.gather(invoker("Busy", {}), invoker("Quick", {})))
        finally:
            await invoker.close()

    busy, quick = _run(scenario())
    assert busy.ok
    assert quick.ok and quick.payload == "done"  # waited ~0.5 s for the one worker, ran 0.05 s of its 0.3 s


def test_the_functions_environment_is_applied_then_restored() -> None:
    key = "STREAMER_LOCAL_FAST_TEST"
    before = os.environ.get("AWS_CONFIG_FILE")
    invoker = InProcessInvoker(
        {"Env": FunctionSpec(lambda e, c: os.environ.get(key), timeout=5)}, environment={key: "from the plan"}
    )

    async def scenario() -> InvokeResult:
        try:
            return await invoker("Env", {})
        finally:
            await invoker.close()

    result = _run(scenario())
    assert result.ok and result.payload == "from the plan"
    assert key not in os.environ and os.environ.get("AWS_CONFIG_FILE") == before


def test_the_invoke_mode_is_in_process_unless_http_is_asked_for_or_faults_are_injected() -> None:
    assert invoke_mode({}) == "inprocess"
    assert invoke_mode({INVOKE_MODE_ENV: "HTTP"}) == "http"
    assert invoke_mode({INVOKE_MODE_ENV: "inprocess", "STREAMER_TEST_FAULTS": "exit:RouterFunction:3"}) == "http"
    with pytest.raises(ValueError, match="STREAMER_LOCAL_INVOKE"):
        invoke_mode({INVOKE_MODE_ENV: "docker"})


# -- parity: the same gateway, the two paths ----------------------------------------------------------------


class _Stage:
    """A gateway on its own loop thread; ``invoker(gateway_http_url)`` makes its invoker."""

    def __init__(self, make_invoker: Callable[[str], Any]) -> None:
        self.loop = asyncio.new_event_loop()
        routes = {"$connect": "Connect", "$disconnect": "Disconnect", "$default": "Default", "slow": "Slow"}
        self.invoker: Any = None

        async def start() -> str:
            import socket

            sock = socket.create_server(("127.0.0.1", 0))
            self.http = f"http://127.0.0.1:{sock.getsockname()[1]}"
            self.invoker = make_invoker(self.http)
            self.gateway = Gateway(GatewayConfig(routes=routes, integration_timeout=29.0), self.invoker)
            if isinstance(self.invoker, InProcessInvoker):
                self.invoker.bind(self.gateway, asyncio.get_running_loop(), self.http)
            return await self.gateway.start(sock=sock)

        self.url = self.loop.run_until_complete(start())
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        async def stop() -> None:
            await self.gateway.stop()
            await self.invoker.close()

        asyncio.run_coroutine_threadsafe(stop(), self.loop).result(30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


_CLIENTS: dict[str, Any] = {}


def _manager(event: dict[str, Any]) -> ConnectionManager:
    """A ConnectionManager as the handlers make it (boto3's default session), one client per stage."""
    endpoint = os.environ["PARITY_GATEWAY"]
    if endpoint in _CLIENTS:
        return ConnectionManager(client=_CLIENTS[endpoint])
    client = _CLIENTS[endpoint] = boto3.client(
        "apigatewaymanagementapi",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        config=Config(retries={"mode": "standard", "total_max_attempts": 1}),
    )
    return ConnectionManager(client=client)


def _connect(event: dict[str, Any], context: Any) -> dict[str, Any]:
    if (event.get("queryStringParameters") or {}).get("token") != "good":
        return {"statusCode": 401}
    return {"statusCode": 200, "headers": {"Sec-WebSocket-Protocol": "streamer.v1"}}


def _default(event: dict[str, Any], context: Any) -> dict[str, Any]:
    cid = event["requestContext"]["connectionId"]
    body = json.loads(event["body"])
    manager = _manager(event)
    if body.get("do") == "raise":
        raise ValueError("as asked")
    if body.get("do") == "describe":
        info = manager.client.get_connection(ConnectionId=cid)
        manager.send(cid, {"type": "described", "source_ip": info["Identity"]["SourceIp"]})
    elif body.get("do") == "gone":
        try:
            manager.send("R29uZUdvbmVHb25lR28=", {"type": "never"})
        except WebSocketDisconnectedError:
            manager.send(cid, {"type": "gone detected"})
    elif body.get("do") == "binary":
        manager.send(cid, b"\xff\x00binary")
    elif body.get("do") == "close":
        manager.send(cid, {"type": "closing"})
        manager.close(cid)
    else:
        manager.send(cid, {"type": "echo", "body": body})
        manager.send(cid, {"type": "echo again"})
    return {"statusCode": 200}


def _slow(event: dict[str, Any], context: Any) -> dict[str, Any]:
    time.sleep(1.0)
    return {"statusCode": 200}


FUNCTIONS = {
    "Connect": FunctionSpec(_connect, timeout=5),
    "Disconnect": FunctionSpec(lambda e, c: {"statusCode": 200}, timeout=5),
    "Default": FunctionSpec(_default, timeout=10),
    "Slow": FunctionSpec(_slow, timeout=0.3),  # past its timeout: Sandbox.Timedout → Internal server error
}


async def _conversation(url: str) -> list[Any]:
    """What a client sees: a refused handshake, then every kind of reply, in order."""
    seen: list[Any] = []
    try:
        async with connect(url + "/?token=bad"):
            seen.append("accepted?")
    except InvalidStatus as exc:
        seen.append(("refused", exc.response.status_code))
    async with connect(url + "/?token=good", subprotocols=["streamer.v1"]) as ws:  # type: ignore[list-item]
        seen.append(("subprotocol", ws.subprotocol))
        for message in (
            {"do": "echo", "n": 1},
            {"do": "describe"},
            {"do": "gone"},
            {"do": "binary"},
            {"do": "raise"},
            {"action": "slow"},
            {"do": "close"},
        ):
            await ws.send(json.dumps(message))
            expected = 2 if message.get("do") == "echo" else 1
            for _ in range(expected):
                frame = await asyncio.wait_for(ws.recv(), 15)
                if isinstance(frame, str):
                    parsed = json.loads(frame)
                    parsed.pop("connectionId", None), parsed.pop("requestId", None)
                    seen.append(parsed)
                else:
                    seen.append(frame)
        await asyncio.wait_for(ws.wait_closed(), 15)
        seen.append(("closed", ws.close_code))
    return seen


@pytest.fixture
def lambda_endpoint() -> Iterator[str]:
    server, url = serve_in_thread(FUNCTIONS)
    try:
        yield url
    finally:
        server.shutdown()
        server.server_close()


def test_the_in_process_and_http_paths_give_a_client_the_same_replies(
    lambda_endpoint: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    results: dict[str, list[Any]] = {}
    calls: dict[str, int] = {}
    posts: list[str] = []
    http_post = Gateway._post

    async def counted(self: Gateway, request: Any) -> Any:
        posts.append(request.path)
        return await http_post(self, request)

    monkeypatch.setattr(Gateway, "_post", counted)  # Management API POSTs that came over HTTP
    for mode in ("http", "inprocess"):
        posts.clear()
        if mode == "http":
            stage = _Stage(lambda _gw: HttpAsyncInvoker(lambda_endpoint, timeout=29.0))
        else:
            stage = _Stage(lambda _gw: InProcessInvoker(FUNCTIONS, environment={"PARITY_MODE": mode}))
        monkeypatch.setenv("PARITY_GATEWAY", stage.http)
        try:
            results[mode] = asyncio.run(_conversation(stage.url))
        finally:
            stage.close()
            for client in _CLIENTS.values():
                client.close()
            _CLIENTS.clear()
        calls[mode] = len(posts)
    assert results["inprocess"] == results["http"]
    assert results["http"] == [
        ("refused", 401),
        ("subprotocol", "streamer.v1"),
        {"type": "echo", "body": {"do": "echo", "n": 1}},
        {"type": "echo again"},
        {"type": "described", "source_ip": "127.0.0.1"},
        {"type": "gone detected"},
        b"\xff\x00binary",
        {"message": "Internal server error"},
        {"message": "Internal server error"},
        {"type": "closing"},
        ("closed", 1000),
    ]
    # Over HTTP every reply was a POST to the Management API; in process, none was.
    assert calls["http"] >= 6 and calls["inprocess"] == 0


# -- moto's Step Functions engine, sped up -------------------------------------------------------------------


def test_executions_of_one_definition_share_one_parsed_program() -> None:
    from types import SimpleNamespace

    from moto.stepfunctions.parser.backend.execution_worker import ExecutionWorker

    from streamer.local.moto_server import speed_up_sfn

    speed_up_sfn(None)
    speed_up_sfn(None)  # idempotent

    def worker(definition: str) -> Any:
        details = SimpleNamespace(state_machine_details=SimpleNamespace(definition=definition))
        return SimpleNamespace(_evaluation_details=details)

    one = json.dumps({"StartAt": "P", "States": {"P": {"Type": "Pass", "End": True}}})
    other = json.dumps({"StartAt": "Q", "States": {"Q": {"Type": "Pass", "End": True}}})
    first = ExecutionWorker._get_evaluation_entrypoint(worker(one))
    assert ExecutionWorker._get_evaluation_entrypoint(worker(one)) is first
    assert ExecutionWorker._get_evaluation_entrypoint(worker(other)) is not first


def test_tasks_call_the_lambda_endpoint_directly_over_kept_alive_connections() -> None:
    """Three executions of a 2-Task machine: every Task ran, over fewer connections than Tasks (moto's own
    path opened a connection per Task, through moto itself)."""
    calls: list[int] = []

    def step(event: dict[str, Any], context: Any) -> dict[str, Any]:
        calls.append(1)
        return {"n": event["n"] + 1}

    connections = 0
    task = {"Type": "Task", "Resource": "arn:aws:lambda:us-east-1:123456789012:function:Step"}
    definition = {"StartAt": "A", "States": {"A": {**task, "Next": "B"}, "B": {**task, "End": True}}}
    with moto_server({"Step": step}) as (sfn, server):
        finish = server.finish_request

        def counted(request: Any, client_address: Any) -> None:
            nonlocal connections
            connections += 1
            finish(request, client_address)

        server.finish_request = counted
        arn = create(sfn, "two-steps", definition)
        outputs = []
        for i in range(3):
            desc = run_to_end(sfn, arn, f"run-{i}", '{"n": 0}')
            outputs.append((desc["status"], json.loads(desc.get("output") or "null")))
        assert outputs == [("SUCCEEDED", {"n": 2})] * 3
        assert len(calls) == 6
        assert 1 <= connections < len(calls)
