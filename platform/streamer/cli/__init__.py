"""The ``streamer`` command: every subcommand, and the only place the package uses ``argparse``.

Each subcommand is one module named after it, declaring ``HELP`` (its line in ``streamer --help``),
``DESCRIPTION`` (its own ``--help``'s; argparse folds the lines) and ``arguments(parser)``, which adds its arguments
(or its own subcommands) and sets ``func`` (``args.func(args) -> int``, the exit code); :func:`build_parser`
registers them all. The modules call plain library functions (``streamer.client``, ``streamer.deploy.*``,
``streamer.local``); nothing outside this package imports it.

``streamer --help`` lists, in this order: ``local`` (the whole platform on this machine), ``submit`` (send
one request and watch it), ``token`` (a development JWT), ``demo`` (what ``make run`` shows), ``console``
(the web console), ``plugins``, ``statemachines validate|deploy`` and ``build`` (the Lambda artifact).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Protocol

from streamer.cli import build, console, cost, demo, executions, plugins, statemachines, submit, token

__all__ = ["build_parser", "main"]


class _Command(Protocol):
    """A subcommand's module (the module docstring above)."""

    __name__: str
    HELP: str
    DESCRIPTION: str

    def arguments(self, parser: argparse.ArgumentParser, /) -> None: ...


#: The subcommands after ``local`` (which needs the ``local`` extra), in ``streamer --help`` order.
_COMMANDS: tuple[_Command, ...] = (submit, token, demo, console, executions, plugins, statemachines, build, cost)

#: Top-level modules of the ``local`` extra (``pip install 'streamer[local]'``).
_LOCAL_EXTRA = frozenset({"aiohttp", "jsonata", "moto", "rich", "samtranslator", "statelint", "websockets", "yaml"})


def _missing_extra(exc: ModuleNotFoundError) -> bool:
    return (exc.name or "").partition(".")[0] in _LOCAL_EXTRA


def _add(subparsers: argparse._SubParsersAction[argparse.ArgumentParser], command: _Command) -> None:
    name = command.__name__.rpartition(".")[2]
    command.arguments(subparsers.add_parser(name, help=command.HELP, description=command.DESCRIPTION))


def _add_local(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    try:
        from streamer.cli import local
    except ModuleNotFoundError as exc:
        if not _missing_extra(exc):
            raise
        # Without the `local` extra (a bare `pip install streamer`) the command is listed and says what to install.
        missing = exc

        def unavailable(args: argparse.Namespace) -> int:
            raise missing

        p = subparsers.add_parser(
            "local",
            help="run the whole platform on this machine (needs `pip install 'streamer[local]'`)",
            description="Needs the `local` extra: pip install 'streamer[local]'. Options: docs/local.md.",
        )
        # Whatever options follow are those of the real command: accepted here, so the error is the one above.
        p.set_defaults(func=unavailable, any_options=True)
        return
    _add(subparsers, local)


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
    for command in _COMMANDS:
        _add(sub, command)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``streamer ARGV`` (default: ``sys.argv[1:]``); the exit code.

    A command that needs a module of the ``local`` extra which is not installed exits 1 with one line saying
    what to install (``pyproject.toml``: the extra holds what ``streamer local`` and the CLI tools need).
    """
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    if unknown and not getattr(args, "any_options", False):
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    try:
        return int(args.func(args))
    except ModuleNotFoundError as exc:
        if not _missing_extra(exc):
            raise
        print(
            f"error: `streamer {args.command}` needs the `local` extra ({exc.name} is not installed): "
            "pip install 'streamer[local]'",
            file=sys.stderr,
        )
        return 1
