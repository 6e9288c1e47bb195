"""The installed package works outside the source checkout.

Once per session: build the wheels of streamer and the two example plugins (``build_wheels``: ``pip wheel
--no-deps`` of clean copies, as ``streamer build`` does), create a fresh virtualenv in a temporary directory
(no ``--system-site-packages``, nothing of the checkout on ``sys.path``) and ``pip install`` the wheels
there, ``streamer[local]`` with its dependencies resolved by pip as a user's install would (through the
machine's pip configuration: its index and find-links). Then, from another temporary directory, run
``streamer plugins``, ``streamer statemachines validate`` and ``streamer local``, and send one request end
to end through it with ``streamer submit``, all with the virtualenv's own ``streamer`` script.

The template and the state machines come from the wheel (``streamer/deploy/bundled``): nothing here points
at the checkout except the wheel build itself.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from streamer.deploy.build import build_wheels
from streamer.local.stack import READY_PREFIX

ROOT = Path(__file__).resolve().parents[2]
PROJECTS = [ROOT, ROOT / "plugins" / "echo", ROOT / "plugins" / "textstats"]
SECRET = "wheel-install-secret-" + "x" * 32
INSTALL_TIMEOUT = 600
START_TIMEOUT = 90


class Installed:
    def __init__(self, venv: Path, cwd: Path) -> None:
        self.venv = venv
        self.cwd = cwd
        self.streamer = venv / "bin" / "streamer"
        # What a user's shell would have: no PYTHONPATH, no virtualenv of the checkout, no STREAMER_* overrides.
        self.env = {
            "PATH": f"{venv / 'bin'}:/usr/bin:/bin",
            "HOME": str(cwd),
            "LANG": "C.UTF-8",
            "STREAMER_JWT_SECRET": SECRET,
            "PYTHONUNBUFFERED": "1",
        }

    def run(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(self.streamer), *args], cwd=self.cwd, env=self.env, capture_output=True, text=True, timeout=timeout
        )


def _pip_env() -> dict[str, str]:
    # The machine's pip configuration (index, find-links, certificates) applies; the checkout's venv does not.
    return {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Installed]:
    started = time.monotonic()
    wheels = build_wheels(PROJECTS, tmp_path_factory.mktemp("wheels"))
    assert sorted(w.name.split("-")[0] for w in wheels) == ["streamer", "streamer_echo", "streamer_textstats"]
    (platform_wheel,) = [w for w in wheels if w.name.startswith("streamer-")]
    plugin_wheels = [str(w) for w in wheels if w != platform_wheel]
    venv = tmp_path_factory.mktemp("venv") / "env"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    proc = subprocess.run(
        [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", "--no-compile", f"{platform_wheel}[local]", *plugin_wheels],
        env=_pip_env(),
        capture_output=True,
        text=True,
        timeout=INSTALL_TIMEOUT,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    print(f"\nwheels built and installed in {time.monotonic() - started:.1f}s", file=sys.stderr)
    yield Installed(venv, tmp_path_factory.mktemp("elsewhere"))


def test_the_installed_package_is_the_wheel_not_the_checkout(installed: Installed) -> None:
    code = "import streamer, streamer.deploy.resources as r; print(streamer.__file__); print(r.template_path())"
    out = subprocess.run(
        [str(installed.venv / "bin" / "python"), "-c", code],
        cwd=installed.cwd,
        env=installed.env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    for path in out:
        assert path.startswith(str(installed.venv)) and not path.startswith(str(ROOT)), path
    assert Path(out[1]).read_bytes() == (ROOT / "infra" / "template.yaml").read_bytes()


def test_plugins_and_statemachines_validate(installed: Installed) -> None:
    plugins = installed.run("plugins", "--json")
    assert plugins.returncode == 0, plugins.stderr
    listing = {p["name"]: p for p in json.loads(plugins.stdout)}
    assert listing["echo"]["distribution"] == "streamer-echo" and listing["echo"]["workflows"] == ["echo"]
    assert listing["textstats"]["workflows"] == ["textstats"]

    validate = installed.run("statemachines", "validate")
    assert validate.returncode == 0, validate.stdout + validate.stderr
    assert validate.stdout == "2 state machine definition(s) OK\n"

    missing = installed.run("statemachines", "validate", "--project-dir", str(installed.cwd))
    assert missing.returncode == 1
    assert missing.stderr.startswith(f"error: no statemachines/ in project directory {installed.cwd}")


@pytest.mark.timeout(300)
def test_local_runs_one_request_end_to_end(installed: Installed, tmp_path: Path) -> None:
    log = tmp_path / "streamer-local.stderr"
    with log.open("w") as err:
        proc = subprocess.Popen(
            [str(installed.streamer), "local", "--port", "0", "--log-level", "WARNING"],
            cwd=installed.cwd,
            env=installed.env,
            stdout=subprocess.PIPE,
            stderr=err,
            text=True,
        )
    try:
        url = ""
        deadline = time.monotonic() + START_TIMEOUT
        assert proc.stdout is not None
        while not url and time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            if line.startswith(READY_PREFIX):
                url = line[len(READY_PREFIX) :].split()[0]
        assert url, f"streamer local not ready (exit code {proc.poll()}):\n{log.read_text()[-4000:]}"

        submit = installed.run(
            "submit", "echo", "--payload", '{"message": "from a wheel", "steps": 2}', "--json", "--url", url
        )
        assert submit.returncode == 0, submit.stdout + submit.stderr
        events = [json.loads(line) for line in submit.stdout.splitlines()]
        assert [e["type"] for e in events] == ["progress", "progress", "result"]
        assert events[-1]["output"] == {"message": "from a wheel"}
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            code = proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            code = proc.wait(10)
        if proc.stdout is not None:
            proc.stdout.close()
    assert code == 0, log.read_text()[-4000:]
