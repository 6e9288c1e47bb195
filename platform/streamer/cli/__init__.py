"""The ``streamer`` command: every subcommand, and the only place the package uses ``argparse``.

Each subcommand group is one module with ``add_parser(subparsers)``, which registers its parser(s) and sets
``func`` (``args.func(args) -> int``, the exit code). The modules call plain library functions
(``streamer.client``, ``streamer.deploy.*``, ``streamer.local``); nothing outside this package imports it.

``streamer --help`` lists, in this order: ``local`` (the whole platform on this machine), ``submit`` (send
one request and watch it), ``token`` (a development JWT), ``demo`` (what ``make run`` shows), ``console``
(the web console), ``plugins``, ``statemachines validate|deploy`` and ``build`` (the Lambda artifact).
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from streamer.cli import build, console, demo, executions, plugins, statemachines, submit, token

__all__ = ["build_parser", "main"]


#: Top-level modules of the ``local`` extra (``pip install 'streamer[local]'``).
_LOCAL_EXTRA = frozenset({"aiohttp", "jsonata", "moto", "rich", "samtranslator", "statelint", "websockets", "yaml"})


def _add_local(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    try:
        from streamer.cli import local
    except ModuleNotFoundError as exc:
        # Without the `local` extra (e.g. a bare `pip install streamer`) the other commands still work.
        if (exc.name or "").partition(".")[0] not in _LOCAL_EXTRA:
            raise
        return
    local.add_subcommand(subparsers)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="streamer",
        description="Long-running requests over WebSockets on AWS: run the whole platform on this machine, "
        "submit requests, list plugins, validate and deploy state machines, build the Lambda artifact.",
        epilog="Start with `streamer local` in one terminal and `streamer submit echo --payload "
        '\'{"message": "hi"}\'` in another. Docs: README.md and docs/.',
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_local(sub)
    submit.add_parser(sub)
    token.add_parser(sub)
    demo.add_parser(sub)
    console.add_subcommand(sub)
    executions.add_parser(sub)
    plugins.add_parser(sub)
    statemachines.add_parser(sub)
    build.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``streamer ARGV`` (default: ``sys.argv[1:]``); the exit code."""
    args = build_parser().parse_args(argv)
    return int(args.func(args))
