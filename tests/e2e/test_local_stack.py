"""``streamer local`` as a user and AWS SDKs see it: real processes, real sockets, the real boto3 clients.

Covers what ``streamer.local`` owns — the API Gateway emulation (WebSocket side and Management API), its
limits, the Lambda Invoke endpoint, the supervisor (restarts, signals, ports). Platform behaviour
(submit, progress, resume …) is tested elsewhere on the same ``local_stack`` fixture.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from tests.e2e.conftest import ROOT, free_port
from tests.e2e.conftest import LocalStack as Stack
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import ClientConnection, connect

from streamer.deploy.template import functions, load_template

#: Limits of the ``short_limits_stack`` fixture (conftest).
SHORT_IDLE = 3.0
SHORT_MAX_DURATION = 8.0


def open_ws(stack: Stack, user: str, path: str = "", **kwargs: Any) -> ClientConnection:
    token = stack.token(user)
    return connect(
        stack.ws_url + path,
        subprotocols=["streamer.v1", f"bearer.{token}"],  # type: ignore[list-item]
        open_timeout=30,
        **kwargs,
    )


def close_code(ws: ClientConnection, timeout: float) -> tuple[int | None, str]:
    """Wait (reading) until the server closes ``ws``; its close code and reason."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            ws.recv(timeout=max(0.1, deadline - time.monotonic()))
        except TimeoutError:
            break
        except ConnectionClosed as exc:
            return (exc.rcvd.code, exc.rcvd.reason) if exc.rcvd else (None, "")
    raise AssertionError(f"not closed within {timeout}s")


# ----------------------------------------------------------------------------------------------- gateway


def test_connect_selects_the_subprotocol_the_connect_handler_returns(local_stack: Stack) -> None:
    with open_ws(local_stack, local_stack.unique_user()) as ws:
        assert ws.subprotocol == "streamer.v1"


def test_connect_without_a_token_is_refused_with_the_handlers_status(local_stack: Stack) -> None:
    with pytest.raises(InvalidStatus) as info:
        connect(local_stack.ws_url, open_timeout=30)
    assert info.value.response.status_code == 401


def test_stage_path_is_accepted(local_stack: Stack) -> None:
    with open_ws(local_stack, local_stack.unique_user(), "/prod") as ws:
        assert ws.subprotocol == "streamer.v1"


def test_management_api_post_reaches_the_websocket_client(local_stack: Stack) -> None:
    user = local_stack.unique_user()
    api = local_stack.client("apigatewaymanagementapi")
    with open_ws(local_stack, user) as ws:
        (cid,) = local_stack.connection_ids(user)
        api.post_to_connection(ConnectionId=cid, Data=b'{"hello": "from boto3"}')
        assert json.loads(ws.recv(timeout=30)) == {"hello": "from boto3"}
        info = api.get_connection(ConnectionId=cid)
        assert info["Identity"]["SourceIp"] == "127.0.0.1"
        assert "websockets" in info["Identity"]["UserAgent"]
        assert info["ConnectedAt"] <= info["LastActiveAt"]
        # The stage-prefixed endpoint (how the URL looks on AWS) is the same API.
        staged = local_stack.client("apigatewaymanagementapi", endpoint_url=f"{local_stack.http_url}/prod")
        staged.post_to_connection(ConnectionId=cid, Data=b"plain text")
        assert ws.recv(timeout=30) == "plain text"
        staged.close()
    api.close()


def test_post_over_128_kib_is_payload_too_large(local_stack: Stack) -> None:
    user = local_stack.unique_user()
    api = local_stack.client("apigatewaymanagementapi")
    with open_ws(local_stack, user):
        (cid,) = local_stack.connection_ids(user)
        with pytest.raises(api.exceptions.PayloadTooLargeException):
            api.post_to_connection(ConnectionId=cid, Data=b"x" * (128 * 1024 + 1))
        api.post_to_connection(ConnectionId=cid, Data=b"x" * (128 * 1024))  # exactly the limit is fine
    api.close()


