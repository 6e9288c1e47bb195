"""``streamer console``: the web console on its own port, against a deployed stack or a running ``streamer local``.

``streamer console --stack NAME [--profile P] [--region R]`` reads the stack's outputs (table names, state
machine ARNs) through ``streamer.observe.Sources.stack``; without ``--stack`` it finds a running
``streamer local`` (``Sources.local``), which also serves the console itself at ``http://H:P/console``.

It binds 127.0.0.1 unless ``--host`` says otherwise; on any other interface it refuses to start without a
token (``--console-token`` or ``$STREAMER_CONSOLE_TOKEN``), and then every request must carry it (401
otherwise). Stdout carries one line, ``streamer console ready URL``, once it serves; Ctrl-C stops it.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from pathlib import Path
from typing import Any

__all__ = ["DEFAULT_PORT", "DESCRIPTION", "HELP", "READY_PREFIX", "arguments", "run_console"]

HELP = "the web console (executions, graphs, connections, overview) against a stack or `streamer local`"
DESCRIPTION = """The web console (executions, each execution's graph and history, connections, overview) against a
deployed stack (--stack NAME, read from its CloudFormation outputs) or a running `streamer local` (which also serves
it itself at http://HOST:PORT/console/). Binds 127.0.0.1; another interface needs a token. See docs/console.md."""

READY_PREFIX = "streamer console ready "
DEFAULT_PORT = 8780
#: Seconds between two reads of the sources for a live page: against AWS each read is a few API calls
#: (DescribeExecution, GetExecutionHistory, a DynamoDB query), so a second keeps an open page cheap.
AWS_POLL_INTERVAL = 1.0
LOCAL_POLL_INTERVAL = 0.5


def _sources(args: argparse.Namespace) -> Any:
    from streamer import observe

    if args.stack:
        return observe.Sources.stack(profile=args.profile, region=args.region, stack=args.stack)
    return observe.Sources.local(Path(args.state_file) if args.state_file else None)


async def _serve(args: argparse.Namespace, sources: Any, token: str | None) -> int:
    from streamer.console.app import ConsoleConfig, serve

    config = ConsoleConfig(
        sources=sources,
        token=token,
        poll_interval=AWS_POLL_INTERVAL if args.stack else LOCAL_POLL_INTERVAL,
        title=f"streamer · {args.stack}" if args.stack else "streamer · local",
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        async with serve(config, args.host, args.port) as url:
            shown = f"{url}?token=…" if token else url
            print(f"streamer console on {shown} (Ctrl-C stops it)", file=sys.stderr, flush=True)
            print(f"{READY_PREFIX}{url}", flush=True)
            await stop.wait()
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
    return 0


def run_console(args: argparse.Namespace) -> int:
    """0 after Ctrl-C; 1 when the sources cannot be reached; 2 for a non-loopback host without a token."""
    from streamer.console.app import env_token, token_required
    from streamer.errors import StreamerError

    token = args.console_token or env_token()
    if token_required(args.host) and not token:
        print(
            f"streamer console: serving on {args.host} (not a loopback interface) requires a token: "
            "--console-token or $STREAMER_CONSOLE_TOKEN",
            file=sys.stderr,
        )
        return 2
    try:
        sources = _sources(args)
    except StreamerError as exc:
        print(f"streamer console: {exc}", file=sys.stderr)
        return 1
    try:
        return asyncio.run(_serve(args, sources, token))
    except OSError as exc:
        print(f"streamer console: cannot listen on {args.host}:{args.port}: {exc.strerror or exc}", file=sys.stderr)
        return 1


def arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--stack", default=None, help="deployed stack name (default: a running `streamer local`)")
    p.add_argument("--profile", default=None, help="AWS profile (with --stack)")
    p.add_argument("--region", default=None, help="AWS region (with --stack)")
    p.add_argument("--state-file", default=None, help="the state file of the `streamer local` to watch")
    p.add_argument("--host", default="127.0.0.1", help="interface (default 127.0.0.1; others need a token)")
    p.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port (default {DEFAULT_PORT}; 0 = a free one)")
    p.add_argument(
        "--console-token",
        default=None,
        help="require this token on every request (default $STREAMER_CONSOLE_TOKEN); open URL?token=… once",
    )
    p.set_defaults(func=run_console)
