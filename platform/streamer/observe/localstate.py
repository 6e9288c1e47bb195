"""The state file of a running ``streamer local``: how ``streamer executions`` and the console find it.

``streamer local`` writes it once everything is up and removes it when it stops; a file left behind by a
killed stack names a pid that no longer runs and is reported as stale. Where it lives, per user:
``$STREAMER_LOCAL_STATE_FILE``, else ``$XDG_STATE_HOME/streamer/local.json``, else
``~/.local/state/streamer/local.json`` (the XDG Base Directory "state" directory:
https://specifications.freedesktop.org/basedir-spec/latest/). Several stacks at once: the last one started
owns the file; point the others at their own with ``STREAMER_LOCAL_STATE_FILE``.

No boto3, no aiohttp here: ``streamer.local.stack`` imports it at start-up.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from streamer.config import LOCAL_REGION, Env, Settings
from streamer.errors import StreamerError

__all__ = [
    "LocalState",
    "NoLocalStackError",
    "default_state_file",
    "pid_alive",
    "publish",
    "read_state",
    "ready_state",
    "remove_state",
    "state_of",
    "write_state",
]


class NoLocalStackError(StreamerError):
    """No running ``streamer local`` was found (no state file, or a stale one)."""


class LocalState(BaseModel):
    """What a running ``streamer local`` records about itself."""

    pid: int
    ws_url: str
    http_url: str
    moto_url: str
    lambda_url: str
    sfn_url: str
    region: str
    connections_table: str
    requests_table: str
    events_table: str
    state_machine_arn_prefix: str
    workflows: list[str] = []
    started_at: float = 0.0
    #: The JSON-lines file the stack's handlers write their EMF metrics to (``streamer.metrics``); the
    #: console's overview reads it. Empty in a state file written before it was recorded.
    metrics_file: str = ""


def default_state_file(environ: Mapping[str, str] | None = None) -> Path:
    env = os.environ if environ is None else environ
    if env.get(Env.LOCAL_STATE_FILE):
        return Path(env[Env.LOCAL_STATE_FILE])
    base = Path(env["XDG_STATE_HOME"]) if env.get("XDG_STATE_HOME") else Path.home() / ".local" / "state"
    return base / "streamer" / "local.json"


def pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive, but not ours to use
        return True
    return True


def write_state(state: LocalState, path: Path | None = None) -> Path:
    """Write atomically (temporary file + rename), readable by this user only."""
    target = path or default_state_file()
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".local-", suffix=".json", dir=target.parent)
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(state.model_dump_json(indent=1) + "\n")
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return target


def remove_state(path: Path | None = None, *, pid: int | None = None) -> bool:
    """Remove the state file if it is ``pid``'s (default: this process's). True when removed."""
    target = path or default_state_file()
    owner = os.getpid() if pid is None else pid
    try:
        data = json.loads(target.read_text())
    except (OSError, ValueError):
        return False
    if not isinstance(data, dict) or data.get("pid") != owner:
        return False  # another stack started since and owns it now
    with contextlib.suppress(FileNotFoundError):
        target.unlink()
    return True


def read_state(path: Path | None = None) -> LocalState:
    """The running stack's state; :class:`NoLocalStackError` when there is none, or it is stale."""
    target = path or default_state_file()
    try:
        text = target.read_text()
    except FileNotFoundError:
        raise NoLocalStackError(
            f"no running `streamer local` found ({target} does not exist); start one, or use --stack NAME"
        ) from None
    except OSError as exc:
        raise NoLocalStackError(f"cannot read {target}: {exc.strerror or exc}") from exc
    try:
        state = LocalState.model_validate_json(text)
    except ValidationError as exc:
        raise NoLocalStackError(f"{target} is not a streamer local state file: {exc.errors()[0]['msg']}") from exc
    if not pid_alive(state.pid):
        raise NoLocalStackError(
            f"`streamer local` (pid {state.pid}) recorded in {target} is no longer running (stale file); start it again"
        )
    return state


def state_of(stack: Any) -> LocalState:
    """What a started ``streamer.local.stack.LocalStack`` records about itself."""
    import time

    from streamer.metrics import local_metrics_file  # loaded already: the stack's plan uses it

    plan = stack.plan
    tables = plan.table_names
    return LocalState(
        pid=os.getpid(),
        ws_url=stack.ws_url,
        http_url=stack.gateway_http,
        moto_url=stack.moto_url,
        lambda_url=stack.lambda_url,
        sfn_url=stack.sfn_url,
        region=LOCAL_REGION,
        connections_table=tables.get("ConnectionsTable", "streamer-connections"),
        requests_table=tables.get("RequestsTable", "streamer-requests"),
        events_table=tables.get("EventsTable", "streamer-events"),
        state_machine_arn_prefix=plan.state_machine_arn_prefix(),
        workflows=[sm.workflow for sm in plan.state_machines],
        started_at=time.time(),
        metrics_file=str(local_metrics_file()),
    )


def ready_state(pid: int, ws_url: str, urls: Mapping[str, str]) -> LocalState:
    """What a ``streamer local`` child process on the bundled template's names records, from its ready line's URLs.

    ``ws_url`` is the line's first URL, ``urls`` its ``http``, ``lambda``, ``moto`` and ``sfn`` fields (other keys
    are ignored): for a harness that started the stack itself and reads no state file.
    """
    names = Settings()  # the table names and state machine ARN prefix streamer.local.plan gives the template
    return LocalState(
        pid=pid,
        ws_url=ws_url,
        http_url=urls["http"],
        moto_url=urls["moto"],
        lambda_url=urls["lambda"],
        sfn_url=urls["sfn"],
        region=LOCAL_REGION,
        connections_table=names.connections_table,
        requests_table=names.requests_table,
        events_table=names.events_table,
        state_machine_arn_prefix=names.state_machine_arn_prefix,
    )


def publish(stack: Any, path: Path | None = None) -> Path | None:
    """Record a started ``streamer.local.stack.LocalStack``; None (and a warning) when it cannot be written.

    A stack that cannot write its state file still runs: only discovery by ``streamer executions`` fails.
    """
    import logging

    try:
        return write_state(state_of(stack), path)
    except OSError as exc:
        logging.getLogger("streamer.local").warning(
            "cannot write the state file %s (%s): `streamer executions` will not find this stack",
            path or default_state_file(),
            exc.strerror or exc,
        )
        return None
