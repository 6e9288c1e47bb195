"""``streamer submit``: send one request over the WebSocket, show its progress, print its result.

:func:`run_submit` is the whole command as a plain function (``streamer demo`` calls it too), over
:class:`streamer.client.StreamerClient` (which reconnects and resumes on its own). Exit codes: 0 the request
succeeded, 1 it failed, was refused or timed out, or the server could not be reached; 2 a bad ``--payload``;
130 interrupted.

Ctrl-C (SIGINT) cancels the request: the command says so on stderr, sends ``cancel`` and waits for the
request's terminal event (``CANCELLED``, or the result if it had already ended). A second Ctrl-C stops waiting
and leaves the request running (the command prints its id, to ``resume`` or ``cancel`` later). The request id
is chosen here when ``--request-id`` is not given, so a Ctrl-C before the server's ``ack`` can still cancel it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import sys
import uuid
from collections.abc import AsyncIterator
from types import TracebackType
from typing import Any

from streamer.config import Env, dev_jwt_secret

__all__ = ["DEFAULT_URL", "DESCRIPTION", "HELP", "arguments", "run_submit"]

HELP = "submit one request, show its live progress, print its result"
DESCRIPTION = """Connect to a streamer WebSocket endpoint (`streamer local` by default), submit one request for
WORKFLOW, print each progress event and then the result or the error. Exit code 0 when the request succeeded, 1
when it failed, was refused or timed out, 2 for a bad --payload."""

DEFAULT_URL = "ws://127.0.0.1:8765/"


class _JsonLines:
    """One JSON event per line on stdout, for scripts."""

    def __enter__(self) -> _JsonLines:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def accepted(self, request_id: str) -> None:
        return None

    def event(self, event: dict[str, Any]) -> None:
        print(json.dumps(event), flush=True)

    def finish(self, final: dict[str, Any]) -> None:
        return None


class _ProgressBar:
    """A live progress bar (rich), each progress event on its own line above it, then the result."""

    def __init__(self, workflow: str) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn

        self.workflow = workflow
        self.console = Console(stderr=False)
        self.progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            TaskProgressColumn(),
            TimeElapsedColumn(),
            console=self.console,
            transient=False,
        )
        self.task: Any = None

    def __enter__(self) -> _ProgressBar:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._stop()

    def _stop(self) -> None:
        # Only a bar that was shown is stopped: stopping a never-started one still writes a line.
        if self.task is not None:
            self.progress.stop()

    def accepted(self, request_id: str) -> None:
        self.console.print(f"[bold]{self.workflow}[/] request [cyan]{request_id}[/] accepted")
        self.task = self.progress.add_task("waiting for the execution", total=100)
        self.progress.start()

    def event(self, event: dict[str, Any]) -> None:
        if event["type"] == "progress":
            desc = f"#{event['seq']} {event['step']}: {event.get('message', '')}"
            self.progress.update(self.task, completed=event["percent"], description=desc)
            self.progress.console.print(
                f"  seq {event['seq']:>3}  {event['step']:<16} {event['percent']:>3}%  {event.get('message', '')}"
            )
        elif event["type"] == "result":
            self.progress.update(self.task, completed=100, description="done")

    def finish(self, final: dict[str, Any]) -> None:
        self._stop()
        if final.get("type") == "result":
            self.console.print_json(json.dumps(final["output"]))
        else:
            self.console.print(f"[red]{final.get('status')} {final.get('code')}[/]: {final.get('message')}")


def _notice(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


async def _submit_interruptibly(
    url: str,
    token: str,
    workflow: str,
    body: dict[str, Any],
    request_id: str,
    timeout: float,
    view: _JsonLines | _ProgressBar,
) -> tuple[dict[str, Any], bool]:
    """The round trip with SIGINT handled: ``(terminal event or {}, interrupted)``."""
    from streamer.client import StreamerClient

    loop = asyncio.get_running_loop()
    interrupts: asyncio.Queue[None] = asyncio.Queue()
    # No signal handlers outside the main thread or on Windows: Ctrl-C then interrupts as Python does.
    with contextlib.suppress(NotImplementedError, RuntimeError):
        loop.add_signal_handler(signal.SIGINT, interrupts.put_nowait, None)
    count = 0
    # A cancel sent before the ack could overtake the submit (the gateway routes messages concurrently) and
    # be answered NOT_FOUND: it is sent once the ack is in.
    state = {"acked": False, "cancel": False}
    try:
        client = await StreamerClient.connect(url, token)
        async with client:
            steps: AsyncIterator[Any] = _steps(client, workflow, body, request_id, timeout, view, state)
            nxt: asyncio.Future[Any] = asyncio.ensure_future(anext(steps))
            intr: asyncio.Future[None] = asyncio.ensure_future(interrupts.get())
            final: dict[str, Any] = {}
            try:
                while True:
                    await asyncio.wait({nxt, intr}, return_when=asyncio.FIRST_COMPLETED)
                    if intr.done():
                        count += 1
                        if count == 1:
                            _notice(f"cancelling request {request_id} (press Ctrl-C again to leave it running) …")
                            state["cancel"] = True
                            if state["acked"]:
                                await client.send({"action": "cancel", "request_id": request_id})
                            intr = asyncio.ensure_future(interrupts.get())
                            continue
                        _notice(f"left running: request {request_id} (its events stay stored: resume or cancel it)")
                        return final, True
                    try:
                        final = nxt.result()
                    except StopAsyncIteration:
                        if count:
                            outcome = final.get("code") or final.get("status") or final.get("type")
                            _notice(f"request {request_id} ended: {outcome}")
                        return final, count > 0
                    nxt = asyncio.ensure_future(anext(steps))
            finally:
                for fut in (nxt, intr):
                    fut.cancel()
                with contextlib.suppress(BaseException):
                    await steps.aclose()  # type: ignore[attr-defined]
    finally:
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.remove_signal_handler(signal.SIGINT)


async def _steps(
    client: Any,
    workflow: str,
    body: dict[str, Any],
    request_id: str,
    timeout: float,
    view: _JsonLines | _ProgressBar,
    state: dict[str, bool],
) -> AsyncIterator[dict[str, Any]]:
    """Submit, then yield each event (shown on ``view``) through the terminal one."""
    rid = await client.submit(workflow, body, request_id)
    state["acked"] = True
    if state["cancel"]:  # interrupted before the ack
        await client.send({"action": "cancel", "request_id": rid})
    view.accepted(rid)
    async for event in client.events(rid, timeout=timeout):
        view.event(event)
        yield event


def run_submit(
    url: str,
    token: str,
    workflow: str,
    payload: str,
    *,
    request_id: str | None = None,
    timeout: float = 300,
    json_lines: bool = False,
) -> int:
    """Submit ``payload`` (JSON text) for ``workflow`` to ``url`` and show it; the exit code (module docstring).

    Every failure is one line on stderr: bad JSON, a refused connection or handshake, an error frame (the
    frame itself with ``json_lines``), no terminal event within ``timeout``.
    """
    from streamer.client import StreamerClientError

    try:
        body = json.loads(payload)
    except json.JSONDecodeError as exc:
        print(f"error: --payload is not JSON: {exc}", file=sys.stderr)
        return 2
    if not isinstance(body, dict):
        print("error: --payload must be a JSON object", file=sys.stderr)
        return 2
    view = _JsonLines() if json_lines else _ProgressBar(workflow)
    rid = request_id or uuid.uuid4().hex
    try:
        with view:
            final, interrupted = asyncio.run(_submit_interruptibly(url, token, workflow, body, rid, timeout, view))
    except StreamerClientError as exc:
        print(json.dumps(exc.frame) if json_lines else f"error: {exc}", file=sys.stderr)
        return 1
    except TimeoutError:
        print(f"error: no terminal event within {timeout}s", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"error: cannot connect to {url}: {exc} (is `streamer local` running?)", file=sys.stderr)
        return 1
    except Exception as exc:  # websockets' InvalidStatus (401/403 …), InvalidHandshake, ConnectionClosed
        print(f"error: connection refused by {url}: {exc}", file=sys.stderr)
        return 1
    if interrupted:
        return 130
    view.finish(final)
    return 0 if final.get("type") == "result" else 1


def _run(args: argparse.Namespace) -> int:
    token = args.token or os.environ.get(Env.TOKEN)
    if not token:
        from streamer.auth import mint_token

        token = mint_token(dev_jwt_secret(), args.sub)
    return run_submit(
        args.url,
        token,
        args.workflow,
        args.payload,
        request_id=args.request_id,
        timeout=args.timeout,
        json_lines=args.json,
    )


def arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("workflow", metavar="WORKFLOW", help="the workflow to run (see `streamer plugins`)")
    p.add_argument("--payload", default="{}", help="the request's input, a JSON object (default {})")
    p.add_argument("--request-id", help="idempotency key, [A-Za-z0-9_-]{1,64} (default: the server assigns one)")
    p.add_argument(
        "--url",
        default=os.environ.get(Env.URL, DEFAULT_URL),
        help=f"WebSocket endpoint (default: $STREAMER_URL, else {DEFAULT_URL}, the `streamer local` default)",
    )
    p.add_argument("--token", help="JWT to connect with (default: $STREAMER_TOKEN, else a local token for --sub)")
    p.add_argument("--sub", default="local-user", help="user of the locally minted token (default local-user)")
    p.add_argument("--timeout", type=float, default=300, help="seconds to wait for the result (default 300)")
    p.add_argument("--json", action="store_true", help="print one JSON event per line instead of a progress bar")
    p.set_defaults(func=_run)
