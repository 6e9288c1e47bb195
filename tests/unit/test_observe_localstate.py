"""The local state file, stable ids and cursors of streamer.observe, and the CLI's duration parser."""

from __future__ import annotations

import argparse
import logging
import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path
from types import SimpleNamespace

import pytest

from streamer.cli.executions import parse_duration
from streamer.errors import StreamerError
from streamer.observe import api
from streamer.observe.localstate import (
    NoLocalStackError,
    default_state_file,
    pid_alive,
    publish,
    read_state,
    ready_state,
    remove_state,
    write_state,
)
from tests.fakes import local_state


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_default_state_file_follows_the_environment(tmp_path: Path) -> None:
    assert default_state_file({"STREAMER_LOCAL_STATE_FILE": "/x/y.json"}) == Path("/x/y.json")
    assert default_state_file({"XDG_STATE_HOME": str(tmp_path)}) == tmp_path / "streamer" / "local.json"
    assert default_state_file({}) == Path.home() / ".local" / "state" / "streamer" / "local.json"


def test_write_read_remove(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "local.json"
    assert write_state(local_state(pid=os.getpid()), path) == path
    assert read_state(path) == local_state(pid=os.getpid())
    assert not list(path.parent.glob(".local-*"))  # the temporary file was renamed
    assert remove_state(path) is True
    assert not path.exists()
    assert remove_state(path) is False  # nothing left to remove


def test_remove_leaves_another_stacks_file(tmp_path: Path) -> None:
    path = tmp_path / "local.json"
    write_state(local_state(pid=os.getpid()), path)
    assert remove_state(path, pid=os.getpid() + 1) is False
    assert path.exists()


def test_missing_stale_and_broken_files_are_errors(tmp_path: Path) -> None:
    path = tmp_path / "local.json"
    with pytest.raises(NoLocalStackError, match="no running `streamer local`"):
        read_state(path)
    write_state(local_state(pid=dead_pid()), path)
    with pytest.raises(NoLocalStackError, match="no longer running"):
        read_state(path)
    path.write_text("{not json")
    with pytest.raises(NoLocalStackError, match="not a streamer local state file"):
        read_state(path)
    assert issubclass(NoLocalStackError, StreamerError)


def test_pid_alive() -> None:
    assert pid_alive(os.getpid())
    assert not pid_alive(dead_pid())
    assert not pid_alive(0)


def test_summary_ids_round_trip_without_a_lookup() -> None:
    for user, rid in [("alice", "r1"), ("a/b c", "r_x-1"), ("ünï", "x")]:
        sid = api.summary_id(user, rid)
        assert api._decode_summary_id(sid) == (user, rid)
        assert "/" not in sid and "=" not in sid
    # A request id that merely starts like one is not decoded.
    assert api._decode_summary_id("r_abc") is None
    assert api._decode_summary_id("plain") is None


def test_cursors_are_bound_to_their_filters() -> None:
    fp = api._fingerprint(workflow="echo", status=None)
    cursor = api._encode_cursor(fp, {"w:echo": "end"})
    assert api._decode_cursor(cursor, fp) == {"w:echo": "end"}
    with pytest.raises(api.CursorError, match="other filters"):
        api._decode_cursor(cursor, api._fingerprint(workflow="textstats", status=None))
    with pytest.raises(api.CursorError, match="not a cursor"):
        api._decode_cursor("%%%", fp)


def test_percentile_is_nearest_rank() -> None:
    values = list(range(1, 101))
    assert api._percentile(values, 50) == 50
    assert api._percentile(values, 99) == 99
    assert api._percentile([7], 99) == 7


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90", 90), ("30s", 30), ("15m", 900), ("2h", 7200), ("1d", 86400), ("1w", 604800), ("1.5h", 5400)],
)
def test_parse_duration(text: str, seconds: int) -> None:
    assert parse_duration(text) == timedelta(seconds=seconds)


@pytest.mark.parametrize("text", ["", "h", "2y", "-1h", "ten minutes"])
def test_parse_duration_refuses(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError, match="not a duration"):
        parse_duration(text)


def _stack() -> SimpleNamespace:
    """The attributes ``publish`` reads from a started ``streamer.local.stack.LocalStack``."""
    plan = SimpleNamespace(
        table_names={"ConnectionsTable": "c", "RequestsTable": "r", "EventsTable": "e"},
        state_machine_arn_prefix=lambda: "arn:aws:states:us-east-1:123456789012:stateMachine:streamer-",
        state_machines=[SimpleNamespace(workflow="echo")],
    )
    return SimpleNamespace(
        plan=plan,
        ws_url="ws://127.0.0.1:1",
        gateway_http="http://127.0.0.1:1",
        moto_url="http://127.0.0.1:2",
        lambda_url="http://127.0.0.1:3",
        sfn_url="http://127.0.0.1:2",
    )


def test_ready_state_takes_the_ready_lines_urls_and_the_templates_names() -> None:
    urls = {"http": "http://127.0.0.1:1", "lambda": "http://127.0.0.1:3", "moto": "http://127.0.0.1:2", "sfn": "x"}
    state = ready_state(42, "ws://127.0.0.1:1", {**urls, "pid": "42"})
    assert (state.pid, state.ws_url) == (42, "ws://127.0.0.1:1")
    assert {key: getattr(state, f"{key}_url") for key in urls} == urls
    assert (state.region, state.requests_table, state.state_machine_arn_prefix) == (
        "us-east-1",
        "streamer-requests",
        "arn:aws:states:us-east-1:123456789012:stateMachine:streamer-",
    )


def test_publish_records_the_stack_and_survives_an_unwritable_place(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = publish(_stack(), tmp_path / "local.json")
    assert path is not None
    recorded = read_state(path)
    assert (recorded.pid, recorded.requests_table, recorded.workflows) == (os.getpid(), "r", ["echo"])
    # Where the stack's handlers write their EMF metrics (what the plan gives them), for the overview.
    from streamer.metrics import local_metrics_file

    assert recorded.metrics_file == str(local_metrics_file())
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    with caplog.at_level(logging.WARNING, logger="streamer.local"):
        assert publish(_stack(), blocker / "local.json") is None
    assert "will not find this stack" in caplog.text


def test_the_state_records_the_metrics_file_and_sources_read_the_overview_from_it(tmp_path: Path) -> None:
    from streamer.observe import Sources

    recorded = local_state(pid=os.getpid()).model_copy(update={"metrics_file": str(tmp_path / "m.jsonl")})
    src = Sources.local(write_state(recorded, tmp_path / "local.json"))
    assert src.metrics_file == tmp_path / "m.jsonl"
    # A state file written before the field existed has none: the overview falls back to the tables.
    old = tmp_path / "old.json"
    old.write_text(local_state(pid=os.getpid()).model_dump_json(exclude={"metrics_file"}))
    assert read_state(old).metrics_file == ""
    assert Sources.local(old).metrics_file is None
