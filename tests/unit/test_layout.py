"""Repository layout guarantees."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_platform_is_a_source_root_not_a_package() -> None:
    assert not (ROOT / "platform" / "__init__.py").exists()
    assert (ROOT / "platform" / "streamer" / "__init__.py").exists()


def test_import_platform_is_still_the_standard_library() -> None:
    # Run from the repository root with the source root on the path, as an editable install does.
    code = "import platform, streamer; print(platform.__file__); print(platform.python_version())"
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
        env={"PYTHONPATH": f"{ROOT}:{ROOT / 'platform'}", "PATH": "/usr/bin:/bin"},
    )
    path, version = out.stdout.split()
    assert "site-packages" not in path and not path.startswith(str(ROOT))
    assert version == ".".join(map(str, sys.version_info[:3]))


def test_readme_first_screen_has_exactly_the_two_commands() -> None:
    first_screen = "\n".join((ROOT / "README.md").read_text().splitlines()[:25])
    assert "make run" in first_screen and "make test" in first_screen
    ci = (ROOT / ".ci" / "run").read_text()
    assert "make test" in ci
