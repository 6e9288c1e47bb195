"""The ``streamer`` command's parser: what ``--help`` shows, and the submit errors found before any server."""

from __future__ import annotations

import argparse
import json
import re
import socket
import subprocess
import sys
from collections.abc import Iterator

import pytest

from streamer.cli import build_parser, main
from streamer.cli.submit import run_submit


def _subparsers(parser: argparse.ArgumentParser) -> Iterator[tuple[str, argparse.ArgumentParser]]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield name, sub
                for inner, deeper in _subparsers(sub):
                    yield f"{name} {inner}", deeper


def test_local_is_listed_first() -> None:
    parser = build_parser()
    (commands,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    listed = [choice.dest for choice in commands._choices_actions]
    assert listed[0] == "local"
    assert {"submit", "token", "demo", "plugins", "statemachines", "build"} <= set(listed)
    assert "deploy" not in listed  # it deploys state machines only: `streamer statemachines deploy`
    assert parser.format_help().index("    local ") < parser.format_help().index("    submit ")


def test_every_subcommand_and_every_argument_has_help_text() -> None:
    missing: list[str] = []
    for name, sub in _subparsers(build_parser()):
        for action in sub._actions:
            if isinstance(action, argparse._HelpAction):
                continue
            if isinstance(action, argparse._SubParsersAction):
                missing += [f"{name} {c.dest}" for c in action._choices_actions if not c.help]
                continue
            if not action.help or action.help == argparse.SUPPRESS:
                missing.append(f"{name} {'/'.join(action.option_strings) or action.dest}")
    assert missing == []


def test_statemachines_deploy_says_it_deploys_only_state_machines(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["statemachines", "deploy", "--help"])
    assert exit_.value.code == 0
    assert "state machines only" in " ".join(capsys.readouterr().out.split())


@pytest.mark.parametrize(
    ("payload", "message"),
    [("[1, 2]", "error: --payload must be a JSON object\n"), ("{oops", "error: --payload is not JSON: ")],
)
def test_a_bad_payload_is_refused_before_connecting(
    payload: str, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run_submit("ws://127.0.0.1:9/", "token", "echo", payload) == 2
    assert capsys.readouterr().err.startswith(message)


def test_nothing_listening_is_one_line_with_a_hint(capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as s:  # a port that was free a moment ago: nothing listens there
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    assert main(["submit", "echo", "--url", f"ws://127.0.0.1:{port}/", "--token", "t"]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"error: cannot connect to ws://127.0.0.1:{port}/") and "streamer local" in err


# Run in a fresh interpreter where the `local` extra's modules cannot be imported (a bare `pip install streamer`).
_WITHOUT_LOCAL_EXTRA = """
import importlib.abc, json, sys
from streamer.cli import _LOCAL_EXTRA

class Missing(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in _LOCAL_EXTRA:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None

sys.meta_path.insert(0, Missing())
from streamer.cli import build_parser, main
(commands,) = [a for a in build_parser()._actions if a.__class__.__name__ == "_SubParsersAction"]
print(json.dumps([c.dest for c in commands._choices_actions]))
print(json.dumps([main(["plugins", "--json"]) , main(["local", "--port", "0"]), main(["statemachines", "validate"])]))
"""


def test_without_the_local_extra_each_command_works_or_says_what_to_install() -> None:
    out = subprocess.run(
        [sys.executable, "-c", _WITHOUT_LOCAL_EXTRA], capture_output=True, text=True, timeout=60, check=False
    )
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert json.loads(lines[0])[0] == "local"
    assert json.loads(lines[-1]) == [0, 1, 1]  # plugins works; local and validate need the extra
    local, validate = out.stderr.splitlines()
    assert re.fullmatch(r"error: `streamer local` needs the `local` extra \(\w+ is not installed\): pip install 'streamer\[local\]'", local)
    assert validate == (
        "error: `streamer statemachines` needs the `local` extra (statelint is not installed): "
        "pip install 'streamer[local]'"
    )


def test_unknown_options_are_still_refused(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["statemachines", "validate", "--bogus"])
    assert exit_.value.code == 2
    assert "unrecognized arguments: --bogus" in capsys.readouterr().err
