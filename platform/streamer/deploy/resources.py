"""Where the platform's deployment files are: the SAM template and the state machine definitions.

The source of truth is the checkout's ``infra/template.yaml`` and ``statemachines/*.asl.json``. They also
ship inside the package, under ``streamer/deploy/bundled/`` with the same relative layout (the template's
``DefinitionUri: ../statemachines/<w>.asl.json`` resolves there as it does in the checkout):

* in the checkout, ``bundled/infra/template.yaml`` and ``bundled/statemachines`` are relative symlinks to
  those files, so an editable install (or ``PYTHONPATH=platform``) reads the checkout itself, edits included;
* ``pip wheel`` / ``pip install .`` copy the files the symlinks point at into the wheel (setuptools' package
  data, ``[tool.setuptools.package-data]`` in ``pyproject.toml``), so an installed package works from any
  directory with no checkout around.

A command given ``--project-dir DIR`` reads ``DIR/infra/template.yaml`` and ``DIR/statemachines/`` instead.

Contract: :func:`template_path` and :func:`statemachines_dir` return existing, resolved paths (in the
checkout: the real ``infra/template.yaml`` and ``statemachines/``, not the symlinks) or raise
:class:`ProjectFilesError` (a :class:`~streamer.errors.StreamerError`) saying what is missing and what to do.
No function here looks at the current directory or at the location of the source file beyond the package.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from streamer.errors import StreamerError

__all__ = [
    "STATEMACHINES_DIR",
    "TEMPLATE",
    "ProjectFilesError",
    "bundled_dir",
    "statemachines_dir",
    "template_path",
]

#: Both relative to a project directory (the checkout's root) and to :func:`bundled_dir`.
TEMPLATE = Path("infra") / "template.yaml"
STATEMACHINES_DIR = Path("statemachines")


class ProjectFilesError(StreamerError):
    """The template or the state machine directory cannot be found (not bundled, not in --project-dir)."""


def bundled_dir() -> Path:
    """The package's copy of the project files (``streamer/deploy/bundled``), on the file system."""
    root = resources.files("streamer.deploy") / "bundled"
    # A package imported from a zip file has no file-system path; the local stack and the validators need one.
    if not isinstance(root, Path):
        raise ProjectFilesError(f"the package's bundled files are not on the file system ({root}); use --project-dir")
    return root


def _find(project_dir: Path | str | None, relative: Path, *, directory: bool) -> Path:
    """``relative`` under ``project_dir`` (or the bundled files), resolved; :class:`ProjectFilesError` if absent."""
    if project_dir is None:
        base, where = bundled_dir(), "the installed package"
    else:
        base, where = Path(project_dir), f"project directory {project_dir}"
        if not base.is_dir():
            raise ProjectFilesError(f"project directory {base} does not exist")
    path = base / relative
    if not (path.is_dir() if directory else path.is_file()):
        name = relative.as_posix() + ("/" if directory else "")
        raise ProjectFilesError(
            f"no {name} in {where} ({path}); pass --project-dir with the directory that holds "
            f"{TEMPLATE.as_posix()} and {STATEMACHINES_DIR.as_posix()}/"
        )
    return path.resolve()


def template_path(project_dir: Path | str | None = None) -> Path:
    """``<project_dir>/infra/template.yaml``, or the template bundled with the package when ``project_dir`` is
    ``None``. Raises :class:`ProjectFilesError` when the file is not there."""
    return _find(project_dir, TEMPLATE, directory=False)


def statemachines_dir(project_dir: Path | str | None = None) -> Path:
    """``<project_dir>/statemachines``, or the definitions bundled with the package when ``project_dir`` is
    ``None``. Raises :class:`ProjectFilesError` when the directory is not there."""
    return _find(project_dir, STATEMACHINES_DIR, directory=True)
