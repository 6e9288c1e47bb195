"""``streamer submit``: send one request over the WebSocket, show its progress, print its result.

:func:`run_submit` is the whole command as a plain function (``streamer demo`` calls it too); the round trip
itself is :func:`streamer.client.submit_and_watch`. Exit codes: 0 the request succeeded, 1 it failed, was
refused or timed out, or the server could not be reached; 2 a bad ``--payload``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from types import TracebackType
from typing import Any

from streamer.config import dev_jwt_secret

__all__ = ["DEFAULT_URL", "add_parser", "run_submit"]

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
    from streamer.client import StreamerClientError, submit_and_watch

    try:
        body = json.loads(payload)
    except json.JSONDecodeError as exc:
        print(f"error: --payload is not JSON: {exc}", file=sys.stderr)
        return 2
    if not isinstance(body, dict):
        print("error: --payload must be a JSON object", file=sys.stderr)
        return 2
    view = _JsonLines() if json_lines else _ProgressBar(workflow)
    try:
        with view:
            final = asyncio.run(
                submit_and_watch(
                    url,
                    token,
                    workflow,
                    body,
                    request_id=request_id,
                    timeout=timeout,
                    on_accepted=view.accepted,
                    on_event=view.event,
                )
            )
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
    view.finish(final)
    return 0 if final.get("type") == "result" else 1


def _run(args: argparse.Namespace) -> int:
    token = args.token or os.environ.get("STREAMER_TOKEN")
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


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser(
        "submit",
        help="submit one request, show its live progress, print its result",
        description="Connect to a streamer WebSocket endpoint (`streamer local` by default), submit one request "
        "for WORKFLOW, print each progress event and then the result or the error. Exit code 0 when the "
        "request succeeded, 1 when it failed, was refused or timed out, 2 for a bad --payload.",
    )
    p.add_argument("workflow", metavar="WORKFLOW", help="the workflow to run (see `streamer plugins`)")
    p.add_argument("--payload", default="{}", help="the request's input, a JSON object (default {})")
    p.add_argument("--request-id", help="idempotency key, [A-Za-z0-9_-]{1,64} (default: the server assigns one)")
    p.add_argument(
        "--url",
        default=os.environ.get("STREAMER_URL", DEFAULT_URL),
        help=f"WebSocket endpoint (default: $STREAMER_URL, else {DEFAULT_URL}, the `streamer local` default)",
    )
    p.add_argument("--token", help="JWT to connect with (default: $STREAMER_TOKEN, else a local token for --sub)")
    p.add_argument("--sub", default="local-user", help="user of the locally minted token (default local-user)")
    p.add_argument("--timeout", type=float, default=300, help="seconds to wait for the result (default 300)")
    p.add_argument("--json", action="store_true", help="print one JSON event per line instead of a progress bar")
    p.set_defaults(func=_run)
