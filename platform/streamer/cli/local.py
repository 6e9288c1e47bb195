"""``streamer local``: its flags (each with an environment variable default) and the call into the stack.

The stack itself is ``streamer.local.stack.run_local(LocalOptions(…))``; this module only turns the command
line into :class:`~streamer.local.stack.LocalOptions`. Flags, defaults and the ready line are documented in
``docs/local.md``.
"""

from __future__ import annotations

import argparse
import os
from dataclasses import fields
from typing import Any

from streamer.local.stack import DEFAULT_HOST, DEFAULT_PORT, LocalOptions, run_local

__all__ = ["add_subcommand", "options_from"]

_DESCRIPTION = (
    "The whole platform on this machine — no AWS account, no Docker: the WebSocket gateway and Management "
    "API, the Lambda Invoke endpoint running the template's handlers, moto (DynamoDB, DynamoDB Streams, "
    "Step Functions executing the state machines), the stream poller and the EventBridge stand-in, all from "
    "infra/template.yaml."
)


def _env_float(name: str, default: float) -> float:
    value = os.environ.get(name)
    try:
        return float(value) if value else default
    except ValueError:
        return default


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    try:
        return int(value) if value else default
    except ValueError:
        return default


def options_from(args: argparse.Namespace) -> LocalOptions:
    """The parsed flags as :class:`LocalOptions` (other attributes of ``args`` are ignored)."""
    names = {f.name for f in fields(LocalOptions)}
    return LocalOptions(**{k: v for k, v in vars(args).items() if k in names})


def _run(args: argparse.Namespace) -> int:
    return run_local(options_from(args))


def add_subcommand(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``streamer local`` on the ``streamer`` command's subparsers."""
    p: argparse.ArgumentParser = subparsers.add_parser(
        "local",
        help="run the whole platform on this machine (no AWS account, no Docker)",
        description=_DESCRIPTION,
    )
    p.add_argument(
        "--host",
        default=os.environ.get("STREAMER_LOCAL_HOST", DEFAULT_HOST),
        help="interface for every port (default 127.0.0.1; $STREAMER_LOCAL_HOST)",
    )
    p.add_argument(
        "--port",
        type=int,
        default=_env_int("STREAMER_LOCAL_PORT", DEFAULT_PORT),
        help="WebSocket + Management API port (default 8765; $STREAMER_LOCAL_PORT)",
    )
    p.add_argument(
        "--moto-port",
        type=int,
        default=_env_int("STREAMER_LOCAL_MOTO_PORT", 0),
        help="moto server port (default 0 = a free port)",
    )
    p.add_argument(
        "--lambda-port",
        type=int,
        default=_env_int("STREAMER_LOCAL_LAMBDA_PORT", 0),
        help="Lambda Invoke endpoint port (default 0 = a free port)",
    )
    p.add_argument(
        "--sfn-endpoint",
        default=os.environ.get("STREAMER_LOCAL_SFN_ENDPOINT") or None,
        help="use this Step Functions endpoint (e.g. AWS Step Functions Local) instead of the "
        "embedded engine; run it with LAMBDA_ENDPOINT=<the printed Lambda endpoint>",
    )
    p.add_argument(
        "--idle-timeout",
        type=float,
        default=_env_float("STREAMER_LOCAL_IDLE_TIMEOUT", 600.0),
        help="close idle WebSocket connections after this many seconds (API Gateway: 600; "
        "$STREAMER_LOCAL_IDLE_TIMEOUT)",
    )
    p.add_argument(
        "--max-connection-duration",
        type=float,
        default=_env_float("STREAMER_LOCAL_MAX_CONNECTION_DURATION", 7200.0),
        help="close every WebSocket connection after this many seconds (API Gateway: 7200; "
        "$STREAMER_LOCAL_MAX_CONNECTION_DURATION)",
    )
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
        "--on-failure-file",
        default=os.environ.get("STREAMER_LOCAL_ON_FAILURE_FILE") or None,
        help="append stream records given up on to this JSON-lines file (always logged)",
    )
    p.add_argument(
        "--log-level",
        default=os.environ.get("STREAMER_LOG_LEVEL", "INFO"),
        choices=("DEBUG", "INFO", "WARNING", "ERROR"),
        type=str.upper,
        help="log level of every piece (default INFO; $STREAMER_LOG_LEVEL)",
    )
    p.add_argument(
        "--log-format",
        choices=("text", "json"),
        default=os.environ.get("STREAMER_LOG_FORMAT", "text"),
        help="text for people, json lines for machines (default text; $STREAMER_LOG_FORMAT)",
    )
    p.set_defaults(func=_run)
    return p
