"""The web console over HTTP: its routes, JSON API, live stream, errors and access rules, on a real stack.

``streamer local`` serves the console at ``http://H:P/console/`` (the ``local_stack`` fixture); ``streamer
console`` runs as a subprocess for the token and host rules. Requests are real HTTP requests (urllib) and real
WebSocket clients; answers are checked against what ``streamer.observe`` reads from the same stack.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from streamer.client import StreamerClient

pytestmark = pytest.mark.timeout(180)

ROOT = Path(__file__).resolve().parents[2]
STATIC = ROOT / "platform" / "streamer" / "console" / "static"


class Answer:
    def __init__(self, status: int, headers: Any, body: bytes) -> None:
        self.status, self.headers, self.body = status, headers, body

    def json(self) -> Any:
        return json.loads(self.body)


class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


OPENER = urllib.request.build_opener(NoRedirect)


def http(url: str, method: str = "GET", headers: dict[str, str] | None = None, timeout: float = 30) -> Answer:
    req = urllib.request.Request(url, method=method, headers=headers or {}, data=b"" if method == "POST" else None)
    try:
        with OPENER.open(req, timeout=timeout) as resp:
            return Answer(resp.status, resp.headers, resp.read())
    except urllib.error.HTTPError as exc:
        return Answer(exc.code, exc.headers, exc.read())


def base(stack: Any) -> str:
    return stack.ws_url.replace("ws://", "http://") + "/console/"


def submit_and_wait(stack: Any, user: str, workflow: str, payload: dict[str, Any]) -> tuple[str, list[Any]]:
    async def main() -> tuple[str, list[Any]]:
        async with await StreamerClient.connect(stack.ws_url, stack.token(user)) as c:
            rid = await c.submit(workflow, payload)
            return rid, [ev async for ev in c.events(rid, timeout=90)]

    return asyncio.run(main())


@pytest.fixture(scope="module")
def finished(local_stack: Any) -> dict[str, str]:
    """One succeeded echo request of a user of its own."""
    user = local_stack.unique_user("console-http")
    rid, events = submit_and_wait(local_stack, user, "echo", {"message": "listed", "steps": 2})
    assert events[-1]["type"] == "result"
    return {"user": user, "rid": rid}


def write_stack_state(stack: Any, directory: Path) -> Path:
    """A state file naming ``stack`` (what ``streamer local`` records), for ``streamer console --state-file``
    and ``Sources.local``: the per-user default names whichever stack started last."""
    from streamer.observe.localstate import LocalState, write_state

    state = LocalState(
        pid=stack.proc.pid,
        ws_url=stack.ws_url,
        http_url=stack.http_url,
        moto_url=stack.moto_url,
        lambda_url=stack.lambda_url,
        sfn_url=stack.sfn_url,
        region="us-east-1",
        connections_table="streamer-connections",
        requests_table="streamer-requests",
        events_table="streamer-events",
        state_machine_arn_prefix="arn:aws:states:us-east-1:123456789012:stateMachine:streamer-",
    )
    return write_state(state, directory / "local.json")


@pytest.fixture(scope="module")
def state_file(local_stack: Any, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_stack_state(local_stack, tmp_path_factory.mktemp("console-state"))


# -- pages and static files --------------------------------------------------------------------------------


def test_console_is_served_on_the_websocket_port(local_stack: Any) -> None:
    root = local_stack.ws_url.replace("ws://", "http://")
    moved = http(root + "/console")
    assert moved.status == 302 and moved.headers["Location"] == "/console/"
    page = http(base(local_stack))
    assert page.status == 200 and page.headers["Content-Type"].startswith("text/html")
    assert b'src="static/app.js"' in page.body and b"{{title}}" not in page.body
    assert "default-src 'self'" in page.headers["Content-Security-Policy"]
    for name in ("app.js", "app.css", "vendor/cytoscape.min.js", "vendor/elk.bundled.js", "vendor/cytoscape-elk.js"):
        assert http(base(local_stack) + "static/" + name).status == 200, name
    assert http(base(local_stack) + "static/../app.py").status in (403, 404)


def test_vendored_libraries_match_their_manifest_and_keep_their_licences() -> None:
    manifest = json.loads((STATIC / "vendor" / "VENDOR.json").read_text())
    assert set(manifest) == {"cytoscape", "elkjs", "cytoscape-elk"}
    for name, entry in manifest.items():
        assert entry["integrity"].startswith("sha512-")
        assert f"{name}.LICENSE" in entry["files"]
        for file, digest in entry["files"].items():
            assert hashlib.sha256((STATIC / "vendor" / file).read_bytes()).hexdigest() == digest, file
    # The refresh script pins the same versions the manifest records.
    script = (ROOT / "scripts" / "refresh-console-vendor").read_text()
    for name, entry in manifest.items():
        assert f'"{name}": ("{entry["version"]}"' in script


def test_static_files_are_package_data() -> None:
    import tomllib

    data = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    shipped = {p for pattern in data["streamer.console"] for p in STATIC.parent.glob(pattern)}
    for file in STATIC.rglob("*"):
        if file.is_file():
            assert file in shipped, f"{file} is not in [tool.setuptools.package-data]"


# -- the JSON API ------------------------------------------------------------------------------------------


def test_list_filters_and_pages(local_stack: Any, finished: dict[str, str]) -> None:
    api = base(local_stack) + "api/executions"
    mine = http(f"{api}?user={finished['user']}").json()
    assert [i["request_id"] for i in mine["items"]] == [finished["rid"]]
    item = mine["items"][0]
    assert item["workflow"] == "echo" and item["status"] == "SUCCEEDED" and item["user_id"] == finished["user"]
    assert http(f"{api}?q={finished['rid']}").json()["items"][0]["request_id"] == finished["rid"]
    assert http(f"{api}?user={finished['user']}&status=FAILED").json()["items"] == []
    assert http(f"{api}?user={finished['user']}&workflow=textstats").json()["items"] == []
    assert http(f"{api}?user={finished['user']}&since=1h").json()["items"][0]["request_id"] == finished["rid"]
    assert http(f"{api}?user={finished['user']}&until=2000-01-01T00:00:00Z").json()["items"] == []
    one = http(f"{api}?limit=1").json()
    assert len(one["items"]) == 1
    if one["next_cursor"]:
        older = http(f"{api}?limit=1&cursor={urllib.request.quote(one['next_cursor'])}").json()
        assert older["items"] and older["items"][0]["id"] != one["items"][0]["id"]


@pytest.mark.parametrize(
    ("query", "message"),
    [("limit=0", "limit"), ("limit=x", "limit"), ("limit=500", "limit"), ("since=yesterday", "since")],
)
def test_bad_list_parameters_are_400(local_stack: Any, query: str, message: str) -> None:
    answer = http(f"{base(local_stack)}api/executions?{query}")
    assert answer.status == 400
    assert answer.json()["error"] == "bad_parameter" and message in answer.json()["message"]


def test_execution_detail_and_history(local_stack: Any, finished: dict[str, str]) -> None:
    url = f"{base(local_stack)}api/executions/{finished['rid']}?user={finished['user']}"
    detail = http(url).json()
    assert detail["request"]["status"] == "SUCCEEDED" and detail["request"]["payload"]["message"] == "listed"
    assert detail["definition"]["StartAt"] == "Echo"
    by_name = {s["name"]: s for s in detail["states"]}
    assert by_name["Echo"]["status"] == "succeeded" and by_name["Failed"]["status"] == "not_reached"
    assert [e["seq"] for e in detail["events"]] == [1, 2, 3]
    history = http(f"{base(local_stack)}api/executions/{finished['rid']}/history?user={finished['user']}").json()
    assert history[0]["type"] == "ExecutionStarted" and history[-1]["type"] == "ExecutionSucceeded"
    assert len(history) == detail["history_count"]


def test_unknown_execution_is_404(local_stack: Any) -> None:
    for path in ("api/executions/no-such-request", "api/executions/no-such-request/history"):
        answer = http(base(local_stack) + path)
        assert answer.status == 404 and answer.json()["error"] == "not_found"
    assert http(base(local_stack) + "api/nothing-here").status == 404


def test_ambiguous_request_id_is_409_until_a_user_is_given(local_stack: Any) -> None:
    rid = f"shared-{time.time_ns()}"
    users = [local_stack.unique_user("amb") for _ in range(2)]

    async def main() -> None:
        for user in users:
            async with await StreamerClient.connect(local_stack.ws_url, local_stack.token(user)) as c:
                await c.submit("echo", {"message": user, "steps": 1}, request_id=rid)
                [ev async for ev in c.events(rid, timeout=90)]

    asyncio.run(main())
    answer = http(f"{base(local_stack)}api/executions/{rid}")
    assert answer.status == 409 and answer.json()["error"] == "ambiguous"
    one = http(f"{base(local_stack)}api/executions/{rid}?user={users[1]}").json()
    assert one["request"]["payload"]["message"] == users[1]


def test_actions_need_the_console_header(local_stack: Any, finished: dict[str, str]) -> None:
    url = f"{base(local_stack)}api/executions/{finished['rid']}/cancel?user={finished['user']}"
    refused = http(url, "POST")
    assert refused.status == 403 and "X-Streamer-Console" in refused.json()["message"]
    ended = http(url, "POST", {"X-Streamer-Console": "1"})
    assert ended.status == 200 and ended.json() == {"cancelled": False}  # it had already succeeded


def test_rerun_makes_a_new_request_with_the_same_payload(local_stack: Any) -> None:
    user = local_stack.unique_user("rerun")
    rid, _ = submit_and_wait(local_stack, user, "echo", {"message": "again", "steps": 1})
    url = f"{base(local_stack)}api/executions/{rid}/rerun?user={user}"
    new_rid = http(url, "POST", {"X-Streamer-Console": "1"}).json()["request_id"]
    assert new_rid != rid
    detail = http(f"{base(local_stack)}api/executions/{new_rid}?user={user}").json()
    assert detail["request"]["payload"] == {"message": "again", "steps": 1}
    assert detail["request"]["workflow"] == "echo" and detail["request"]["user_id"] == user


def test_foreign_host_header_is_refused(local_stack: Any) -> None:
    answer = http(base(local_stack) + "api/connections", headers={"Host": "attacker.example:80"})
    assert answer.status == 403 and answer.json()["error"] == "forbidden_host"
    assert http(base(local_stack) + "api/connections", headers={"Host": "localhost"}).status == 200


def test_connections_and_overview(local_stack: Any, finished: dict[str, str]) -> None:
    async def main() -> list[Any]:
        async with await StreamerClient.connect(local_stack.ws_url, local_stack.token(finished["user"])):
            return http(base(local_stack) + "api/connections").json()  # type: ignore[no-any-return]

    users = asyncio.run(main())
    mine = [u for u in users if u["user_id"] == finished["user"]]
    assert len(mine) == 1 and len(mine[0]["connections"]) == 1
    overview = http(base(local_stack) + "api/overview?window=3600").json()
    assert overview["by_workflow"].get("echo", 0) >= 1 and overview["total"] >= 1
    assert overview["source"] == "metrics"  # streamer local: the handlers' EMF metrics feed it
    assert http(base(local_stack) + "api/overview?window=5").status == 400
    assert http(base(local_stack) + "api/overview?window=x").status == 400


# -- live ------------------------------------------------------------------------------------------------


def read_sse(url: str, timeout: float = 30) -> list[tuple[str, str]]:
    """(event, data) pairs until the stream ends (the server closes it after ``end`` or a final problem)."""
    out: list[tuple[str, str]] = []
    with urllib.request.urlopen(url, timeout=timeout) as resp:
        assert resp.headers["Content-Type"] == "text/event-stream"
        event, data = "message", ""
        for raw in resp:
            line = raw.decode().rstrip("\n")
            if line.startswith("event: "):
                event = line[7:]
            elif line.startswith("data: "):
                data = line[6:]
            elif line == "" and data:
                out.append((event, data))
                event, data = "message", ""
    return out


def test_live_execution_sends_the_detail_then_end(local_stack: Any, finished: dict[str, str]) -> None:
    frames = read_sse(f"{base(local_stack)}api/live/executions/{finished['rid']}?user={finished['user']}")
    assert [e for e, _ in frames] == ["message", "end"]
    assert json.loads(frames[0][1])["request"]["request_id"] == finished["rid"]


def test_live_unknown_execution_ends_with_a_problem(local_stack: Any) -> None:
    frames = read_sse(f"{base(local_stack)}api/live/executions/nope")
    assert [e for e, _ in frames] == ["problem"]
    assert json.loads(frames[0][1])["error"] == "not_found"


# -- streamer console ------------------------------------------------------------------------------------


def console(*args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    import os

    return subprocess.Popen(
        [sys.executable, "-m", "streamer.cli", "console", "--port", "0", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **(env or {})},
        cwd=ROOT,
    )


def ready_url(proc: subprocess.Popen[str]) -> str:
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert line.startswith("streamer console ready "), (line, proc.stderr.read() if proc.stderr else "")
    return line.split()[3]


def stop(proc: subprocess.Popen[str]) -> None:
    import signal

    proc.send_signal(signal.SIGINT)
    assert proc.wait(30) == 0
    for stream in (proc.stdout, proc.stderr):
        if stream is not None:
            stream.close()


def test_non_loopback_host_without_a_token_refuses_to_start() -> None:
    proc = console("--host", "0.0.0.0", env={"STREAMER_CONSOLE_TOKEN": ""})
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 2 and "requires a token" in err


def test_no_running_local_stack_is_a_one_line_error(tmp_path: Path) -> None:
    proc = console("--state-file", str(tmp_path / "none.json"))
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 1 and "no running `streamer local`" in err


def test_token_is_required_on_every_request(local_stack: Any, finished: dict[str, str], state_file: Path) -> None:
    proc = console("--host", "0.0.0.0", "--console-token", "s3cret-token", "--state-file", str(state_file))
    try:
        url = ready_url(proc).replace("0.0.0.0", "127.0.0.1")
        assert http(url).status == 401
        assert http(url + "api/executions").status == 401
        assert http(url + "api/executions", headers={"Authorization": "Bearer wrong"}).status == 401
        ok = http(url + "api/executions?user=" + finished["user"], headers={"Authorization": "Bearer s3cret-token"})
        assert ok.status == 200 and ok.json()["items"][0]["request_id"] == finished["rid"]
        # ?token= once: a cookie, and the token leaves the address bar.
        moved = http(url + "?token=s3cret-token")
        assert moved.status == 302 and moved.headers["Location"] == "/console/"
        cookie = moved.headers["Set-Cookie"]
        assert "HttpOnly" in cookie and "SameSite=Strict" in cookie
        page = http(url, headers={"Cookie": cookie.split(";")[0]})
        assert page.status == 200 and b"static/app.js" in page.body
    finally:
        stop(proc)


def test_stack_mode_reads_the_deployment_from_cloudformation(local_stack: Any, finished: dict[str, str]) -> None:
    """``streamer console --stack``: moto stands in for AWS (``AWS_ENDPOINT_URL``), a CloudFormation stack's
    outputs name the tables and the state machine prefix, and every execution gets its AWS console link."""
    name = f"console-{time.time_ns()}"
    cfn = local_stack.client("cloudformation")
    outputs = {
        "StateMachineArnPrefix": "arn:aws:states:us-east-1:123456789012:stateMachine:streamer-",
        "RequestsTableName": "streamer-requests",
        "EventsTableName": "streamer-events",
        "ConnectionsTableName": "streamer-connections",
    }
    template = {
        "Resources": {"Handle": {"Type": "AWS::CloudFormation::WaitConditionHandle"}},
        "Outputs": {k: {"Value": v} for k, v in outputs.items()},
    }
    cfn.create_stack(StackName=name, TemplateBody=json.dumps(template))
    env = {
        "AWS_ENDPOINT_URL": local_stack.moto_url,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    proc = console("--stack", name, "--region", "us-east-1", env=env)
    try:
        url = ready_url(proc)
        page = http(f"{url}api/executions?user={finished['user']}").json()
        (item,) = page["items"]
        assert item["request_id"] == finished["rid"]
        assert item["console_url"].startswith("https://us-east-1.console.aws.amazon.com/states/home?region=us-east-1#")
        assert b"streamer \xc2\xb7 " + name.encode() in http(url).body  # the page names the stack
    finally:
        stop(proc)
    missing = console("--stack", "no-such-stack", "--region", "us-east-1", env=env)
    _, err = missing.communicate(timeout=60)
    assert missing.returncode == 1 and "no-such-stack" in err


def test_a_bad_cursor_is_400(local_stack: Any) -> None:
    answer = http(f"{base(local_stack)}api/executions?cursor=not-a-cursor")
    assert answer.status == 400 and answer.json()["error"] == "bad_parameter"


def test_unreachable_sources_are_502_and_a_live_problem(tmp_path: Path) -> None:
    """A state file naming a live pid (this test's) whose endpoints are closed ports: the console starts, and
    every read says the sources failed — the API with 502, a live stream with a ``problem`` event."""
    from tests.fakes import local_state

    from streamer.observe.localstate import write_state

    proc = console("--state-file", str(write_state(local_state(), tmp_path / "local.json")))
    try:
        url = ready_url(proc)
        for path in ("api/executions", "api/executions/some-id", "api/connections", "api/overview"):
            answer = http(url + path)
            assert answer.status == 502 and answer.json()["error"] == "sources_failed", path
        with urllib.request.urlopen(url + "api/live/executions", timeout=60) as resp:
            lines = [resp.readline().decode().strip() for _ in range(2)]
        assert lines[0] == "event: problem" and "sources_failed" in lines[1]
    finally:
        stop(proc)


def test_a_taken_port_is_a_one_line_error(state_file: Path) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = subprocess.Popen(
            [sys.executable, "-m", "streamer.cli", "console", "--port", str(port), "--state-file", str(state_file)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=ROOT,
        )
        _, err = proc.communicate(timeout=60)
    assert proc.returncode == 1 and f"cannot listen on 127.0.0.1:{port}" in err


@pytest.mark.parametrize(
    ("host", "needs_token"),
    [("127.0.0.1", False), ("localhost", False), ("::1", False), ("[::1]", False), ("0.0.0.0", True),
     ("192.168.1.5", True), ("example.com", True)],
)  # fmt: skip
def test_which_hosts_need_a_token(host: str, needs_token: bool) -> None:
    from streamer.console.app import token_required

    assert token_required(host) is needs_token


def test_streamer_local_on_another_interface(start_local: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """``streamer local --host 0.0.0.0``: the console is served only with a token; without one it is off."""
    from tests.e2e.conftest import free_port

    from streamer.console.local import mount_local

    monkeypatch.delenv("STREAMER_CONSOLE_TOKEN", raising=False)
    assert mount_local(object(), "0.0.0.0") is None  # refused before it touches the stack
    stack = start_local("--host", "0.0.0.0", "--port", str(free_port()), env={"STREAMER_CONSOLE_TOKEN": "tok-123"})
    url = stack.ws_url.replace("ws://", "http://").replace("0.0.0.0", "127.0.0.1") + "/console/"
    assert http(url).status == 401
    assert http(url + "api/connections", headers={"Authorization": "Bearer tok-123"}).status == 200
    assert "web console      http://0.0.0.0:" in stack.stderr()


def test_sources_that_cannot_be_built_are_502(tmp_path: Path) -> None:
    """The console inside ``streamer local`` builds its sources on first use; when that fails (here: no
    state file), every API answer says so with 502 and the page itself still loads."""
    from aiohttp.test_utils import TestClient, TestServer

    from streamer.console.app import ConsoleConfig, create_app
    from streamer.observe import Sources

    app = create_app(ConsoleConfig(sources=lambda: Sources.local(tmp_path / "missing.json")))

    async def main() -> None:
        async with TestClient(TestServer(app, host="127.0.0.1")) as client:
            answer = await client.get("/api/executions")
            assert answer.status == 502
            body = await answer.json()
            assert body["error"] == "sources_failed" and "NoLocalStackError" in body["message"]
            assert (await client.get("/")).status == 200

    asyncio.run(main())
