"""The plugin contract: hookspecs, the manager, the catalogue, ``streamer plugins`` and the docs."""

from __future__ import annotations

import inspect
import json
import re
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pluggy
import pytest
from pydantic import BaseModel

import streamer
from streamer import hookspecs, plugins
from streamer.cli import main as cli
from streamer.errors import PluginError
from streamer.plugins import (
    Registry,
    UnknownStepError,
    UnknownWorkflowError,
    create_plugin_manager,
    load_plugins,
    plugin_errors,
)
from streamer.step import Step, Workflow

ROOT = Path(__file__).resolve().parents[2]


def _noop(data: Any, ctx: Any) -> dict[str, Any]:
    return {}


class PluginA:
    @streamer.hookimpl
    def streamer_steps(self) -> list[Step]:
        return [Step(name="a.one", func=_noop), Step(name="a.two", func=_noop, description="second")]

    @streamer.hookimpl
    def streamer_workflows(self) -> list[Workflow]:
        return [Workflow(name="a", description="Workflow A.")]


class PluginB:
    @streamer.hookimpl
    def streamer_steps(self) -> list[Step]:
        return [Step(name="b.one", func=_noop)]


def steps_plugin(result: Callable[[], Any]) -> object:
    """A plugin whose ``streamer_steps`` returns ``result()`` (called when the catalogue is built)."""

    class Plugin:
        @streamer.hookimpl
        def streamer_steps(self) -> Any:
            return result()

    return Plugin()


@pytest.fixture
def pm() -> pluggy.PluginManager:
    """A fresh manager per test, without the installed plugins."""
    return create_plugin_manager(autoload=False)


@pytest.fixture
def clean_process_manager() -> Iterator[None]:
    plugins.reset_plugin_manager()
    yield
    plugins.reset_plugin_manager()


# --------------------------------------------------------------------------------------- the contract


def test_markers_are_exported_once() -> None:
    assert streamer.hookimpl is hookspecs.hookimpl
    assert isinstance(hookspecs.hookspec, pluggy.HookspecMarker)
    assert hookspecs.hookimpl.project_name == "streamer"
    for name in ("Step", "Workflow", "StepContext", "RetryableStepError", "StepFailedError", "__version__"):
        assert hasattr(streamer, name)


def _hook_names() -> list[str]:
    return [n for n, f in inspect.getmembers(hookspecs, inspect.isfunction) if n.startswith("streamer_")]


def test_every_hook_is_specified_typed_and_documented() -> None:
    names = _hook_names()
    assert {"streamer_steps", "streamer_workflows"} <= set(names)
    for name in names:
        fn = getattr(hookspecs, name)
        assert hasattr(fn, "streamer_spec"), f"{name} is not marked @hookspec"
        assert fn.__doc__ and len(fn.__doc__.split()) > 10, f"{name} needs a docstring"
        assert "return" in inspect.get_annotations(fn), f"{name} needs a return annotation"


def test_every_hook_is_documented_in_the_plugin_guide() -> None:
    guide = (ROOT / "docs" / "plugins.md").read_text(encoding="utf-8")
    for name in _hook_names():
        assert re.search(rf"^#+ .*`{name}", guide, re.M), f"docs/plugins.md has no section for {name}"


def test_steps_and_workflows_are_collected(pm: pluggy.PluginManager) -> None:
    pm.register(PluginA(), name="a")
    pm.register(PluginB(), name="b")
    reg = Registry(pm)
    assert list(reg.steps()) == ["a.one", "a.two", "b.one"]
    assert reg.get_step("a.two").description == "second"
    assert list(reg.workflows()) == ["a"]
    assert reg.get_workflow("a").description == "Workflow A."
    # The module-level functions take the manager explicitly.
    assert list(plugins.steps(pm)) == ["a.one", "a.two", "b.one"]
    assert plugins.get_step("a.one", pm).name == "a.one"
    assert plugins.get_workflow("a", pm).name == "a"


