"""Build the Lambda code artifact (``.artifacts/lambda``, the template's ``CodeUri``).

Every function of ``infra/template.yaml`` shares one artifact: ``streamer``, the plugins and their runtime
dependencies, installed as *distributions* by pip. That matters: plugins are found through the entry point
group ``streamer.plugins``, which only exists where ``*.dist-info/entry_points.txt`` exists — copying
source trees would lose it.

Two pip runs: ``pip wheel --no-deps`` turns the project and each plugin directory into a wheel, then
``pip install --target`` installs those wheels with their dependencies. For AWS, ``--lambda`` makes the
second run fetch binary wheels for the template's runtime and architecture (python3.12 / arm64 →
``--python-version 3.12 --platform manylinux…_aarch64 --only-binary=:all:``), whatever machine builds it.

:func:`verify_artifact` then proves the artifact is self-contained: a fresh interpreter
(``python -I -S``: no site-packages, no ``PYTHON*`` variables) with only the artifact on ``sys.path``
imports every handler module and loads every plugin entry point.

The build works on a *project directory*: the streamer source tree (its ``pyproject.toml`` names the
distribution ``streamer``), with its plugins under ``plugins/*/``. :func:`find_project_root` finds it from a
directory inside it; an installed package has no such tree, so building needs the checkout.

Command line: ``streamer build [--project-dir DIR] [--out DIR] [--plugin DIR …] [--lambda] [--no-verify]``
(:mod:`streamer.cli.build`).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from streamer.config import LOCAL_REGION
from streamer.errors import StreamerError
from streamer.limits import ENTRYPOINT_GROUP

__all__ = [
    "ARTIFACT_DIR",
    "ArtifactError",
    "LambdaTarget",
    "build_artifact",
    "build_wheels",
    "discover_plugins",
    "find_project_root",
    "inspect_artifact",
    "lambda_target",
    "runs_here",
    "verify_artifact",
]

#: The artifact's place in the project directory: where ``CodeUri: ../.artifacts/lambda`` of
#: ``infra/template.yaml`` points.
ARTIFACT_DIR = Path(".artifacts") / "lambda"
#: The distribution name that marks the project directory's ``pyproject.toml``.
_PROJECT_NAME = "streamer"
#: Written into every artifact; a non-empty directory without it is never deleted.
_MARKER = ".streamer-artifact.json"
_ARCH_TO_PLATFORM_SUFFIX = {"arm64": "aarch64", "x86_64": "x86_64"}
# Lambda's python3.12+ runtimes run Amazon Linux 2023 (glibc 2.34); older manylinux wheels run there too.
_MANYLINUX_TAGS = ("manylinux_2_34", "manylinux_2_28", "manylinux2014")


class ArtifactError(StreamerError):
    """The artifact could not be built, or does not import / find its plugins on its own, or there is no
    project directory to build from."""


def _is_project(directory: Path) -> bool:
    try:
        with (directory / "pyproject.toml").open("rb") as fh:
            return bool(tomllib.load(fh).get("project", {}).get("name") == _PROJECT_NAME)
    except (OSError, tomllib.TOMLDecodeError):
        return False


def find_project_root(start: Path | str) -> Path:
    """``start`` or its nearest parent whose ``pyproject.toml`` is streamer's (resolved).

    Raises :class:`ArtifactError` when there is none: the artifact is built from the source tree."""
    here = Path(start).resolve()
    for directory in (here, *here.parents):
        if _is_project(directory):
            return directory
    raise ArtifactError(
        f"{here} is not inside a streamer source tree (no pyproject.toml of the distribution "
        f"{_PROJECT_NAME!r} here or above); run from the checkout or pass --project-dir"
    )


@dataclass(frozen=True)
class LambdaTarget:
    """The interpreter and platform Lambda runs the artifact on."""

    python_version: str  # "3.12"
    platforms: tuple[str, ...]  # ("manylinux_2_34_aarch64", ...)

    def pip_args(self) -> list[str]:
        args = ["--python-version", self.python_version, "--implementation", "cp", "--only-binary=:all:"]
        for platform in self.platforms:
            args += ["--platform", platform]
        return args


def lambda_target(template: dict[str, Any] | None = None) -> LambdaTarget:
    """Runtime and architecture of the template's functions (they must all agree: one artifact)."""
    from streamer.deploy.template import functions

    specs = functions(template)
    runtimes = {s.runtime for s in specs.values()}
    arches = {a for s in specs.values() for a in (s.architectures or ("x86_64",))}
    if len(runtimes) != 1 or len(arches) != 1:
        raise ArtifactError(f"one artifact needs one runtime and one architecture; got {runtimes} {arches}")
    runtime, arch = runtimes.pop(), arches.pop()
    if runtime is None or not runtime.startswith("python"):
        raise ArtifactError(f"not a Python runtime: {runtime!r}")
    suffix = _ARCH_TO_PLATFORM_SUFFIX.get(arch)
    if suffix is None:
        raise ArtifactError(f"unknown Lambda architecture {arch!r}")
    return LambdaTarget(
        python_version=runtime.removeprefix("python"),
        platforms=tuple(f"{tag}_{suffix}" for tag in _MANYLINUX_TAGS),
    )


