"""``streamer executions list|show|watch|history|cancel``: watch executions from the terminal.

Every subcommand reads through :mod:`streamer.observe` (the same data layer as the web console). Without
``--stack`` it finds a running ``streamer local`` by its state file (``--state-file``, default the per-user
one); with ``--stack NAME [--profile P] [--region R]`` it reads a deployed stack's outputs and prints the AWS
console link of each execution. ``--json`` prints one parseable JSON document. Exit codes: 0 success; 1 an
error (unknown or ambiguous id, no stack, AWS error), a watched request that did not succeed, or a cancel
that found the request already ended; 2 bad arguments.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rich.console import Console

    from streamer.observe import ExecutionDetail, Sources, StateRun

__all__ = ["DESCRIPTION", "HELP", "arguments", "parse_duration"]

HELP = "list, show, watch, cancel executions (a running `streamer local` or --stack NAME)"
DESCRIPTION = (__doc__ or "").split("\n\n")[0]

_STATUSES = ("PENDING", "RUNNING", "SUCCEEDED", "FAILED", "CANCELLED", "TIMED_OUT")
_COLOURS = {
    "PENDING": "yellow",
    "RUNNING": "cyan",
    "SUCCEEDED": "green",
    "FAILED": "red",
    "CANCELLED": "magenta",
    "TIMED_OUT": "red",
    "ABORTED": "magenta",
    "not_reached": "dim",
    "running": "cyan",
    "succeeded": "green",
    "failed": "red",
    "caught": "yellow",
    "cancelled": "magenta",
}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|sec|m|min|h|d|w)?\s*$")
_UNITS = {None: 1, "s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(text: str) -> timedelta:
    """``90``, ``30s``, ``15m``, ``2h``, ``1d``, ``1w`` → a timedelta (argparse type)."""
    match = _DURATION.match(text)
    if not match:
        raise argparse.ArgumentTypeError(f"not a duration: {text!r} (examples: 30s, 15m, 2h, 1d)")
    return timedelta(seconds=float(match.group(1)) * _UNITS[match.group(2)])


# -- helpers --------------------------------------------------------------------------------------------


def _sources(args: argparse.Namespace) -> Sources:
    from streamer.observe import Sources

    if args.stack:
        return Sources.stack(profile=args.profile, region=args.region, stack=args.stack)
    return Sources.local(Path(args.state_file) if args.state_file else None)


def _console() -> Console:
    from rich.console import Console

    # Not a terminal (a pipe, a file, a test): 160 columns unless $COLUMNS says otherwise.
    wide = sys.stdout.isatty() or bool(os.environ.get("COLUMNS"))
    return Console(highlight=False, soft_wrap=False, width=None if wide else 160)


def _run(func: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """Errors a user can act on become one line on stderr and exit code 1."""

    def wrapper(args: argparse.Namespace) -> int:
        from botocore.exceptions import BotoCoreError, ClientError

        from streamer.errors import StreamerError

        try:
            return func(args)
        except StreamerError as exc:
            print(f"error: {exc}", file=sys.stderr)
        except ClientError as exc:
            err = exc.response.get("Error", {})
            print(f"error: AWS {err.get('Code', '')}: {err.get('Message', exc)}", file=sys.stderr)
        except BotoCoreError as exc:
            print(f"error: AWS: {exc}", file=sys.stderr)
        except KeyboardInterrupt:
            return 130
        return 1

    return wrapper


def _when(value: datetime | None) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S") if value else ""


def _ms(value: int | None) -> str:
    if value is None:
        return ""
    if value < 1000:
        return f"{value} ms"
    if value < 60_000:
        return f"{value / 1000:.1f} s"
    return f"{value // 60_000} m {value % 60_000 / 1000:.0f} s"


def _seconds(value: int | None) -> str:
    """A request's duration from the requests table, which keeps whole seconds."""
    if value is None:
        return ""
    return "<1 s" if value < 1000 else _ms(value)


def _styled(status: str) -> str:
    colour = _COLOURS.get(status)
    return f"[{colour}]{status}[/]" if colour else status


def _short_cause(cause: str | None, width: int = 100) -> str:
    """A Lambda error's cause is JSON with errorMessage and a stack trace: show the message."""
    if not cause:
        return ""
    text = cause
    head, sep, rest = cause.partition(": ")
    for candidate in (cause, rest if sep else ""):
        try:
            data = json.loads(candidate)
        except ValueError:
            continue
        if isinstance(data, dict) and isinstance(data.get("errorMessage"), str):
            text = (head + ": " if candidate is rest and sep else "") + data["errorMessage"]
            break
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