def test_unknown_names_raise_lookup_errors(pm: pluggy.PluginManager) -> None:
    pm.register(PluginA(), name="a")
    with pytest.raises(UnknownStepError, match="nope") as step_exc:
        plugins.get_step("nope", pm)
    assert isinstance(step_exc.value, LookupError) and isinstance(step_exc.value, PluginError)
    with pytest.raises(UnknownWorkflowError):
        plugins.get_workflow("nope", pm)


def test_duplicate_step_names_name_both_plugins(pm: pluggy.PluginManager) -> None:
    pm.register(PluginA(), name="first")
    pm.register(steps_plugin(lambda: [Step(name="a.two", func=_noop)]), name="second")
    with pytest.raises(PluginError) as exc:
        plugins.steps(pm)
    assert "'a.two'" in str(exc.value)
    assert "'first'" in str(exc.value) and "'second'" in str(exc.value)


def test_duplicate_workflow_names_name_both_plugins(pm: pluggy.PluginManager) -> None:
    class Clash:
        @streamer.hookimpl
        def streamer_workflows(self) -> list[Workflow]:
            return [Workflow(name="a", description="Another A.")]

    pm.register(PluginA(), name="first")
    pm.register(Clash(), name="second")
    with pytest.raises(PluginError, match=r"workflow 'a' is declared by both plugin '\w+' and plugin '\w+'"):
        plugins.workflows(pm)


@pytest.mark.parametrize(
    "returned",
    [Step(name="single", func=_noop), ["not a step"], "echo"],
    ids=["a bare Step", "a list of strings", "a string"],
)
def test_a_hook_returning_the_wrong_thing_is_reported_with_the_plugin(
    pm: pluggy.PluginManager, returned: Any
) -> None:
    pm.register(steps_plugin(lambda: returned), name="wrong")
    with pytest.raises(PluginError, match="plugin 'wrong'"):
        plugins.steps(pm)


def test_a_hook_that_raises_is_reported_with_the_plugin(pm: pluggy.PluginManager) -> None:
    pm.register(steps_plugin(lambda: [Step(name="no spaces allowed", func=_noop)]), name="bad-name")
    with pytest.raises(PluginError, match=r"^plugin 'bad-name': streamer_steps\(\) raised PluginError: step name"):
        plugins.steps(pm)


def test_an_implementation_may_take_only_the_arguments_it_uses(pm: pluggy.PluginManager) -> None:
    class Extra:
        @streamer.hookimpl
        def streamer_steps(self, config: Any) -> list[Step]:
            return []

    with pytest.raises(pluggy.PluginValidationError, match="config"):
        pm.register(Extra(), name="extra")


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"name": "has space", "func": _noop}, "step name"),
        ({"name": "", "func": _noop}, "step name"),
        ({"name": "ok", "func": "not callable"}, "callable"),
        ({"name": "ok", "func": _noop, "input_model": dict}, "input_model"),
        ({"name": "ok", "func": _noop, "output_model": int}, "output_model"),
    ],
)
def test_step_declarations_are_checked(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(PluginError, match=match):
        Step(**kwargs)


def test_workflow_declarations_are_checked() -> None:
    class Payload(BaseModel):
        x: int

    wf = Workflow(name="ok-1_a", description="Fine.", payload_model=Payload, definition="x.asl.json")  # type: ignore[arg-type]
    assert wf.definition == Path("x.asl.json")
    with pytest.raises(PluginError, match="workflow name"):
        Workflow(name="dots.not.allowed", description="x")
    with pytest.raises(PluginError, match="one line"):
        Workflow(name="w", description="two\nlines")
    with pytest.raises(PluginError, match="payload_model"):
        Workflow(name="w", description="x", payload_model=dict)  # type: ignore[arg-type]


# --------------------------------------------------------------------------------------- loading


def _fake_distribution(
    site: Path, dist: str, version: str, entry_points: dict[str, str], modules: dict[str, str]
) -> None:
    """An installed distribution as pip leaves it: a module and a .dist-info with entry_points.txt."""
    info = site / f"{dist.replace('-', '_')}-{version}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n")
    eps = "\n".join(f"{name} = {target}" for name, target in entry_points.items())
    (info / "entry_points.txt").write_text(f"[streamer.plugins]\n{eps}\n")
    for module, source in modules.items():
        (site / f"{module}.py").write_text(textwrap.dedent(source))