def test_post_to_a_closed_or_unknown_connection_is_gone(local_stack: Stack) -> None:
    user = local_stack.unique_user()
    api = local_stack.client("apigatewaymanagementapi")
    with open_ws(local_stack, user):
        (cid,) = local_stack.connection_ids(user)
    deadline = time.monotonic() + 30
    while True:
        try:
            api.post_to_connection(ConnectionId=cid, Data=b"late")
        except api.exceptions.GoneException as exc:
            assert exc.response["ResponseMetadata"]["HTTPStatusCode"] == 410
            break
        assert time.monotonic() < deadline, "connection still accepting posts after close"
        time.sleep(0.1)
    with pytest.raises(api.exceptions.GoneException):
        api.get_connection(ConnectionId=cid)
    with pytest.raises(api.exceptions.GoneException):
        api.post_to_connection(ConnectionId="NoSuchConnId0=", Data=b"x")
    # $disconnect ran: the disconnect handler removed the connection's row.
    assert _eventually_no_connection(local_stack, user)
    api.close()


def _eventually_no_connection(stack: Stack, user: str) -> bool:
    deadline = time.monotonic() + 30
    while stack.connection_ids(user, timeout=0):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.2)
    return True


def test_delete_connection_closes_the_socket(local_stack: Stack) -> None:
    user = local_stack.unique_user()
    api = local_stack.client("apigatewaymanagementapi")
    with open_ws(local_stack, user) as ws:
        (cid,) = local_stack.connection_ids(user)
        api.delete_connection(ConnectionId=cid)
        code, _ = close_code(ws, 30)
        assert code == 1000
    with pytest.raises(api.exceptions.GoneException):
        api.delete_connection(ConnectionId=cid)
    api.close()


def test_a_message_over_128_kib_closes_the_connection_with_1009(local_stack: Stack) -> None:
    with open_ws(local_stack, local_stack.unique_user(), max_size=None) as ws:
        ws.send("x" * (200 * 1024))
        code, _ = close_code(ws, 30)
        assert code == 1009


def test_a_message_gets_a_reply_through_the_router(local_stack: Stack) -> None:
    with open_ws(local_stack, local_stack.unique_user()) as ws:
        ws.send(json.dumps({"action": "ping"}))
        reply = json.loads(ws.recv(timeout=30))
        assert reply["type"] == "pong"


# ---------------------------------------------------------------------------------------------- limits


def test_idle_connections_are_closed_with_1001(short_limits_stack: Stack) -> None:
    stack = short_limits_stack
    with open_ws(stack, stack.unique_user()) as ws:
        started = time.monotonic()
        code, reason = close_code(ws, 60)
        elapsed = time.monotonic() - started
    assert (code, reason) == (1001, "Going away")
    assert elapsed >= SHORT_IDLE - 0.5


def test_messages_keep_a_connection_alive_until_the_maximum_duration(short_limits_stack: Stack) -> None:
    stack = short_limits_stack
    with open_ws(stack, stack.unique_user()) as ws:
        started = time.monotonic()
        code = None
        while time.monotonic() - started < 60:
            try:
                ws.send(json.dumps({"action": "ping"}))
                ws.recv(timeout=SHORT_IDLE / 3)
            except TimeoutError:
                continue
            except ConnectionClosed as exc:
                code = exc.rcvd.code if exc.rcvd else None
                break
            time.sleep(SHORT_IDLE / 4)
        elapsed = time.monotonic() - started
    assert code == 1001
    # Longer than the idle timeout (the pings kept it alive), cut by the maximum duration.
    assert SHORT_MAX_DURATION - 1 <= elapsed <= SHORT_MAX_DURATION + 15


# ------------------------------------------------------------------------------------------------ Lambda


def _sample_event(handler: str) -> dict[str, Any]:
    if handler.rsplit(".", 2)[-2] in ("connect", "disconnect", "router"):
        return {"requestContext": {"connectionId": "e2eProbeConn0=", "routeKey": "$default"}, "body": "{}"}
    return {}


@pytest.mark.parametrize("name", sorted(functions(load_template())))
def test_lambda_invoke_reaches_every_function_of_the_template(local_stack: Stack, name: str) -> None:
    spec = functions(load_template())[name]
    client = local_stack.client("lambda", read_timeout=120)
    resp = client.invoke(FunctionName=name, Payload=json.dumps(_sample_event(spec.handler)).encode())
    body = json.loads(resp["Payload"].read() or b"null")
    client.close()
    assert resp["StatusCode"] == 200
    # The handler ran: it may reject the probe event, but it was imported and answered in time.
    if "FunctionError" in resp:
        assert body["errorType"] not in ("Runtime.ImportModuleError", "Sandbox.Timedout"), body


