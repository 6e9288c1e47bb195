"""``streamer local``: its flags (each with an environment variable default) and the call into the stack.

The stack itself is ``streamer.local.stack.run_local(LocalOptions(…))``; this module only turns the command
line into :class:`~streamer.local.stack.LocalOptions`. Flags, defaults and the ready line are documented in
``docs/local.md``.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from dataclasses import fields
from typing import Any

from streamer.config import Env
from streamer.local.stack import DEFAULT_HOST, DEFAULT_PORT, LocalOptions, run_local

__all__ = ["DESCRIPTION", "HELP", "arguments", "options_from"]

HELP = "run the whole platform on this machine (no AWS account, no Docker)"
DESCRIPTION = """The whole platform on this machine — no AWS account, no Docker: the WebSocket gateway and Management
API, the Lambda Invoke endpoint running the template's handlers, moto (DynamoDB and DynamoDB Streams in one process,
Step Functions executing the state machines in another), the stream poller and the EventBridge stand-in, all from
infra/template.yaml."""


def _env(name: str, kind: Callable[[str], Any], default: Any) -> Any:
    """``$name`` converted by ``kind``; ``default`` when unset, empty or not convertible."""
    value = os.environ.get(name)
    try:
        return kind(value) if value else default
    except ValueError:
        return default


#: ``(flag, environment variable, type, default, help)`` of every flag that an environment variable presets.
_FLAGS: tuple[tuple[str, str, Callable[[str], Any], Any, str], ...] = (
    ("--host", Env.LOCAL_HOST, str, DEFAULT_HOST, "interface for every port (default 127.0.0.1)"),
    ("--port", Env.LOCAL_PORT, int, DEFAULT_PORT, "WebSocket + Management API port (default 8765)"),
    ("--moto-port", Env.LOCAL_MOTO_PORT, int, 0, "moto server port (default 0 = a free port)"),
    ("--lambda-port", Env.LOCAL_LAMBDA_PORT, int, 0, "Lambda Invoke endpoint port (default 0 = a free port)"),
    (
        "--sfn-endpoint",
        Env.LOCAL_SFN_ENDPOINT,
        str,
        None,
        "use this Step Functions endpoint (e.g. AWS Step Functions Local) instead of the embedded engine; run it "
        "with LAMBDA_ENDPOINT=<the printed Lambda endpoint>",
    ),
    (
        "--idle-timeout",
        Env.LOCAL_IDLE_TIMEOUT,
        float,
        600.0,
        "close idle WebSocket connections after this many seconds (API Gateway: 600)",
    ),
    (
        "--max-connection-duration",
        Env.LOCAL_MAX_CONNECTION_DURATION,
        float,
        7200.0,
        "close every WebSocket connection after this many seconds (API Gateway: 7200)",
    ),
    (
        "--on-failure-file",
        Env.LOCAL_ON_FAILURE_FILE,
        str,
        None,
        "append stream records given up on to this JSON-lines file (always logged)",
    ),
)


def options_from(args: argparse.Namespace) -> LocalOptions:
    """The parsed flags as :class:`LocalOptions` (other attributes of ``args`` are ignored)."""
    names = {f.name for f in fields(LocalOptions)}
    return LocalOptions(**{k: v for k, v in vars(args).items() if k in names})


def _run(args: argparse.Namespace) -> int:
    return run_local(options_from(args))


def arguments(p: argparse.ArgumentParser) -> None:
    for flag, env, kind, default, text in _FLAGS:
        p.add_argument(flag, type=kind, default=_env(env, kind, default), help=f"{text}; ${env}")
    p.add_argument(
        "--template",
        default=None,
        help="deployment template (default: --project-dir's infra/template.yaml, else $STREAMER_TEMPLATE, else "
        "the template bundled with the package: the checkout's infra/template.yaml)",
    )
    p.add_argument(
        "--project-dir",
        default=None,
        metavar="DIR",
        help="read DIR/infra/template.yaml and DIR/statemachines/ instead of the bundled ones",
    )
    p.add_argument(
        "--log-level",
        default=os.environ.get(Env.LOG_LEVEL, "INFO"),
        choices=("DEBUG", "INFO", "WARNING", "ERROR"),
        type=str.upper,
        help="log level of every piece (default INFO; $STREAMER_LOG_LEVEL)",
    )
    p.add_argument(
        "--log-format",
        choices=("text", "json"),
        default=os.environ.get(Env.LOG_FORMAT, "text"),
        help="text for people, json lines for machines (default text; $STREAMER_LOG_FORMAT)",
    )
    p.set_defaults(func=_run)
