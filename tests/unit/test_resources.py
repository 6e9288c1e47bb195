"""Where the template and the state machines are found: the package's bundled copies, or --project-dir."""

from __future__ import annotations

import types
import zipfile
from pathlib import Path

import pytest

from streamer.deploy import resources, statemachines
from streamer.deploy.resources import ProjectFilesError, statemachines_dir, template_path
from streamer.errors import StreamerError

ROOT = Path(__file__).resolve().parents[2]


def test_in_the_checkout_the_bundled_files_are_the_checkouts_own() -> None:
    # The bundled entries are relative symlinks: an editable install reads (and sees edits to) the sources.
    bundled = resources.bundled_dir()
    assert (bundled / "infra" / "template.yaml").is_symlink() and (bundled / "statemachines").is_symlink()
    assert template_path() == ROOT / "infra" / "template.yaml"
    assert statemachines_dir() == ROOT / "statemachines"
    assert template_path().read_bytes() == (bundled / "infra" / "template.yaml").read_bytes()


def test_the_bundled_layout_keeps_the_templates_relative_paths() -> None:
    # DefinitionUri: ../statemachines/echo.asl.json is relative to the template, in a wheel as in the checkout.
    definition_uri = "../statemachines/echo.asl.json"
    assert definition_uri in template_path().read_text(encoding="utf-8")
    assert (resources.bundled_dir() / "infra" / definition_uri).is_file()


def test_a_project_directory(tmp_path: Path) -> None:
    (tmp_path / "infra").mkdir()
    (tmp_path / "infra" / "template.yaml").write_text("Resources: {}\n", encoding="utf-8")
    (tmp_path / "statemachines").mkdir()
    assert template_path(tmp_path) == (tmp_path / "infra" / "template.yaml").resolve()
    assert statemachines_dir(str(tmp_path)) == (tmp_path / "statemachines").resolve()
    assert statemachines.default_directory(tmp_path) == (tmp_path / "statemachines").resolve()


def test_what_is_missing_is_said(tmp_path: Path) -> None:
    with pytest.raises(ProjectFilesError, match=rf"^project directory {tmp_path / 'nope'} does not exist$"):
        template_path(tmp_path / "nope")
    with pytest.raises(ProjectFilesError, match=r"^no infra/template.yaml in project directory .*--project-dir"):
        template_path(tmp_path)
    with pytest.raises(ProjectFilesError, match=r"^no statemachines/ in project directory .*--project-dir"):
        statemachines_dir(tmp_path)
    assert issubclass(ProjectFilesError, StreamerError)


def test_a_package_without_bundled_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.setattr(resources, "bundled_dir", lambda: empty)
    with pytest.raises(ProjectFilesError, match=r"^no infra/template.yaml in the installed package"):
        template_path()
    with pytest.raises(ProjectFilesError, match=r"^no statemachines/ in the installed package"):
        statemachines_dir()


def test_a_package_imported_from_a_zip_file_needs_a_project_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    archive = tmp_path / "streamer.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("streamer/deploy/bundled/infra/template.yaml", "Resources: {}\n")
    fake = types.SimpleNamespace(files=lambda package: zipfile.Path(archive, "streamer/deploy/"))
    monkeypatch.setattr(resources, "resources", fake)
    with pytest.raises(ProjectFilesError, match=r"not on the file system.*--project-dir"):
        template_path()


def test_the_environment_still_overrides_the_bundled_definitions(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STREAMER_STATEMACHINES_DIR", str(tmp_path))
    assert statemachines.default_directory() == tmp_path
    assert statemachines.default_directory(ROOT) == ROOT / "statemachines"  # --project-dir wins