def discover_plugins(root: Path) -> list[Path]:
    """Every plugin project of the checkout: ``plugins/*/pyproject.toml``."""
    return sorted(p.parent for p in (root / "plugins").glob("*/pyproject.toml"))


def _run(cmd: Sequence[str], what: str, *, cwd: Path | None = None) -> None:
    env = {**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1", "PIP_NO_INPUT": "1"}
    proc = subprocess.run(list(cmd), cwd=cwd, env=env, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-40:])
        raise ArtifactError(f"{what} failed (exit {proc.returncode}): {' '.join(cmd)}\n{tail}")


_SKIP_WHEN_STAGING = shutil.ignore_patterns(
    ".git", ".venv", "venv", "build", "dist", "*.egg-info", "__pycache__", "*.pyc", ".artifacts",
    ".mypy_cache", ".ruff_cache", ".pytest_cache", ".hypothesis", "node_modules",
)  # fmt: skip


def _stage(src: Path, dst: Path, out_dir: Path | None) -> Path:
    """Copy a project tree to ``dst`` for building, without VCS, caches, old builds or ``out_dir``.

    Symlinks stay symlinks: the relative ones of ``streamer/deploy/bundled`` still reach the copied
    ``infra/`` and ``statemachines/``, and the wheel gets the files they point at."""

    def ignore(directory: str, names: list[str]) -> set[str]:
        skipped = set(_SKIP_WHEN_STAGING(directory, names))
        return skipped | {n for n in names if out_dir is not None and (Path(directory) / n).resolve() == out_dir}

    shutil.copytree(src, dst, ignore=ignore, symlinks=True)
    return dst


def build_wheels(
    projects: Sequence[Path], wheel_dir: Path, *, python: str = sys.executable, exclude: Path | None = None
) -> list[Path]:
    """``pip wheel --no-deps`` of each project directory (streamer's source tree, plugin projects) into
    ``wheel_dir``; the wheel files.

    Each project is built from a clean copy (without ``exclude``, e.g. an artifact inside the tree): setuptools'
    in-tree ``build/`` keeps files deleted from the source and would ship them, and the checkout stays
    untouched. Raises :class:`ArtifactError` when pip fails.
    """
    wheel_dir = Path(wheel_dir)
    before = set(wheel_dir.glob("*.whl"))
    with tempfile.TemporaryDirectory(prefix="streamer-wheels-") as tmp:
        sources = [
            _stage(Path(src).resolve(), Path(tmp) / f"{i}-{Path(src).name}", exclude) for i, src in enumerate(projects)
        ]
        _run(
            [python, "-m", "pip", "wheel", "--quiet", "--no-deps", "--wheel-dir", str(wheel_dir), *map(str, sources)],
            "building the project and plugin wheels",
        )
    return sorted(set(wheel_dir.glob("*.whl")) - before)


