"""The Lambda artifact: built with pip from the project and plugin directories, then checked from a fresh
interpreter that sees nothing but the artifact.

The two builds need PyPI (or the machine's pip find-links) for the runtime dependencies; each takes
about ten seconds with a warm pip cache.
"""

from __future__ import annotations

import importlib.metadata
import json
import platform
import shutil
from pathlib import Path

import pytest

from streamer.cli import main as cli
from streamer.deploy import build
from streamer.deploy.template import functions
from streamer.limits import ENTRYPOINT_GROUP

EXPECTED_PLUGINS = {"echo", "textstats"}
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def artifact(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build.build_artifact(tmp_path_factory.mktemp("artifact") / "lambda", project_root=ROOT)


@pytest.mark.timeout(90)
def test_artifact_finds_plugins_and_imports_handlers_on_its_own(artifact: Path) -> None:
    report = build.inspect_artifact(artifact)
    assert report["sys_path"][0] == str(artifact)
    assert not [p for p in report["sys_path"] if "site-packages" in p]
    assert not report["errors"], report["errors"]
    for spec in functions().values():
        assert report["handlers"][spec.module] is True, spec.module

    steps = build.verify_artifact(artifact)
    assert set(steps) >= EXPECTED_PLUGINS
    for name in EXPECTED_PLUGINS:
        assert steps[name], f"plugin {name!r} declares no step"
        assert report["plugins"][name]["dist"] == f"streamer-{name}"


def test_artifact_holds_distributions_not_source_trees(artifact: Path) -> None:
    dists = {d.metadata["Name"]: d for d in importlib.metadata.distributions(path=[str(artifact)])}
    assert {"streamer", "streamer-echo", "streamer-textstats", "pydantic", "pluggy"} <= set(dists)
    groups = {
        ep.name: ep.value
        for d in dists.values()
        for ep in d.entry_points
        if ep.group == ENTRYPOINT_GROUP
    }
    assert set(groups) >= EXPECTED_PLUGINS
    assert (artifact / "streamer" / "handlers").is_dir()
    assert not (artifact / "bin").exists()
    assert not list(artifact.glob("*.egg-link"))  # nothing points back into the checkout
    marker = json.loads((artifact / ".streamer-artifact.json").read_text(encoding="utf-8"))
    assert sorted(marker["plugins"]) == sorted(EXPECTED_PLUGINS)


def test_rebuilding_replaces_an_artifact(artifact: Path, tmp_path: Path) -> None:
    out = tmp_path / "lambda"
    shutil.copytree(artifact, out)
    (out / "stale.py").write_text("x = 1\n", encoding="utf-8")
    build._prepare_out_dir(out)  # what build_artifact does first
    assert out.is_dir() and not any(out.iterdir())


def test_never_deletes_a_directory_that_is_not_an_artifact(tmp_path: Path) -> None:
    (tmp_path / "precious.txt").write_text("keep me", encoding="utf-8")
    with pytest.raises(build.ArtifactError, match="refusing"):
        build.build_artifact(tmp_path, plugins=[], project_root=ROOT)
    assert (tmp_path / "precious.txt").read_text(encoding="utf-8") == "keep me"


def test_unknown_plugin_directory_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(build.ArtifactError, match=r"no pyproject\.toml"):
        build.build_artifact(tmp_path / "out", plugins=[tmp_path], project_root=ROOT)


def test_verification_sees_only_the_artifact(tmp_path: Path) -> None:
    """A package that imports a dependency the artifact lacks fails, even though the test's own
    environment has it: the check does not leak the virtualenv's site-packages."""
    handlers = tmp_path / "streamer" / "handlers"
    handlers.mkdir(parents=True)
    (tmp_path / "streamer" / "__init__.py").write_text("", encoding="utf-8")
    (handlers / "__init__.py").write_text("", encoding="utf-8")
    (handlers / "connect.py").write_text("def handler(event, context):\n    return {}\n", encoding="utf-8")
    (handlers / "router.py").write_text("import pydantic\n\ndef handler(event, context): ...\n", "utf-8")
    (handlers / "notify.py").write_text("HANDLER = None\n", encoding="utf-8")
    report = build.inspect_artifact(tmp_path)
    assert report["handlers"]["streamer.handlers.connect"] is True
    assert report["handlers"]["streamer.handlers.router"] is False  # no pydantic in this "artifact"
    assert report["handlers"]["streamer.handlers.notify"] is False  # no handler()
    assert report["handlers"]["streamer.handlers.step_runner"] is False  # the template names it
    assert report["plugins"] == {}
    with pytest.raises(build.ArtifactError, match=r"streamer\.handlers\.router: ModuleNotFoundError"):
        build.verify_artifact(tmp_path)


def test_lambda_target_follows_the_template() -> None:
    target = build.lambda_target()
    assert target.python_version == "3.12"
    assert target.platforms and all(p.endswith("_aarch64") for p in target.platforms)
    args = target.pip_args()
    assert "--only-binary=:all:" in args
    assert args[args.index("--python-version") + 1] == "3.12"


@pytest.mark.timeout(90)
@pytest.mark.skipif(platform.machine() == "aarch64", reason="the native build covers this machine")
def test_lambda_build_gets_binaries_for_the_lambda_platform(tmp_path: Path) -> None:
    """`--lambda` on another machine still yields cp312/aarch64 extension modules and the entry points."""
    out = build.build_artifact(tmp_path / "lambda", target=build.lambda_target(), project_root=ROOT)
    extensions = [p.name for p in out.rglob("*.so")]
    assert any("cpython-312-aarch64" in n for n in extensions), extensions
    assert not any("x86_64" in n for n in extensions), extensions
    assert not list(out.rglob("*.pyc"))  # bytecode of the build interpreter would be useless there
    groups = {
        ep.name
        for d in importlib.metadata.distributions(path=[str(out)])
        for ep in d.entry_points
        if ep.group == ENTRYPOINT_GROUP
    }
    assert groups >= EXPECTED_PLUGINS


def test_cli_without_verification(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["build", "--project-dir", str(ROOT), "--out", str(tmp_path), "--plugin", str(tmp_path / "missing")]
    assert cli([*args, "--no-verify"]) == 1
    assert "no pyproject.toml" in capsys.readouterr().err


def test_the_project_is_found_from_inside_it_and_nowhere_else(tmp_path: Path) -> None:
    assert build.find_project_root(ROOT / "plugins" / "echo" / "src") == ROOT
    assert build.find_project_root(ROOT) == ROOT
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "someone-else"\n', encoding="utf-8")
    with pytest.raises(build.ArtifactError, match="not inside a streamer source tree"):
        build.find_project_root(tmp_path)
    (tmp_path / "pyproject.toml").write_text("not toml [", encoding="utf-8")
    with pytest.raises(build.ArtifactError, match="pass --project-dir"):
        build.find_project_root(tmp_path)


def test_building_needs_the_source_tree(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(build.ArtifactError, match="not the streamer source tree"):
        build.build_artifact(tmp_path / "out", plugins=[], project_root=tmp_path)
    assert not (tmp_path / "out").exists()
    assert cli(["build", "--project-dir", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "not inside a streamer source tree" in err and "--project-dir" in err


def test_the_default_output_is_the_templates_code_uri() -> None:
    from streamer.deploy.resources import template_path
    from streamer.deploy.template import load_template

    code_uri = load_template(template_path(ROOT))["Globals"]["Function"]["CodeUri"]
    assert (ROOT / "infra" / code_uri).resolve() == (ROOT / build.ARTIFACT_DIR).resolve()
