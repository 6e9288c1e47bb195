"""The ``streamer`` command.

Subcommands: ``local`` (the whole platform on this machine), ``token`` (a development JWT), ``submit``
(send one request and watch it), ``demo`` (what ``make run`` shows), ``plugins``, ``statemachines validate``,
``deploy`` and ``build``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections.abc import Sequence
from typing import Any

__all__ = ["main"]

DEFAULT_URL = "ws://127.0.0.1:8765/"


def jwt_secret() -> str:
    from streamer.config import dev_jwt_secret

    return dev_jwt_secret()


def _cmd_token(args: argparse.Namespace) -> int:
    from streamer.auth import mint_token

    print(
        mint_token(
            args.secret or jwt_secret(), args.sub, ttl_seconds=args.ttl, issuer=args.issuer, audience=args.audience
        )
    )
    return 0


async def _submit(args: argparse.Namespace) -> int:
    from streamer.auth import mint_token
    from streamer.client import ClientError, StreamerClient

    payload = json.loads(args.payload)
    if not isinstance(payload, dict):
        print("error: --payload must be a JSON object", file=sys.stderr)
        return 2
    token = args.token or os.environ.get("STREAMER_TOKEN") or mint_token(jwt_secret(), args.sub)
    try:
        client = await StreamerClient.connect(args.url, token)
    except OSError as exc:
        print(f"error: cannot connect to {args.url}: {exc} (is `streamer local` running?)", file=sys.stderr)
        return 1
    except Exception as exc:  # websockets' InvalidStatus etc.
        print(f"error: connection refused by {args.url}: {exc}", file=sys.stderr)
        return 1
    async with client:
        try:
            rid = await client.submit(args.workflow, payload, args.request_id)
        except ClientError as exc:
            print(json.dumps(exc.frame) if args.json else f"error: {exc}", file=sys.stderr)
            return 1
        final: dict[str, Any] = {}
        if args.json:
            async for ev in client.events(rid, timeout=args.timeout):
                print(json.dumps(ev), flush=True)
                final = ev
        else:
            final = await _watch_with_progress_bar(client, rid, args.workflow, args.timeout)
        return 0 if final.get("type") == "result" else 1


async def _watch_with_progress_bar(client: Any, rid: str, workflow: str, timeout: float) -> dict[str, Any]:
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn

    console = Console(stderr=False)
    console.print(f"[bold]{workflow}[/] request [cyan]{rid}[/] accepted")
    final: dict[str, Any] = {}
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TaskProgressColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    ) as progress:
        task = progress.add_task("waiting for the execution", total=100)
        async for ev in client.events(rid, timeout=timeout):
            if ev["type"] == "progress":
                desc = f"#{ev['seq']} {ev['step']}: {ev.get('message', '')}"
                progress.update(task, completed=ev["percent"], description=desc)
                progress.console.print(
                    f"  seq {ev['seq']:>3}  {ev['step']:<16} {ev['percent']:>3}%  {ev.get('message', '')}"
                )
            else:
                if ev["type"] == "result":
                    progress.update(task, completed=100, description="done")
                final = ev
    if final.get("type") == "result":
        console.print_json(json.dumps(final["output"]))
    else:
        console.print(f"[red]{final.get('status')} {final.get('code')}[/]: {final.get('message')}")
    return final


def _cmd_submit(args: argparse.Namespace) -> int:
    try:
        return asyncio.run(_submit(args))
    except TimeoutError:
        print(f"error: no terminal event within {args.timeout}s", file=sys.stderr)
        return 1
    except json.JSONDecodeError as exc:
        print(f"error: --payload is not JSON: {exc}", file=sys.stderr)
        return 2


def _cmd_demo(args: argparse.Namespace) -> int:
    from streamer.cli.demo import run_demo

    return run_demo(port=args.port)


def _cmd_build(args: argparse.Namespace) -> int:
    from streamer.deploy.build import main as build_main

    return build_main(args.build_args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="streamer",
        description="Long-running requests over WebSockets on AWS: run the platform locally, submit requests, "
        "list plugins, validate and deploy state machines, build the Lambda artifact.",
        epilog="Start with `streamer local` in one terminal and `streamer submit echo --payload "
        '\'{"message": "hi"}\'` in another. Docs: README.md and docs/.',
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("token", help="mint a development JWT (HS256, STREAMER_JWT_SECRET or the local default)")
    p.add_argument("--sub", required=True, help="the user id (JWT sub claim)")
    p.add_argument("--ttl", type=int, default=3600, help="seconds until exp (default 3600)")
    p.add_argument("--secret", help="HS256 secret (default: $STREAMER_JWT_SECRET or the local default)")
    p.add_argument("--issuer", default=os.environ.get("STREAMER_JWT_ISSUER"))
    p.add_argument("--audience", default=os.environ.get("STREAMER_JWT_AUDIENCE"))
    p.set_defaults(func=_cmd_token)

    p = sub.add_parser("submit", help="submit one request, show live progress, print the result")
    p.add_argument("workflow")
    p.add_argument("--payload", default="{}", help="JSON object (default {})")
    p.add_argument("--request-id", help="idempotency key ([A-Za-z0-9_-]{1,64})")
    p.add_argument("--url", default=os.environ.get("STREAMER_URL", DEFAULT_URL))
    p.add_argument("--token", help="JWT (default: $STREAMER_TOKEN, else a local token for --sub)")
    p.add_argument("--sub", default="local-user", help="user for the minted local token")
    p.add_argument("--timeout", type=float, default=300)
    p.add_argument("--json", action="store_true", help="one JSON event per line, for scripts")
    p.set_defaults(func=_cmd_submit)

    p = sub.add_parser("demo", help="start `streamer local`, send requests through it, stop it (make run)")
    p.add_argument("--port", type=int, default=0, help="WebSocket port (default: a free one)")
    p.set_defaults(func=_cmd_demo)

    p = sub.add_parser("build", help="build the Lambda artifact with every plugin (see --help)", add_help=False)
    p.add_argument("build_args", nargs=argparse.REMAINDER)
    p.set_defaults(func=_cmd_build)

    try:
        from streamer.local.stack import add_subcommand as add_local
    except ImportError:  # the local extra is not installed (e.g. inside the Lambda artifact)
        pass
    else:
        add_local(sub)
    from streamer.deploy.statemachines import add_subcommands

    add_subcommands(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    raise SystemExit(main())
