"""``streamer local``'s command line (``streamer.cli.local``): flags, their environment presets, the options."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import pytest

from streamer.cli.local import arguments, options_from
from streamer.local.stack import LocalOptions


def _parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="streamer local")
    arguments(parser)
    return parser.parse_args(argv)


def test_defaults_are_the_stacks(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("HOST", "PORT", "MOTO_PORT", "LAMBDA_PORT", "SFN_ENDPOINT", "IDLE_TIMEOUT", "ON_FAILURE_FILE"):
        monkeypatch.delenv(f"STREAMER_LOCAL_{name}", raising=False)
    monkeypatch.delenv("STREAMER_LOCAL_MAX_CONNECTION_DURATION", raising=False)
    monkeypatch.delenv("STREAMER_LOG_LEVEL", raising=False)
    monkeypatch.delenv("STREAMER_LOG_FORMAT", raising=False)
    args = _parse()
    assert options_from(args) == LocalOptions()
    assert args.func.__module__ == "streamer.cli.local"


def test_the_environment_presets_flags_and_flags_win(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STREAMER_LOCAL_PORT", "9100")
    monkeypatch.setenv("STREAMER_LOCAL_IDLE_TIMEOUT", "12.5")
    monkeypatch.setenv("STREAMER_LOCAL_MAX_CONNECTION_DURATION", "not a number")  # ignored: the default stays
    monkeypatch.setenv("STREAMER_LOCAL_SFN_ENDPOINT", "http://127.0.0.1:8083")
    monkeypatch.setenv("STREAMER_LOG_LEVEL", "debug")
    opts = options_from(_parse("--moto-port", "4566", "--project-dir", "/srv/p", "--log-level", "warning"))
    assert (opts.port, opts.idle_timeout, opts.max_connection_duration) == (9100, 12.5, 7200.0)
    assert (opts.moto_port, opts.sfn_endpoint, opts.project_dir, opts.log_level) == (
        4566,
        "http://127.0.0.1:8083",
        "/srv/p",
        "WARNING",
    )
    assert options_from(_parse("--port", "9200")).port == 9200


def test_a_bad_flag_value_is_refused_by_argparse(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        _parse("--port", "eighty")
    assert exit_info.value.code == 2
    assert "--port: invalid int value: 'eighty'" in capsys.readouterr().err


def test_a_missing_template_is_a_one_line_reason_and_exit_code_1(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "streamer.cli", "local", "--port", "0", "--project-dir", str(tmp_path / "nowhere")],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 1 and proc.stdout == ""
    assert (
        proc.stderr.strip().splitlines()[-1]
        == f"streamer local: project directory {tmp_path / 'nowhere'} does not exist"
    )
