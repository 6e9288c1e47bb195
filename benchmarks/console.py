"""The web console's two benchmarks, against a real ``streamer local`` (subprocess, real sockets).

* ``console_list``: the executions list with 1,000 executions stored — server time of one page
  (``GET /console/api/executions?limit=50``, first page and the next one) vs one bare Step Functions
  ``ListExecutions(maxResults=50)`` call to the same moto server.
* ``console_execution``: the execution page of a textstats run with 100 Map iterations — server time of
  ``GET /console/api/executions/{id}`` (the detail with every iteration) vs one bare ``GetExecutionHistory``
  of that execution; and in Chromium, the time from navigation to a drawn graph vs the time to load the
  list page (same browser, same page object).

A textstats request cannot carry 100 chunks (16 Ki characters each) through a 128 KiB WebSocket message, so
the second benchmark deploys ``textstats100``: the textstats definition with its ``Split`` task replaced by a
Pass state that yields 100 short chunks — the same Map, iterator, steps and notify tasks — and submits its
request through the platform's own ``RequestService.submit`` (the table's stream starts the execution).
"""

from __future__ import annotations

import asyncio
import copy
import json
import os
import shutil
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from benchmarks import runner

ROOT = Path(__file__).resolve().parents[1]
SECRET = "bench-secret-" + "x" * 32
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--no-first-run"]  # fmt: skip


def _report() -> Callable[..., None]:
    report: Callable[..., None] = runner().report
    return report


def _interleaved() -> Callable[..., tuple[float, float]]:
    interleaved: Callable[..., tuple[float, float]] = runner().interleaved
    return interleaved


@contextmanager
def local_stack() -> Iterator[dict[str, Any]]:
    """``streamer local`` on a free port (:func:`benchmarks._procs.streamer_local`); yields its pid and endpoints
    (ws, http, moto, sfn, lambda)."""
    from benchmarks._procs import streamer_local

    with streamer_local() as stack:
        yield {"ws": stack.ws, "http": stack.ws.replace("ws://", "http://"), "pid": stack.pid, **stack.endpoints}


def _client(service: str, url: str) -> Any:
    import boto3
    from botocore.config import Config

    return boto3.client(
        service,
        endpoint_url=url,
        region_name="us-east-1",
        aws_access_key_id="bench",
        aws_secret_access_key="bench",
        config=Config(retries={"max_attempts": 0}),
    )


def _get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=60) as resp:
        body: bytes = resp.read()
        return body


