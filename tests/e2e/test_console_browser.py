"""The web console in a real browser (headless Debian Chromium through Playwright) against ``streamer local``.

The console is served by the stack itself at ``http://H:P/console/``; requests go through real WebSocket
clients; the graph is read back from the page's cytoscape instance (``window.streamerConsole.cy``: node
ids, statuses and the colour actually painted) and clicked with the mouse at a node's rendered position.
Every test fails on any browser console error or uncaught page error. Screenshots are written to a
temporary directory, and also to ``$STREAMER_CONSOLE_SCREENSHOTS`` when set (``docs/`` for
``docs/console.md``).
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from streamer.client import StreamerClient

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
ROOT = Path(__file__).resolve().parents[2]
TEXTSTATS = json.loads((ROOT / "statemachines" / "textstats.asl.json").read_text())
SUCCEEDED_FILL = "rgb(223,243,231)"  # app.js STATUS_COLOURS.succeeded.fill

pytestmark = [
    pytest.mark.skipif(
        not os.path.exists(CHROMIUM), reason="Debian's chromium is not installed (`.ci/run` installs it)"
    ),
    pytest.mark.timeout(240),
]


# -- fixtures --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        try:
            yield b
        finally:
            b.close()


@pytest.fixture
def page(browser: Any, tmp_path: Path) -> Iterator[Any]:
    """A fresh page; the test fails if the browser logged an error or a script threw."""
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    pg = context.new_page()
    problems: list[str] = []
    pg.on("console", lambda m: problems.append(f"console.{m.type}: {m.text}") if m.type == "error" else None)
    pg.on("pageerror", lambda e: problems.append(f"page error: {e}"))
    pg.screenshots = tmp_path  # type: ignore[attr-defined]
    try:
        yield pg
    finally:
        context.close()
    assert problems == [], problems


def console_url(stack: Any) -> str:
    return stack.ws_url.replace("ws://", "http://") + "/console/"


def screenshot(page: Any, name: str) -> None:
    page.screenshot(path=str(page.screenshots / name), full_page=True)
    target = os.environ.get("STREAMER_CONSOLE_SCREENSHOTS")
    if target:
        shutil.copyfile(page.screenshots / name, Path(target) / name)


class Client:
    """A WebSocket client on its own thread and event loop (Playwright's sync API owns this thread)."""

    def __init__(self, stack: Any, user: str) -> None:
        self.user = user
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.client: StreamerClient = self.run(StreamerClient.connect(stack.ws_url, stack.token(user)))
        self.events: dict[str, list[dict[str, Any]]] = {}
        self.done: dict[str, threading.Event] = {}

    def run(self, coro: Any, timeout: float = 60) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def submit(self, workflow: str, payload: dict[str, Any]) -> str:
        """Submit and collect the request's events in the background until its terminal one."""
        rid: str = self.run(self.client.submit(workflow, payload))
        self.events[rid], self.done[rid] = [], threading.Event()

        async def collect() -> None:
            try:
                async for ev in self.client.events(rid, timeout=120):
                    self.events[rid].append(ev)
            finally:
                self.done[rid].set()

        asyncio.run_coroutine_threadsafe(collect(), self.loop)
        return rid

    def wait(self, rid: str, timeout: float = 90) -> list[dict[str, Any]]:
        assert self.done[rid].wait(timeout), f"no terminal event for {rid}: {self.events[rid]}"
        return self.events[rid]

    def close(self) -> None:
        self.run(self.client.close())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


@pytest.fixture
def client(local_stack: Any) -> Iterator[Client]:
    c = Client(local_stack, local_stack.unique_user("console"))
    try:
        yield c
    finally:
        c.close()


# -- helpers ---------------------------------------------------------------------------------------------


def open_execution(page: Any, stack: Any, rid: str, user: str) -> None:
    page.goto(f"{console_url(stack)}#/executions/{rid}?user={user}")
    page.wait_for_selector("#graph[data-drawn='1']", timeout=30_000)


def node_statuses(page: Any) -> dict[str, str]:
    result: dict[str, str] = page.evaluate(
        "() => Object.fromEntries(window.streamerConsole.cy.nodes('.state').map((n) => [n.id(), n.data('status')]))"
    )
    return result


def wait_statuses(page: Any, want: dict[str, str], timeout: float = 60) -> dict[str, str]:
    deadline = time.monotonic() + timeout
    while True:
        got = node_statuses(page)
        if all(got.get(k) == v for k, v in want.items()) or time.monotonic() > deadline:
            return got
        page.wait_for_timeout(200)


def click_state(page: Any, node_id: str) -> None:
    pos = page.evaluate(
        "(id) => { const n = window.streamerConsole.cy.getElementById(id); n.scratch('_t', 1);"
        " const p = n.renderedPosition(); return {x: p.x, y: p.y}; }",
        node_id,
    )
    page.locator("#graph").click(position={"x": pos["x"], "y": pos["y"]})
    page.wait_for_function(
        "(name) => document.querySelector('#inspector h2') &&"
        " document.querySelector('#inspector h2').textContent.startsWith(name)",
        arg=node_id.split("/")[-1],
    )


def asl_node_ids(definition: dict[str, Any], prefix: str = "") -> set[str]:
    ids: set[str] = set()
    for name, state in definition["States"].items():
        ids.add(prefix + name)
        processor = state.get("ItemProcessor") or state.get("Iterator")
        if processor:
            ids |= asl_node_ids(processor, f"{prefix}{name}/")
        for i, branch in enumerate(state.get("Branches", []), 1):
            ids |= asl_node_ids(branch, f"{prefix}{name}/branch{i}/")
    return ids


# -- tests -----------------------------------------------------------------------------------------------


def test_a_submitted_request_appears_in_the_list_without_a_reload(local_stack: Any, page: Any, client: Client) -> None:
    page.goto(console_url(local_stack) + "#/executions")
    page.wait_for_selector("#live.on", timeout=30_000)
    page.evaluate("() => { window.__sameDocument = true; }")
    rid = client.submit("echo", {"message": "watch me", "steps": 3, "delay_ms": 200})
    row = page.wait_for_selector(f"#list tr[data-request-id='{rid}']", timeout=30_000)
    assert page.evaluate("() => window.__sameDocument") is True  # no reload happened
    client.wait(rid)
    page.wait_for_selector(f"#list tr[data-request-id='{rid}'] .status.SUCCEEDED", timeout=30_000)
    assert "echo" in row.inner_text()
    screenshot(page, "console-list.png")


def test_textstats_graph_has_every_state_and_ends_succeeded(local_stack: Any, page: Any, client: Client) -> None:
    text = "the cat sat on the mat and the dog sat on the log " * 1700  # ~87 K characters: 6 chunks
    rid = client.submit("textstats", {"text": text, "top": 3})
    open_execution(page, local_stack, rid, client.user)
    ids = set(node_statuses(page))
    assert ids == asl_node_ids(TEXTSTATS)
    assert "Count/CountChunk" in ids  # the Map's iterator, drawn inside the Map
    parent = page.evaluate("() => window.streamerConsole.cy.getElementById('Count/CountChunk').parent().id()")
    assert parent == "Count"
    client.wait(rid)
    final = wait_statuses(page, {"Merge": "succeeded", "Succeeded": "succeeded", "Count/CountChunk": "succeeded"})
    assert final["NotifyFailure"] == "not_reached" and final["Failed"] == "not_reached"
    assert all(final[s] == "succeeded" for s in ("Split", "ReportSplit", "Count", "Merge", "NotifyResult")), final
    label = page.evaluate("() => window.streamerConsole.cy.getElementById('Count').data('label')")
    assert "6/6 done" in label and "failed" not in label
    fill = page.evaluate(
        "() => window.streamerConsole.cy.getElementById('Merge').style('background-color').replace(/ /g, '')"
    )
    assert fill == SUCCEEDED_FILL
    # The timeline has a row per Map iteration.
    assert page.locator("#timeline .tl-row .name.indent").count() == 6
    screenshot(page, "console-execution.png")


def test_state_colours_change_live_while_it_runs(local_stack: Any, page: Any, client: Client) -> None:
    # 8 steps of 2.5 s: the page must be open and drawn while Echo runs, and a loaded CI machine took more than the
    # 3.2 s that 8 x 400 ms gave it (the page's first look found Echo already succeeded).
    rid = client.submit("echo", {"message": "slowly", "steps": 8, "delay_ms": 2500})
    open_execution(page, local_stack, rid, client.user)
    running = wait_statuses(page, {"Echo": "running"}, timeout=30)
    assert running["Echo"] == "running", running
    assert running["NotifyResult"] == "not_reached"
    screenshot(page, "console-running.png")
    client.wait(rid)
    final = wait_statuses(page, {"Echo": "succeeded", "NotifyResult": "succeeded", "Succeeded": "succeeded"})
    assert final == {
        "Echo": "succeeded",
        "NotifyResult": "succeeded",
        "Succeeded": "succeeded",
        "NotifyFailure": "not_reached",
        "Failed": "not_reached",
    }
    # Clicking a state shows its output.
    click_state(page, "Echo")
    page.wait_for_selector("#inspector .state-output pre")
    assert '"message": "slowly"' in page.inner_text("#inspector .state-output")
    # The request panel lists every progress event with its seq, and the terminal one.
    rows = page.locator("#events tbody tr")
    assert rows.count() == 9
    assert rows.nth(0).inner_text().split()[0] == "1" and "result" in rows.nth(8).inner_text()
    # The event history tab: Step Functions' own events, first to last.
    page.click(".tabs button[data-tab='history']")
    page.wait_for_selector("#history tbody tr")
    history = page.locator("#history tbody tr")
    assert "ExecutionStarted" in history.nth(0).inner_text()
    assert "ExecutionSucceeded" in history.nth(history.count() - 1).inner_text()


def test_retried_attempts_show_their_errors_and_delays(local_stack: Any, page: Any, client: Client) -> None:
    rid = client.submit("echo", {"message": "third time", "fail_times": 2, "steps": 1})
    assert client.wait(rid)[-1]["type"] == "result"
    open_execution(page, local_stack, rid, client.user)
    wait_statuses(page, {"Succeeded": "succeeded"})
    click_state(page, "Echo")
    retries = page.locator("#inspector table.retries tbody tr")
    assert retries.count() == 2
    first, second = retries.nth(0).inner_text(), retries.nth(1).inner_text()
    assert "RetryableStepError" in first and "RetryableStepError" in second
    # Retry: IntervalSeconds 1, BackoffRate 2 — about 1 s, then about 2 s (statemachines/echo.asl.json).
    assert " s" in first and " s" in second
    assert "3" in page.inner_text("#inspector dl")  # attempts


def test_a_failing_echo_shows_error_and_cause_on_the_failed_state(local_stack: Any, page: Any, client: Client) -> None:
    rid = client.submit("echo", {"message": "boom", "fail": True})
    events = client.wait(rid)
    assert events[-1]["type"] == "error"
    open_execution(page, local_stack, rid, client.user)
    final = wait_statuses(page, {"NotifyFailure": "succeeded"})
    assert final["Echo"] in ("caught", "failed"), final
    assert final["NotifyResult"] == "not_reached"
    click_state(page, "Echo")
    inspector = page.inner_text("#inspector")
    assert "StepFailedError" in inspector
    assert "echo failed because the payload asked it to" in inspector
    screenshot(page, "console-failed.png")


def test_cancel_from_the_console_reaches_the_client(local_stack: Any, page: Any, client: Client) -> None:
    rid = client.submit("echo", {"message": "stop me", "steps": 30, "delay_ms": 500})
    open_execution(page, local_stack, rid, client.user)
    wait_statuses(page, {"Echo": "running"}, timeout=30)
    page.click("#cancel")
    events = client.wait(rid, timeout=60)
    assert events[-1]["type"] == "error" and events[-1].get("status") == "CANCELLED", events[-1]
    page.wait_for_selector(".exec-head .status.CANCELLED", timeout=30_000)
    assert page.is_enabled("#rerun")
    # Run it again: a new request id with the same payload, and the page follows it.
    page.click("#rerun")
    page.wait_for_function("(rid) => !location.hash.includes(rid)", arg=rid, timeout=30_000)
    new_rid = page.evaluate("() => decodeURIComponent(location.hash.split('/')[2].split('?')[0])")
    assert new_rid != rid
    page.wait_for_selector("#graph[data-drawn='1']", timeout=30_000)
    page.wait_for_function(
        "() => document.querySelector('#tab-request pre') &&"
        " document.querySelector('#tab-request pre').textContent.includes('stop me')",
        timeout=30_000,
    )
    page.click("#cancel", timeout=30_000)  # stop the rerun too
    page.wait_for_selector(".exec-head .status.CANCELLED", timeout=60_000)


def test_connections_and_overview_pages(local_stack: Any, page: Any, client: Client) -> None:
    rid = client.submit("echo", {"message": "counted", "steps": 1})
    client.wait(rid)
    user = client.user
    page.goto(console_url(local_stack) + "#/connections")
    page.wait_for_selector("#connections")
    assert user in page.inner_text("#connections")
    screenshot(page, "console-connections.png")
    page.goto(console_url(local_stack) + "#/overview")
    page.wait_for_selector("#ov svg")
    text = page.inner_text("#ov")
    assert "echo" in text and "SUCCEEDED" in text.upper()
    # Locally every figure comes from the EMF metrics the handlers wrote, and the page says so per chart.
    assert page.get_attribute("#ov-source", "data-source") == "metrics"
    assert "RequestsSubmitted" in text and "StepDuration" in text and "RequestDuration" in text
    steps = page.text_content("svg[aria-label='Duration per step (p50, p99)']") or ""
    assert "echo" in steps  # the echo step's attempts
    screenshot(page, "console-overview.png")


#: The recorded ``map_in_parallel`` case's definition (``tests/unit/data/observe/record.py``): a Parallel whose
#: second branch is a Map of twelve two-state iterations over ``$.items``, then the top-level ``Done``.
RECORDED = ROOT / "tests" / "unit" / "data" / "observe"
MAP_IN_PARALLEL = json.loads((RECORDED / "map_in_parallel.json").read_text())["definition"]

#: Every ASL state type the console draws, in one small workflow (deployed only for this test); its Parallel is
#: the recorded ``map_in_parallel`` one.
ALL_TYPES = {
    "Comment": "console test: one state of every type",
    "StartAt": "Prepare",
    "States": {
        "Prepare": {"Type": "Pass", "Result": list(range(1, 13)), "ResultPath": "$.items", "Next": "Pause"},
        "Pause": {"Type": "Wait", "Seconds": 1, "Next": "Route"},
        "Route": {
            "Type": "Choice",
            "Choices": [{"Variable": "$.items[0]", "NumericEquals": 1, "Next": "Work"}],
            "Default": "Reject",
        },
        "Work": {
            "Type": "Task",
            "Resource": "arn:aws:lambda:us-east-1:123456789012:function:StepRunnerFunction",
            "Parameters": {
                "step": "echo",
                "request.$": "$.request",
                "input": {"message": "every type", "steps": 1},
                "attempt.$": "$$.State.RetryCount",
            },
            "ResultPath": "$.echo",
            "Next": "Fan",
        },
        "Fan": MAP_IN_PARALLEL["States"]["Fan"],
        "Reject": {"Type": "Fail", "Error": "Rejected", "Cause": "no route"},
        "Done": {"Type": "Succeed"},
    },
}


def stack_sources(stack: Any, directory: Path) -> Any:
    """``streamer.observe.Sources`` of ``stack``."""
    from tests.e2e.test_console_http import write_stack_state

    from streamer.observe import Sources

    return Sources.local(write_stack_state(stack, directory))


def test_every_state_type_is_drawn_distinctly(local_stack: Any, page: Any, tmp_path: Path) -> None:
    sfn = local_stack.client("stepfunctions")
    echo = sfn.describe_state_machine(
        stateMachineArn="arn:aws:states:us-east-1:123456789012:stateMachine:streamer-echo"
    )
    workflow = f"alltypes{int(time.time() * 1000)}"
    sfn.create_state_machine(name=f"streamer-{workflow}", definition=json.dumps(ALL_TYPES), roleArn=echo["roleArn"])
    # Submitted through RequestService (the router's own path, past its plugin check): the requests table's
    # stream starts the execution.
    user = local_stack.unique_user("types")
    rid = stack_sources(local_stack, tmp_path).service.submit(user, workflow, {}, None).request.request_id
    open_execution(page, local_stack, rid, user)
    # Every state but the Fail is reached and succeeds: the Map inside the Parallel branch, its iterator's state
    # and the top-level Succeed after the Parallel included (observe.states once put Done inside an iteration
    # and the iterator's Double at the top level).
    want = {node: "succeeded" for node in asl_node_ids(ALL_TYPES) if node != "Reject"}
    final = wait_statuses(page, want, timeout=60)
    assert set(final) == asl_node_ids(ALL_TYPES)
    assert final["Reject"] == "not_reached"
    assert {s: final[s] for s in want} == want, json.dumps(final)
    assert {"Done", "Fan/branch2/Each/Double"} <= set(want)
    shapes = page.evaluate(
        "() => Object.fromEntries(window.streamerConsole.cy.nodes('.state').map((n) =>"
        " [n.data('type'), [n.style('shape'), n.style('border-style'), n.isParent()]]))"
    )
    assert len({tuple(v) for v in shapes.values()}) == len(shapes) == 8, shapes  # eight types, eight looks
    assert shapes["Map"][2] and shapes["Parallel"][2]  # containers
    parents = page.evaluate(
        "() => ['Fan/branch1', 'Fan/branch2/Each', 'Fan/branch2/Each/Double'].map((id) =>"
        " window.streamerConsole.cy.getElementById(id).parent().id())"
    )
    assert parents == ["Fan", "Fan/branch2", "Fan/branch2/Each"]
    label = page.evaluate("() => window.streamerConsole.cy.getElementById('Fan/branch2/Each').data('label')")
    # The Map inside the Parallel branch counts its twelve iterations: more than moto's Map workers, so later
    # iterations chain to earlier ones in the history (observe.states once lost them).
    assert "12/12 done" in label, label
    screenshot(page, "console-all-types.png")


def test_list_filters_and_pages_in_the_browser(local_stack: Any, page: Any, client: Client) -> None:
    rids = [client.submit("echo", {"message": f"page {i}", "steps": 1}) for i in range(3)]
    failed = client.submit("echo", {"message": "no", "fail": True})
    for rid in [*rids, failed]:
        client.wait(rid)
    page.goto(f"{console_url(local_stack)}#/executions?limit=3")
    page.fill("#filters input[name='user']", client.user)
    page.click("#filters button[type='submit']")
    rows = "#list tbody tr[data-request-id]"
    shown = "(trs) => trs.map((t) => t.dataset.requestId)"
    page.wait_for_function(
        "(user) => [...document.querySelectorAll('#list tbody tr[data-request-id]')].length === 3 &&"
        " location.hash.includes(user)",
        arg=client.user,
    )
    first = page.eval_on_selector_all(rows, shown)
    # Newest first; the requests table keeps seconds, so requests of the same second come in either order.
    page.click("#next")
    page.wait_for_function(
        "() => location.hash.includes('cursors=') &&"
        " [...document.querySelectorAll('#list tbody tr[data-request-id]')].length === 1"
    )
    second = page.eval_on_selector_all(rows, shown)
    assert sorted(first + second) == sorted([*rids, failed])
    assert page.is_disabled("#next")
    page.click("#prev")
    page.wait_for_function(
        "() => !location.hash.includes('cursors=') &&"
        " [...document.querySelectorAll('#list tbody tr[data-request-id]')].length === 3"
    )
    assert page.eval_on_selector_all(rows, shown) == first
    # The status filter: only the failed one.
    page.select_option("#filters select[name='status']", "FAILED")
    page.click("#filters button[type='submit']")
    page.wait_for_function(
        "() => [...document.querySelectorAll('#list tbody tr[data-request-id]')].length === 1", timeout=30_000
    )
    assert page.eval_on_selector_all(rows, shown) == [failed]
    assert page.locator(f"#list tr[data-request-id='{failed}'] .status.FAILED").count() == 1
    # A time range that ends before these requests: nothing.
    page.fill("#filters input[name='to']", "2001-01-01T00:00")
    page.click("#filters button[type='submit']")
    page.wait_for_selector("#list .empty")


def test_a_request_without_an_execution_shows_why(local_stack: Any, page: Any, tmp_path: Path) -> None:
    """A workflow that is not deployed: the stream router rejects the request (no execution, no definition)."""
    user = local_stack.unique_user("nodef")
    src = stack_sources(local_stack, tmp_path)
    rid = src.service.submit(user, "not-deployed", {"x": 1}, None).request.request_id
    page.goto(f"{console_url(local_stack)}#/executions/{rid}?user={user}")
    page.wait_for_selector(".exec-head .status.FAILED", timeout=30_000)
    assert "No state machine definition for workflow not-deployed" in page.inner_text("#graph")
    assert "not deployed" in page.inner_text("#tab-request")
    assert page.inner_text("#timeline").strip() == "No state has started yet."