def _clip(text: str, width: int = 150) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def _print_json(value: Any) -> None:
    print(json.dumps(value, indent=2, ensure_ascii=False, default=str))


# -- list -----------------------------------------------------------------------------------------------


@_run
def _cmd_list(args: argparse.Namespace) -> int:
    from rich.table import Table

    from streamer import observe

    src = _sources(args)
    since = datetime.now(UTC) - args.since if args.since else None
    page = observe.list_executions(
        src,
        workflow=args.workflow,
        status=args.status,
        user=args.user,
        since=since,
        query=args.query,
        limit=args.limit,
        cursor=args.cursor,
    )
    if args.json:
        _print_json(page.model_dump(mode="json"))
        return 0
    console = _console()
    table = Table(title=f"executions ({src.describe()}), newest first", title_justify="left")
    for column in ("request id", "user", "workflow", "status", "started", "duration"):
        table.add_column(column, no_wrap=column != "user")
    for item in page.items:
        row = [
            item.request_id,
            item.user_id,
            item.workflow,
            _styled(item.status),
            _when(item.created_at),
            _seconds(item.duration_ms),
        ]
        table.add_row(*row)
    console.print(table)
    if src.aws:  # links on lines of their own: a table cell would wrap them
        for item in page.items:
            if item.console_url:
                console.print(f"{item.request_id}  {item.console_url}", soft_wrap=True)
    if not page.items:
        console.print("no executions match")
    if page.next_cursor:
        print(f"more: --cursor {page.next_cursor}")
    return 0


# -- show -----------------------------------------------------------------------------------------------


def _state_rows(runs: list[StateRun], depth: int = 0) -> Iterator[list[str]]:
    pad = "  " * depth
    for run in runs:
        retries = f" ({len(run.retries)} retried)" if run.retries else ""
        yield [
            pad + run.name,
            run.type,
            _styled(run.status),
            f"{run.attempts}{retries}" if run.status != "not_reached" else "",
            _when(run.started_at),
            _ms(run.duration_ms),
            run.error or "",
            _short_cause(run.cause),
        ]
        for retry in run.retries:
            yield [
                f"{pad}  ↻ attempt {retry.attempt}",
                "",
                "[yellow]retried[/]",
                "",
                _when(retry.started_at),
                f"then {_ms(retry.delay_ms)}",
                retry.error or "",
                _short_cause(retry.cause),
            ]
        if run.iterations is not None:
            it = run.iterations
            summary = f"{it.total} iterations: {it.succeeded} succeeded, {it.failed} failed"
            if it.running:
                summary += f", {it.running} running"
            if it.cancelled:
                summary += f", {it.cancelled} cancelled"
            yield [f"{pad}  ⤷ {summary}", "", "", "", "", "", "", ""]
            for item in it.items or []:
                yield [f"{pad}  [{item.index}]", "iteration", _styled(item.status), "", "", "", "", ""]
                yield from _state_rows(item.states, depth + 2)
        for branch in run.branches or []:
            yield [f"{pad}  branch {branch.index}", "branch", _styled(branch.status), "", "", "", "", ""]
            yield from _state_rows(branch.states, depth + 2)


def _print_detail(console: Console, detail: ExecutionDetail) -> None:
    from rich.table import Table

    req = detail.request
    console.print(f"[bold]request[/] {req.request_id}   user {req.user_id}   workflow {req.workflow}")
    console.print(f"  status   {_styled(req.status)}   created {_when(req.created_at)}   id {detail.summary.id}")
    console.print(f"  payload  {_clip(json.dumps(req.payload, ensure_ascii=False))}")
    if req.terminal_event is not None:
        console.print(f"  terminal {_clip(json.dumps(req.terminal_event, ensure_ascii=False))}")
    ex = detail.execution
    if ex is None:
        console.print("[bold]execution[/] none (the request has not started an execution)")
    else:
        console.print(f"[bold]execution[/] {ex.arn}")
        line = f"  status   {_styled(ex.status)}   started {_when(ex.started_at)}   duration {_ms(ex.duration_ms)}"
        console.print(line + f"   history {detail.history_count} events")
        if ex.error or ex.cause:
            console.print(f"  error    {ex.error or ''}: {_short_cause(ex.cause, 200)}")
        if ex.console_url:
            console.print(f"  console  {ex.console_url}", soft_wrap=True)
    table = Table(title="states (execution order, then not reached)", title_justify="left")
    for column in ("state", "type", "status", "attempts", "started", "duration", "error", "cause"):
        table.add_column(column, no_wrap=column not in ("cause",), overflow="fold")
    for row in _state_rows(detail.states):
        table.add_row(*row)
    console.print(table)
    events = Table(title="events (as the client received them)", title_justify="left")
    for column in ("seq", "type", "step", "percent", "message / result"):
        events.add_column(column, overflow="fold")
    for ev in detail.events:
        body = ev.body
        text = body.get("message")
        if ev.type == "result":
            text = json.dumps(body.get("output"), ensure_ascii=False)[:200]
        elif ev.type == "error":
            text = f"{body.get('code')}: {body.get('message')}"
        percent = body.get("percent")
        events.add_row(
            str(ev.seq),
            _styled(ev.type),
            str(body.get("step", "")),
            "" if percent is None else f"{percent}%",
            text or "",
        )
    console.print(events)