def _wait(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(0.5)


async def _submit_many(ws_url: str, total: int, clients: int) -> None:
    from streamer.auth import mint_token
    from streamer.client import StreamerClient

    async def one_client(i: int) -> None:
        async with await StreamerClient.connect(ws_url, mint_token(SECRET, f"bench-{i}")) as c:
            for n in range(total // clients):
                await c.submit("echo", {"message": f"{i}-{n}", "steps": 1})

    await asyncio.gather(*(one_client(i) for i in range(clients)))


def bench_console_list() -> None:
    """The list page over 1,000 executions vs one bare ListExecutions call."""
    total = 1000
    with local_stack() as ep:
        sfn = _client("stepfunctions", ep["sfn"])
        arn = "arn:aws:states:us-east-1:123456789012:stateMachine:streamer-echo"

        def ended() -> int:
            pages = sfn.get_paginator("list_executions").paginate(stateMachineArn=arn, statusFilter="SUCCEEDED")
            return sum(len(p["executions"]) for p in pages)

        t = time.perf_counter()
        for batch in range(10):  # in batches so moto never runs 1,000 executions at once
            asyncio.run(_submit_many(ep["ws"], total // 10, clients=5))
            _wait(lambda b=batch: ended() >= (b + 1) * total // 10, 600, "executions to end")
        print(f"  ({total} echo executions stored and ended in {time.perf_counter() - t:.0f} s)", flush=True)
        page1 = f"{ep['http']}/console/api/executions?limit=50"
        cursor = json.loads(_get(page1))["next_cursor"]
        page2 = f"{page1}&cursor={urllib.request.quote(cursor)}"
        bare = lambda: sfn.list_executions(stateMachineArn=arn, maxResults=50)  # noqa: E731
        interleaved, report = _interleaved(), _report()
        base, subj = interleaved(bare, lambda: _get(page1), rounds=8, inner=3)
        report("console: list page 1 (1,000 executions)", "one ListExecutions(50)", base, subj)
        base, subj = interleaved(bare, lambda: _get(page2), rounds=8, inner=3)
        report("console: list page 2 (1,000 executions)", "one ListExecutions(50)", base, subj)


def _textstats100() -> dict[str, Any]:
    definition: dict[str, Any] = json.loads((ROOT / "statemachines" / "textstats.asl.json").read_text())
    split = definition["States"]["Split"]
    definition = copy.deepcopy(definition)
    definition["States"]["Split"] = {
        "Type": "Pass",
        "Comment": "benchmark: 100 chunks without a 1.6 MB text",
        "Result": {"chunks": [f"chunk {i} the cat sat on the mat" for i in range(100)], "top": 3},
        "ResultPath": "$.payload",
        "Next": split["Next"],
    }
    return definition


def _deploy_textstats100(ep: dict[str, Any]) -> None:
    sfn = _client("stepfunctions", ep["sfn"])
    text = json.dumps(_textstats100())
    lambda_arn = "arn:aws:lambda:us-east-1:123456789012:function:"
    text = text.replace("${StepRunnerFunctionArn}", lambda_arn + "StepRunnerFunction")
    text = text.replace("${NotifyFunctionArn}", lambda_arn + "NotifyFunction")
    echo = sfn.describe_state_machine(
        stateMachineArn="arn:aws:states:us-east-1:123456789012:stateMachine:streamer-echo"
    )
    sfn.create_state_machine(name="streamer-textstats100", definition=text, roleArn=echo["roleArn"])


def _submit_direct(ep: dict[str, Any], user: str, workflow: str, payload: dict[str, Any]) -> str:
    """Submit through ``RequestService.submit`` (the router's path, past its plugin check) of this stack."""
    from streamer.observe import Sources
    from streamer.observe.localstate import ready_state

    src = Sources.from_state(ready_state(ep["pid"], ep["ws"], ep))
    return str(src.service.submit(user, workflow, payload, None).request.request_id)


def bench_console_execution() -> None:
    """The execution page of a 100-iteration textstats run: server time and time to a drawn graph."""
    with local_stack() as ep:
        _deploy_textstats100(ep)
        user = "bench-user"
        rid = _submit_direct(ep, user, "textstats100", {"text": "unused: Split is a Pass state here"})
        detail_url = f"{ep['http']}/console/api/executions/{rid}?user={user}"

        def status() -> str:
            try:
                return str(json.loads(_get(detail_url))["request"]["status"])
            except Exception:
                return "PENDING"

        _wait(lambda: status() in ("SUCCEEDED", "FAILED"), 600, "the textstats100 request to end")
        detail = json.loads(_get(detail_url))
        count = next(s for s in detail["states"] if s["name"] == "Count")["iterations"]
        assert count["total"] == 100, count
        arn = detail["execution"]["arn"]
        sfn = _client("stepfunctions", ep["sfn"])
        events = sfn.get_execution_history(executionArn=arn, maxResults=1000)["events"]
        ended = sum(e["type"] == "MapIterationSucceeded" for e in events)
        print(
            f"  (textstats100 {detail['request']['status']}: {len(events)} history events,"
            f" {ended} MapIterationSucceeded;"
            f" the console counts {count['succeeded']} succeeded of {count['total']})",
            flush=True,
        )
        interleaved, report = _interleaved(), _report()
        base, subj = interleaved(
            lambda: sfn.get_execution_history(executionArn=arn, maxResults=1000), lambda: _get(detail_url), 6, 2
        )
        report("console: execution page, 100 Map iterations", "one GetExecutionHistory", base, subj)
        if not os.path.exists(CHROMIUM):
            print("  (chromium absent: time to a drawn graph not measured)", flush=True)
            return
        from playwright.sync_api import sync_playwright

        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            graph_url = f"{ep['http']}/console/#/executions/{rid}?user={user}"
            list_url = f"{ep['http']}/console/#/executions"

            def drawn() -> None:
                page.goto("about:blank")
                page.goto(graph_url)
                page.wait_for_selector("#graph[data-drawn='1']", timeout=60_000)

            def listed() -> None:
                page.goto("about:blank")
                page.goto(list_url)
                page.wait_for_selector("#list tbody tr", timeout=60_000)

            drawn()  # warm the browser cache
            base, subj = interleaved(listed, drawn, rounds=5, inner=1)
            browser.close()
        report("console: Chromium, navigation → drawn graph", "navigation → list shown", base, subj)