def _prepare_out_dir(out_dir: Path) -> None:
    if out_dir.exists():
        if not out_dir.is_dir():
            raise ArtifactError(f"{out_dir} exists and is not a directory")
        if any(out_dir.iterdir()) and not (out_dir / _MARKER).is_file():
            raise ArtifactError(
                f"{out_dir} is not empty and is not a streamer artifact; refusing to delete it"
            )
        shutil.rmtree(out_dir)
    out_dir.mkdir(parents=True)


def build_artifact(
    out_dir: Path,
    plugins: list[Path] | None = None,
    *,
    project_root: Path,
    target: LambdaTarget | None = None,
    python: str = sys.executable,
) -> Path:
    """Install ``streamer`` (the source tree at ``project_root``) and ``plugins`` (default:
    :func:`discover_plugins` of ``project_root``) with their runtime dependencies into a fresh ``out_dir``;
    return it.

    ``target=None`` builds for the running interpreter (local use, tests); ``target=lambda_target()`` builds
    for AWS Lambda (binary wheels only, no ``.pyc`` for the wrong interpreter).
    """
    out_dir = Path(out_dir).resolve()
    if not _is_project(Path(project_root)):
        raise ArtifactError(f"{project_root}: not the streamer source tree (no pyproject.toml of {_PROJECT_NAME!r})")
    plugin_dirs = [
        Path(p).resolve() for p in (discover_plugins(project_root) if plugins is None else plugins)
    ]
    for d in plugin_dirs:
        if not (d / "pyproject.toml").is_file():
            raise ArtifactError(f"{d}: not a plugin project (no pyproject.toml)")
    _prepare_out_dir(out_dir)
    with tempfile.TemporaryDirectory(prefix="streamer-build-") as tmp:
        projects = [Path(project_root).resolve(), *plugin_dirs]
        wheels = [str(w) for w in build_wheels(projects, Path(tmp), python=python, exclude=out_dir)]
        install = [python, "-m", "pip", "install", "--quiet", "--upgrade", "--target", str(out_dir)]
        if target is not None:
            install += [*target.pip_args(), "--no-compile"]
        _run([*install, *wheels], "installing the wheels and their dependencies")
    shutil.rmtree(out_dir / "bin", ignore_errors=True)  # console scripts: of no use on Lambda
    (out_dir / _MARKER).write_text(
        json.dumps(
            {
                "plugins": [d.name for d in plugin_dirs],
                "python_version": target.python_version if target else "{}.{}".format(*sys.version_info),
                "platforms": list(target.platforms) if target else None,
            },
            indent=2,
        )
        + "\n",
        encoding="utf-8",
    )
    return out_dir