@_run
def _cmd_show(args: argparse.Namespace) -> int:
    from streamer import observe

    src = _sources(args)
    detail = observe.show_execution(src, args.id, user=args.user, expand=args.expand)
    if args.json:
        _print_json(detail.model_dump(mode="json"))
    else:
        _print_detail(_console(), detail)
    return 0


# -- watch ----------------------------------------------------------------------------------------------


def _ended(runs: list[StateRun], prefix: str = "") -> Iterator[tuple[str, StateRun]]:
    """Every state run that has ended, with a key unique within the execution."""
    for run in runs:
        key = f"{prefix}{run.name}#{run.entered_event_id}"
        if run.status not in ("running", "not_reached"):
            yield key, run
        for item in (run.iterations.items if run.iterations else None) or []:
            yield from _ended(item.states, f"{prefix}{run.name}[{item.index}]/")
        for branch in run.branches or []:
            yield from _ended(branch.states, f"{prefix}{run.name}{{{branch.index}}}/")


def _current(runs: list[StateRun]) -> str:
    names = [r.name for r in runs if r.status == "running"]
    return ", ".join(names)


@_run
def _cmd_watch(args: argparse.Namespace) -> int:
    from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn

    from streamer import observe

    src = _sources(args)
    user, request_id = observe.resolve(src, args.id, user=args.user)
    console = _console()
    interval = args.interval if args.interval is not None else (1.0 if src.aws else 0.3)
    deadline = time.monotonic() + args.timeout
    seen_states: set[str] = set()
    last_seq = 0
    console.print(f"watching {request_id} (user {user}); Ctrl-C stops watching, not the request")
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TaskProgressColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    ) as progress:
        task = progress.add_task("waiting", total=100)
        while True:
            detail = observe.show_execution(src, request_id, user=user, expand=True)
            for ev in detail.events:
                if ev.seq <= last_seq:
                    continue
                last_seq = ev.seq
                body = ev.body
                if ev.type == "progress":
                    progress.update(task, completed=float(body.get("percent", 0)))
                    progress.console.print(
                        f"  seq {ev.seq:>3}  {body.get('step', ''):<16} {body.get('percent', 0):>3}%  "
                        f"{body.get('message', '')}"
                    )
                else:
                    progress.console.print(
                        f"  seq {ev.seq:>3}  {ev.type}  {json.dumps(body, ensure_ascii=False)[:200]}"
                    )
            for key, run in _ended(detail.states):
                if key not in seen_states:
                    seen_states.add(key)
                    extra = f"  {run.error}: {_short_cause(run.cause)}" if run.error else ""
                    progress.console.print(
                        f"  state {run.name:<20} {_styled(run.status):<22} {_ms(run.duration_ms):>9}{extra}"
                    )
            current = _current(detail.states)
            status = detail.request.status
            progress.update(task, description=f"{_styled(status)} {current}".strip())
            ended = detail.request.terminal_event is not None and (
                detail.execution is None or detail.execution.status != "RUNNING"
            )
            if ended:
                if status == "SUCCEEDED":
                    progress.update(task, completed=100)
                break
            if time.monotonic() > deadline:
                progress.console.print(f"[red]still {status} after {args.timeout:g}s[/]")
                return 1
            time.sleep(interval)
    final = detail.request
    message = f"{final.error_code}: {final.error_message}" if final.error_code else "result delivered"
    console.print(f"{_styled(final.status)} {final.request_id}: {message}")
    return 0 if final.status == "SUCCEEDED" else 1


# -- history --------------------------------------------------------------------------------------------