GOOD_PLUGIN = """
    import streamer

    def hello(data, ctx):
        return {"hello": data.get("name", "world")}

    @streamer.hookimpl
    def streamer_steps():
        return [streamer.Step(name="fake.hello", func=hello)]
"""


@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A directory on sys.path that importlib.metadata scans for distributions."""
    monkeypatch.syspath_prepend(str(tmp_path))
    yield tmp_path
    for name in [m for m in sys.modules if m.startswith("fake_")]:
        del sys.modules[name]


def test_a_broken_plugin_is_reported_by_name_and_the_others_still_load(site: Path) -> None:
    _fake_distribution(site, "fake-good", "1.2.3", {"good": "fake_good"}, {"fake_good": GOOD_PLUGIN})
    _fake_distribution(
        site, "fake-broken", "0.0.1", {"broken": "fake_broken"}, {"fake_broken": "raise ImportError('no numpy')"}
    )
    _fake_distribution(
        site,
        "fake-typo",
        "0.1.0",
        {"typo": "fake_typo"},
        {"fake_typo": "import streamer\n@streamer.hookimpl\ndef streamer_step():\n    return []\n"},
    )
    pm = create_plugin_manager(autoload=False)
    errors = load_plugins(pm)
    messages = sorted(str(e) for e in errors)
    assert len(messages) == 2, messages
    assert "plugin 'broken' (distribution fake-broken) failed to load: ImportError: no numpy" in messages
    assert any("'typo'" in m and "streamer_step" in m for m in messages)
    assert [str(e) for e in plugin_errors(pm)] == [str(e) for e in errors]
    # The good plugin and the installed example plugins are there; the broken ones are not.
    steps = plugins.steps(pm)
    assert steps["fake.hello"].func({"name": "x"}, None) == {"hello": "x"}
    assert {"echo", "textstats.split"} <= set(steps)
    names = {p["name"] for p in plugins.list_plugins(pm)}
    assert "good" in names and "broken" not in names and "typo" not in names
    listing = {p["name"]: p for p in plugins.list_plugins(pm)}
    assert listing["good"] == {
        "name": "good",
        "distribution": "fake-good",
        "version": "1.2.3",
        "steps": ["fake.hello"],
        "workflows": [],
        "hooks": ["streamer_steps"],
    }


def test_installed_plugins_are_listed_with_versions() -> None:
    pm = create_plugin_manager(autoload=True)
    listing = {p["name"]: p for p in plugins.list_plugins(pm)}
    assert listing["echo"]["distribution"] == "streamer-echo"
    assert listing["echo"]["version"] == "0.1.0"
    assert listing["echo"]["steps"] == ["echo"]
    assert listing["textstats"]["steps"] == ["textstats.count", "textstats.merge", "textstats.split"]
    assert listing["textstats"]["workflows"] == ["textstats"]
    assert listing["echo"]["hooks"] == ["streamer_steps", "streamer_workflows"]


def test_directly_registered_plugins_have_no_distribution(pm: pluggy.PluginManager) -> None:
    pm.register(PluginB(), name="b")
    assert plugins.list_plugins(pm) == [
        {
            "name": "b",
            "distribution": None,
            "version": None,
            "steps": ["b.one"],
            "workflows": [],
            "hooks": ["streamer_steps"],
        }
    ]


def test_autoload_can_be_disabled(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STREAMER_DISABLE_PLUGIN_AUTOLOAD", "1")
    assert plugins.steps(create_plugin_manager()) == {}
    monkeypatch.setenv("STREAMER_DISABLE_PLUGIN_AUTOLOAD", "0")
    assert "echo" in plugins.steps(create_plugin_manager())


def test_the_process_manager_is_lazy_and_cached(
    clean_process_manager: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    pm = plugins.get_plugin_manager()
    assert plugins.get_plugin_manager() is pm
    assert plugins.get_registry() is plugins.get_registry()
    assert "echo" in plugins.steps()
    assert plugins.plugin_errors() == []
    plugins.reset_plugin_manager()
    monkeypatch.setenv("STREAMER_DISABLE_PLUGIN_AUTOLOAD", "1")
    assert plugins.get_plugin_manager() is not pm
    assert plugins.steps() == {}


def test_importing_loads_no_plugin_and_the_pytest_plugin_imports_nothing_heavy() -> None:
    def run(code: str) -> str:
        return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout

    loaded = run(
        "import sys, streamer.plugins, streamer.handlers.step_runner\n"
        "print(streamer.plugins._manager is None, 'streamer_echo' in sys.modules)"
    )
    assert loaded.split() == ["True", "False"]
    heavy = run(
        "import sys, streamer.pytest_plugin\n"
        "print([m for m in ('moto', 'boto3', 'streamer.testing', 'streamer_echo') if m in sys.modules])"
    )
    assert heavy.strip() == "[]"


# --------------------------------------------------------------------------------------- `streamer plugins`


def test_streamer_plugins_json(clean_process_manager: None, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli(["plugins", "--json"]) == 0
    listing = json.loads(capsys.readouterr().out)
    by_name = {p["name"]: p for p in listing}
    assert by_name["echo"]["version"] == "0.1.0"
    assert by_name["textstats"]["workflows"] == ["textstats"]


def test_streamer_plugins_text_shows_errors(
    clean_process_manager: None, site: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _fake_distribution(
        site, "fake-broken", "0.0.1", {"broken": "fake_broken"}, {"fake_broken": "raise RuntimeError('boom')"}
    )
    assert cli(["plugins"]) == 1
    out, err = capsys.readouterr()
    assert "echo (streamer-echo 0.1.0)" in out
    assert "steps:     textstats.count, textstats.merge, textstats.split" in out
    assert "plugin 'broken' (distribution fake-broken) failed to load: RuntimeError: boom" in err


def test_streamer_plugins_reports_a_catalogue_that_cannot_be_built(
    clean_process_manager: None, capsys: pytest.CaptureFixture[str]
) -> None:
    plugins.get_plugin_manager().register(steps_plugin(lambda: [Step(name="echo", func=_noop)]), name="clash")
    assert cli(["plugins"]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert err == "error: step 'echo' is declared by both plugin 'clash' and plugin 'echo'\n"


# --------------------------------------------------------------------------------------- the guide's code


def _included_blocks(guide: str) -> list[tuple[str, str]]:
    """``(path, fenced block)`` for every ``<!-- include: path -->`` marker followed by a code block."""
    pattern = re.compile(r"<!-- include: (?P<path>\S+) -->\n```[a-z]*\n(?P<body>.*?)```\n", re.S)
    return [(m["path"], m["body"]) for m in pattern.finditer(guide)]


def test_the_guide_includes_its_examples_verbatim() -> None:
    guide = (ROOT / "docs" / "plugins.md").read_text(encoding="utf-8")
    blocks = _included_blocks(guide)
    assert len(blocks) >= 4
    for path, body in blocks:
        assert (ROOT / path).read_text(encoding="utf-8") == body, f"docs/plugins.md is out of date for {path}"
    # Every other fenced python block would be untested code: there must be none.
    python_blocks = re.findall(r"```python\n", guide)
    assert len(python_blocks) == sum(1 for p, _ in blocks if p.endswith(".py"))