def test_lambda_invoke_of_an_unknown_function_is_resource_not_found(local_stack: Stack) -> None:
    client = local_stack.client("lambda")
    with pytest.raises(client.exceptions.ResourceNotFoundException):
        client.invoke(FunctionName="NoSuchFunction", Payload=b"{}")
    client.close()


def test_a_killed_lambda_endpoint_is_restarted_and_the_gateway_survives(
    start_local: Callable[..., Stack],
) -> None:
    stack = start_local("--port", str(free_port()))
    children = stack.children()
    lambda_pids = [pid for pid in children if "lambda_endpoint" in _cmdline(pid)]
    assert len(lambda_pids) == 1
    os.kill(lambda_pids[0], signal.SIGKILL)
    deadline = time.monotonic() + 90
    while True:
        pids = [pid for pid in stack.children() if "lambda_endpoint" in _cmdline(pid)]
        if pids and pids != lambda_pids:
            break
        assert time.monotonic() < deadline, "Lambda endpoint not restarted"
        time.sleep(0.2)
    # Same port, and the gateway still connects clients through it.
    with open_ws(stack, stack.unique_user()) as ws:
        ws.send(json.dumps({"action": "ping"}))
        assert json.loads(ws.recv(timeout=60))["type"] == "pong"
    assert stack.stop(signal.SIGINT) == 0
    assert "restarting it" in stack.stderr()


# -------------------------------------------------------------------------------------- process hygiene


def _cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            return fh.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            stat = fh.read()
    except OSError:
        return False
    return stat[stat.rfind(")") + 2 :].split()[0] != "Z"


def _listening(url: str) -> bool:
    host, port = url.split("://", 1)[1].split("/")[0].rsplit(":", 1)
    with socket.socket() as s:
        s.settimeout(2)
        return s.connect_ex((host, int(port))) == 0


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_signal_stops_everything_cleanly(start_local: Callable[..., Stack], sig: signal.Signals) -> None:
    stack = start_local("--port", str(free_port()))
    children = stack.children()
    assert len(children) == 3, children  # moto server (DynamoDB), moto server (Step Functions), Lambda endpoint
    urls = [stack.http_url, stack.lambda_url, stack.moto_url, stack.sfn_url]
    assert stack.sfn_url != stack.moto_url
    assert all(_listening(u) for u in urls)
    # An open connection does not hold the shutdown up; it is closed with 1001 like API Gateway does.
    with open_ws(stack, stack.unique_user()) as ws:
        assert stack.stop(sig) == 0
        code, _ = close_code(ws, 10)
    assert code == 1001
    assert not [pid for pid in children if _alive(pid)]
    assert not [u for u in urls if _listening(u)]


def test_a_taken_port_fails_fast_with_a_one_line_reason(start_local: Callable[..., Stack]) -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        stack = start_local("--port", str(port), wait=False)
        code = stack.proc.wait(60)
        if stack.proc.stdout is not None:
            assert stack.proc.stdout.read() == ""  # no readiness line
            stack.proc.stdout.close()
    assert code != 0
    lines = [ln for ln in stack.stderr().splitlines() if ln.strip()]
    assert lines[-1] == (
        f"streamer local: cannot listen on 127.0.0.1:{port} for the WebSocket gateway: address already in use"
    )
    assert not stack.children()


# ------------------------------------------------------------------------------------- external engine