@_run
def _cmd_history(args: argparse.Namespace) -> int:
    from rich.table import Table

    from streamer import observe

    src = _sources(args)
    events = observe.execution_history(src, args.id, user=args.user)
    if args.json:
        _print_json(events)
        return 0
    table = Table(title=f"execution history ({len(events)} events)", title_justify="left")
    for column in ("id", "prev", "timestamp", "type", "details"):
        table.add_column(column, overflow="fold", no_wrap=column != "details")
    for ev in events:
        details = next((v for k, v in ev.items() if k.endswith("EventDetails")), None)
        text = json.dumps(details, ensure_ascii=False) if details else ""
        table.add_row(
            str(ev.get("id", "")),
            str(ev.get("previousEventId", "")),
            str(ev.get("timestamp", ""))[:23],
            ev.get("type", ""),
            text if len(text) <= 160 else text[:159] + "…",
        )
    _console().print(table)
    return 0


# -- cancel ---------------------------------------------------------------------------------------------


@_run
def _cmd_cancel(args: argparse.Namespace) -> int:
    from streamer import observe

    src = _sources(args)
    user, request_id = observe.resolve(src, args.id, user=args.user)
    ended = observe.cancel(src, request_id, user=user)
    req = src.service.find(user, request_id)
    status = req.status.value if req is not None else "unknown"
    if args.json:
        _print_json({"request_id": request_id, "user_id": user, "cancelled": ended, "status": status})
    elif ended:
        print(f"cancelled {request_id} (user {user}): its clients got the CANCELLED event")
    else:
        print(f"{request_id} had already ended ({status}); nothing to cancel", file=sys.stderr)
    return 0 if ended else 1


# -- parser ---------------------------------------------------------------------------------------------


def _common(p: argparse.ArgumentParser, *, with_id: bool = True, with_json: bool = True) -> None:
    if with_id:
        p.add_argument("id", help="a request id, an execution ARN, or the id column of `list --json`")
        p.add_argument("--user", help="the request's user, when several users used the same request id")
    if with_json:
        p.add_argument("--json", action="store_true", help="print one JSON document instead of tables")
    where = p.add_argument_group("where (default: the running `streamer local`)")
    where.add_argument("--stack", help="a deployed CloudFormation stack: read its outputs (table names, ARNs)")
    where.add_argument("--profile", help="AWS profile for --stack (default: the environment's credentials)")
    where.add_argument("--region", help="AWS region for --stack (default: the profile's or $AWS_REGION)")
    where.add_argument(
        "--state-file",
        help="the state file of the `streamer local` to use (default: $STREAMER_LOCAL_STATE_FILE, else "
        "$XDG_STATE_HOME/streamer/local.json or ~/.local/state/streamer/local.json)",
    )


def arguments(parser: argparse.ArgumentParser) -> None:
    """``streamer executions``' subcommands."""
    sub = parser.add_subparsers(dest="executions_command", required=True, metavar="SUBCOMMAND")

    p = sub.add_parser("list", help="requests and their executions, newest first (paged)")
    p.add_argument("--workflow", help="only this workflow")
    p.add_argument("--status", choices=_STATUSES, type=str.upper, help="only requests with this status")
    p.add_argument("--user", help="only this user's requests")
    p.add_argument("--since", type=parse_duration, help="only requests created within this long (30s, 15m, 2h, 1d)")
    p.add_argument("--query", help="only request ids containing this text")
    p.add_argument("--limit", type=int, default=50, help="rows per page (default 50, at most 1000)")
    p.add_argument("--cursor", help="the next page: the cursor printed under the previous one")
    _common(p, with_id=False)
    p.set_defaults(func=_cmd_list)

    p = sub.add_parser("show", help="a request, the table of its execution's states, its progress events")
    p.add_argument("--expand", action="store_true", help="list every Map iteration's states")
    _common(p)
    p.set_defaults(func=_cmd_show)

    p = sub.add_parser("watch", help="follow a request live until it ends: current state, progress, states")
    p.add_argument("--timeout", type=float, default=3600, help="give up after this many seconds (default 3600)")
    p.add_argument("--interval", type=float, help="seconds between reads (default 0.3 locally, 1 on AWS)")
    _common(p, with_json=False)
    p.set_defaults(func=_cmd_watch)

    p = sub.add_parser("history", help="the raw Step Functions event history of a request's execution")
    _common(p)
    p.set_defaults(func=_cmd_history)

    p = sub.add_parser("cancel", help="cancel a request as its client would: its clients get CANCELLED")
    _common(p)
    p.set_defaults(func=_cmd_cancel)