# Runs in the fresh interpreter: argv[1] = artifact dir, argv[2] = JSON list of handler modules expected by
# the template. Prints one JSON report; never raises.
_VERIFY_SCRIPT = r"""
import importlib, importlib.metadata as md, json, pkgutil, sys, traceback
artifact, expected = sys.argv[1], json.loads(sys.argv[2])
sys.path.insert(0, artifact)
report = {"python": sys.version.split()[0], "sys_path": list(sys.path), "handlers": {}, "plugins": {},
          "errors": []}

def err(what, exc):
    report["errors"].append(what + ": " + "".join(traceback.format_exception_only(type(exc), exc)).strip())

# Every module of streamer.handlers imports; the template's handler modules also expose handler().
modules = set(expected)
try:
    import streamer.handlers as pkg
    modules |= {"streamer.handlers." + m.name for m in pkgutil.iter_modules(pkg.__path__)}
except Exception as exc:
    err("streamer.handlers", exc)
for mod in sorted(modules):
    try:
        m = importlib.import_module(mod)
    except Exception as exc:
        report["handlers"][mod] = False
        err(mod, exc)
        continue
    ok = mod not in expected or callable(getattr(m, "handler", None))
    report["handlers"][mod] = ok
    if not ok:
        report["errors"].append(mod + ": no callable handler(event, context)")

# Every entry point of the group loads; then the plugin manager says which steps each plugin declares.
for ep in md.entry_points(group=__GROUP__):
    report["plugins"][ep.name] = {"value": ep.value, "dist": ep.dist.name if ep.dist else None,
                                  "steps": [], "workflows": []}
    try:
        ep.load()
    except Exception as exc:
        err("entry point " + ep.name, exc)
try:
    import streamer.plugins as sp
    for info in sp.list_plugins():
        entry = report["plugins"].setdefault(info["name"], {"value": None, "dist": None})
        entry["steps"] = list(info.get("steps", []))
        entry["workflows"] = list(info.get("workflows", []))
    for e in sp.plugin_errors():
        report["errors"].append("plugin: " + str(e))
except Exception as exc:
    err("streamer.plugins", exc)
print(json.dumps(report))
"""


def _verify_env() -> dict[str, str]:
    """A Lambda-like environment without credentials or network needs: nothing from the caller's."""
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "LANG": "C.UTF-8",
        "AWS_REGION": LOCAL_REGION,
        "AWS_DEFAULT_REGION": LOCAL_REGION,
        "AWS_ACCESS_KEY_ID": "verify",
        "AWS_SECRET_ACCESS_KEY": "verify",
        "AWS_EC2_METADATA_DISABLED": "true",
        "POWERTOOLS_SERVICE_NAME": "streamer",
    }


def inspect_artifact(
    out_dir: Path, *, python: str = sys.executable, template: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Run the fresh-interpreter check and return its report (``handlers``, ``plugins``, ``errors``…)."""
    from streamer.deploy.template import functions

    expected = sorted({spec.module for spec in functions(template).values()})
    script = _VERIFY_SCRIPT.replace("__GROUP__", repr(ENTRYPOINT_GROUP))
    with tempfile.TemporaryDirectory(prefix="streamer-verify-") as cwd:
        proc = subprocess.run(
            [python, "-I", "-S", "-c", script, str(Path(out_dir).resolve()), json.dumps(expected)],
            cwd=cwd,
            env={**_verify_env(), "HOME": cwd},
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        raise ArtifactError(
            f"verification interpreter failed (exit {proc.returncode}):\n{proc.stderr[-4000:]}"
        )
    report: dict[str, Any] = json.loads(lines[-1])
    return report


def verify_artifact(
    out_dir: Path, *, python: str = sys.executable, template: dict[str, Any] | None = None
) -> dict[str, list[str]]:
    """``{plugin entry point name: step names}`` as seen from inside the artifact alone.

    Raises :class:`ArtifactError` when a handler module (``streamer.handlers.*`` and every ``Handler`` of
    the template) does not import, or a plugin entry point does not load.
    """
    report = inspect_artifact(out_dir, python=python, template=template)
    leaked = [p for p in report["sys_path"] if "site-packages" in p or "dist-packages" in p]
    if leaked:
        raise ArtifactError(f"verification interpreter saw site-packages: {leaked}")
    if report["errors"]:
        raise ArtifactError("artifact check failed:\n  " + "\n  ".join(report["errors"]))
    return {name: list(info["steps"]) for name, info in report["plugins"].items()}


def runs_here(target: LambdaTarget) -> bool:
    """Whether this machine can run (and so verify) an artifact built for ``target``."""
    import platform

    machine = platform.machine().lower().replace("arm64", "aarch64").replace("amd64", "x86_64")
    same_python = target.python_version == "{}.{}".format(*sys.version_info)
    return same_python and sys.platform == "linux" and any(p.endswith(machine) for p in target.platforms)