def test_an_external_step_functions_endpoint_runs_the_workflows(start_local: Callable[..., Stack]) -> None:
    """``--sfn-endpoint``: what a user of AWS Step Functions Local does. A separate moto server stands in
    for it, calling our Lambda endpoint as Step Functions Local does with ``LAMBDA_ENDPOINT``."""
    lambda_port = free_port()
    external = subprocess.Popen(
        [sys.executable, "-m", "streamer.local.moto_server", "--port", "0", "--lambda-endpoint",
         f"http://127.0.0.1:{lambda_port}"],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"},
    )  # fmt: skip
    try:
        assert external.stdout is not None
        sfn_url = external.stdout.readline().split()[-1]
        stack = start_local("--port", str(free_port()), "--lambda-port", str(lambda_port), "--sfn-endpoint", sfn_url)
        assert stack.sfn_url == sfn_url
        assert f"LAMBDA_ENDPOINT={stack.lambda_url}" in stack.stderr()
        sfn = stack.client("stepfunctions")
        names = {m["name"] for m in sfn.list_state_machines()["stateMachines"]}
        sfn.close()
        assert {"streamer-echo", "streamer-textstats"} <= names
        out = subprocess.run(
            [sys.executable, "-m", "streamer.cli", "submit", "echo", "--json", "--url", stack.ws_url,
             "--sub", stack.unique_user(), "--timeout", "120", "--payload", '{"message": "via external"}'],
            capture_output=True, text=True, timeout=180,
            env={**os.environ, "STREAMER_JWT_SECRET": stack.secret},
        )  # fmt: skip
        events = [json.loads(line) for line in out.stdout.splitlines() if line.strip()]
        assert out.returncode == 0, out.stderr
        assert events[-1]["type"] == "result"
        assert events[-1]["output"] == {"message": "via external"}
        assert stack.stop(signal.SIGINT) == 0
    finally:
        external.terminate()
        external.wait(30)
        if external.stdout is not None:
            external.stdout.close()


# --------------------------------------------------------------------------------------- start-up errors


def _last_line(stack: Stack) -> str:
    return [ln for ln in stack.stderr().splitlines() if ln.strip()][-1]


def test_a_broken_plugin_fails_fast_with_a_one_line_reason(start_local: Callable[..., Stack], tmp_path: Path) -> None:
    # An installed distribution whose entry point cannot be imported.
    dist = tmp_path / "site" / "streamer_broken-0.1.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: streamer-broken\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[streamer.plugins]\nbroken = streamer_broken_no_such_module\n")
    path = os.pathsep.join(p for p in (str(tmp_path / "site"), os.environ.get("PYTHONPATH")) if p)
    stack = start_local("--port", str(free_port()), wait=False, env={"PYTHONPATH": path})
    assert stack.proc.wait(90) == 1
    line = _last_line(stack)
    assert line.startswith("streamer local: plugins: plugin 'broken' (distribution streamer-broken)"), line
    assert "ModuleNotFoundError" in line
    assert not stack.children()


def test_a_handler_that_cannot_be_imported_fails_start_up(start_local: Callable[..., Stack], tmp_path: Path) -> None:
    (tmp_path / "infra").mkdir()
    (tmp_path / "statemachines").symlink_to(ROOT / "statemachines")
    text = (ROOT / "infra" / "template.yaml").read_text()
    assert "Handler: streamer.handlers.notify.handler" in text
    broken = text.replace("Handler: streamer.handlers.notify.handler", "Handler: streamer.handlers.nope.handler")
    (tmp_path / "infra" / "template.yaml").write_text(broken)
    stack = start_local("--port", str(free_port()), "--template", str(tmp_path / "infra" / "template.yaml"), wait=False)
    assert stack.proc.wait(90) == 1
    line = _last_line(stack)
    assert line.startswith("streamer local: lambda exited with code 3: "), line
    assert "streamer.handlers.nope" in line
    assert not stack.children()


def test_the_gateway_process_froze_its_start_up_heap(local_stack: Stack) -> None:
    """``streamer.local.heap``: once started, the gateway's collector skips what start-up built (the route
    functions, their clients' service models), so a full collection under load walks the connections only."""
    import re

    from streamer.local.heap import GEN0_THRESHOLD

    found = re.search(r"heap settled: (\d+) objects frozen, gc thresholds \((\d+), ", local_stack.stderr())
    assert found, local_stack.stderr()[-3000:]
    frozen, gen0 = int(found.group(1)), int(found.group(2))
    assert gen0 == GEN0_THRESHOLD
    # the imports, the plan and the three clients' service models (DynamoDB's alone is ~80,000 objects)
    assert frozen > 150_000
