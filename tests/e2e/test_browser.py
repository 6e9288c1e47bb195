"""A real browser (headless Chromium) is a client: the subprotocol handshake browsers insist on works.

Browsers cannot set headers on a WebSocket handshake; they offer subprotocols, and drop the connection when
the response does not select one of them. This drives Debian's Chromium through Playwright (no browser
download: ``executable_path``). `.ci/run` installs Chromium; elsewhere the test is skipped when it is absent.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from typing import Any

import pytest

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]

pytestmark = pytest.mark.skipif(
    not os.path.exists(CHROMIUM), reason="Debian's chromium is not installed (`.ci/run` installs it)"
)

SCRIPT = """
async ([url, token, payload]) => {
  const frames = [];
  const ws = new WebSocket(url, ["streamer.v1", "bearer." + token]);
  await new Promise((resolve, reject) => { ws.onopen = resolve; ws.onerror = () => reject(new Error("refused")); });
  const protocol = ws.protocol;
  const done = new Promise((resolve) => {
    ws.onmessage = (m) => {
      const f = JSON.parse(m.data);
      frames.push(f);
      if (f.type === "result" || (f.type === "error" && f.seq)) resolve();
    };
  });
  ws.send(JSON.stringify({action: "submit", workflow: "echo", payload}));
  await done;
  ws.close();
  return {protocol, frames};
}
"""

REFUSED = """
async ([url, token]) => new Promise((resolve) => {
  const ws = new WebSocket(url, ["streamer.v1", "bearer." + token]);
  ws.onopen = () => resolve("open");
  ws.onclose = (e) => resolve("closed " + e.code);
})
"""


@pytest.fixture(scope="module")
def page() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        try:
            yield browser.new_page()
        finally:
            browser.close()


def test_browser_submits_and_receives_live_progress(local_stack: Any, page: Any) -> None:
    # A page of the stack's own origin (a blank page's origin is "null", which the Origin check refuses).
    page.goto(local_stack.http_url + "/")
    token = local_stack.token(local_stack.unique_user("browser"))
    out = page.evaluate(SCRIPT, [local_stack.ws_url, token, {"message": "from a browser", "steps": 3, "delay_ms": 150}])
    assert out["protocol"] == "streamer.v1"
    frames = out["frames"]
    assert frames[0]["type"] == "ack"
    events = frames[1:]
    assert [e["type"] for e in events] == ["progress"] * 3 + ["result"]
    assert [e["seq"] for e in events] == [1, 2, 3, 4]
    assert events[-1]["output"] == {"message": "from a browser"}


def test_browser_with_a_bad_token_never_opens(local_stack: Any, page: Any) -> None:
    assert page.evaluate(REFUSED, [local_stack.ws_url, "not-a-token"]) == "closed 1006"
