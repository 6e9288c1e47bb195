"""The package's structure, as rules the next change must keep (docs/architecture.md draws it).

Walks every module of ``platform/streamer`` with ``ast`` — module-level, function-level and ``TYPE_CHECKING``
imports alike — and checks:

* no import circle between the package's modules;
* nothing under ``aws/``, ``handlers/``, ``local/`` (or any library module) imports ``streamer.cli``;
* only ``aws/`` creates boto3 clients for the data path (``local/``, ``deploy/``, ``cli/`` and the testing helpers
  for their own jobs);
* argparse only in ``cli/`` (and the child-process entry points of ``local/``, which are their own programs);
* nothing outside ``service.py`` reaches through the service into its collaborators;
* every exception class the package defines derives from ``StreamerError`` and is drawn in ``errors.py``.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import pkgutil
from collections.abc import Iterator
from pathlib import Path

import pytest

import streamer
from streamer.errors import StreamerError

ROOT = Path(streamer.__file__).parent


def _module_name(path: Path) -> str:
    rel = path.relative_to(ROOT.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, ast.Module]:
    return {_module_name(p): ast.parse(p.read_text(), str(p)) for p in sorted(ROOT.rglob("*.py"))}


MODULES = _modules()


def _resolve(module: str, node: ast.ImportFrom) -> str:
    if node.level == 0:
        return node.module or ""
    base = module.split(".")
    is_pkg = (ROOT.parent / Path(*base) / "__init__.py").exists()
    base = base if is_pkg else base[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join([*base, node.module] if node.module else base)


def imports_of(module: str) -> Iterator[tuple[str, int]]:
    """Every ``streamer`` module this module imports (``from streamer import x`` counts as ``streamer.x`` when x is
    a module), with the line."""
    for node in ast.walk(MODULES[module]):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("streamer"):
                    yield alias.name, node.lineno
        elif isinstance(node, ast.ImportFrom):
            target = _resolve(module, node)
            if not target.startswith("streamer"):
                continue
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                yield (sub if sub in MODULES else target), node.lineno


def graph() -> dict[str, set[str]]:
    return {m: {t for t, _ in imports_of(m) if t in MODULES and t != m} for m in MODULES}


def test_no_import_circle() -> None:
    g = graph()
    # The package's own __init__ re-exports the plugin author's names; importing `streamer.x` runs it, which is
    # not an edge of ours to worry about: leave edges *into* `streamer` out.
    g = {m: {t for t in ts if t != "streamer"} for m, ts in g.items()}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []
    counter = [0]

    def strongconnect(v: str) -> None:  # Tarjan
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in g[v]:
            if w not in index:
                strongconnect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                cycles.append(sorted(comp))

    for v in sorted(g):
        if v not in index:
            strongconnect(v)
    assert cycles == [], f"import circles: {cycles}"


def test_nothing_but_the_cli_imports_the_cli() -> None:
    offenders = [
        f"{m}:{line} imports {t}"
        for m in MODULES
        if not m.startswith("streamer.cli")
        for t, line in imports_of(m)
        if t == "streamer.cli" or t.startswith("streamer.cli.")
    ]
    assert offenders == []


#: Modules allowed to create boto3 clients, and why.
CLIENT_MAKERS = ("streamer.aws", "streamer.local", "streamer.deploy", "streamer.cli")
CLIENT_MAKERS_EXTRA = {
    "streamer.testing": "runs a plugin's workflows on moto for its author's tests",
    "streamer.pytest_plugin": "the fixtures of streamer.testing",
}


def _creates_clients(tree: ast.Module) -> list[int]:
    lines = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            if node.func.attr in ("client", "resource") and ast.unparse(node.func.value) in ("boto3", "session"):
                lines.append(node.lineno)
            if node.func.attr == "Session" and ast.unparse(node.func.value) == "boto3":
                lines.append(node.lineno)
    return lines


def test_only_the_adapters_create_boto3_clients() -> None:
    offenders = [
        f"{m}:{line}"
        for m, tree in MODULES.items()
        if not m.startswith(CLIENT_MAKERS) and m not in CLIENT_MAKERS_EXTRA
        for line in _creates_clients(tree)
    ]
    assert offenders == [], "create boto3 clients in streamer.aws (or pass them in)"


#: Child-process entry points of the local stack: each is its own program with its own command line.
ARGPARSE_EXTRA = {"streamer.local.moto_server", "streamer.local.lambda_endpoint"}


def test_argparse_only_in_the_cli() -> None:
    offenders = [
        f"{m}:{line}"
        for m in MODULES
        if not m.startswith("streamer.cli") and m not in ARGPARSE_EXTRA
        for node in ast.walk(MODULES[m])
        if isinstance(node, ast.Import | ast.ImportFrom)
        for line in [node.lineno]
        if any(a.name == "argparse" for a in node.names) or getattr(node, "module", None) == "argparse"
    ]
    assert offenders == []


COLLABORATORS = {"connections", "requests", "events", "manager", "executions"}


def test_nothing_reaches_through_the_service() -> None:
    """``service.requests.get(...)`` outside ``service.py`` means logic that belongs in the service."""
    offenders = []
    for m, tree in MODULES.items():
        if m == "streamer.service":
            continue
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Attribute)
                and node.attr in COLLABORATORS
                and isinstance(node.value, ast.Name | ast.Attribute)
                and ast.unparse(node.value).split(".")[-1] in ("service", "svc", "_service")
            ):
                offenders.append(f"{m}:{node.lineno} {ast.unparse(node)}")
    assert offenders == []


def _all_exception_classes() -> list[type[BaseException]]:
    found: dict[str, type[BaseException]] = {}
    for info in pkgutil.walk_packages(streamer.__path__, "streamer."):
        if info.name in ("streamer.cli.__main__",):
            continue
        try:
            mod = importlib.import_module(info.name)
        except ImportError as exc:  # an optional extra missing would be a packaging bug: say which
            pytest.fail(f"{info.name} does not import: {exc}")
        for _, obj in inspect.getmembers(mod, inspect.isclass):
            if issubclass(obj, BaseException) and obj.__module__.startswith("streamer"):
                found[f"{obj.__module__}.{obj.__qualname__}"] = obj
    return list(found.values())


def test_every_exception_derives_from_the_root_and_is_drawn_in_the_tree() -> None:
    import streamer.errors

    drawing = streamer.errors.__doc__ or ""
    classes = _all_exception_classes()
    assert classes, "no exception classes found"
    outside = sorted(f"{c.__module__}.{c.__qualname__}" for c in classes if not issubclass(c, StreamerError))
    assert outside == [], "every exception derives from streamer.errors.StreamerError"
    undrawn = sorted(c.__qualname__ for c in classes if c.__qualname__ not in drawing)
    assert undrawn == [], "draw them in the tree of streamer/errors.py's docstring"


def test_every_environment_variable_is_named_once_and_documented() -> None:
    """``streamer.config.Env`` names each ``STREAMER_*`` variable; no other module spells one out, and
    ``docs/configuration.md`` documents exactly that set."""
    import re

    from streamer.config import Env

    literal = re.compile(r"""(?<![\w.])(["'])STREAMER_[A-Z0-9_]+\1""")
    spelled = [
        f"{m}:{node.lineno} {node.value}"
        for m, tree in MODULES.items()
        if m != "streamer.config"
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and literal.fullmatch(repr(node.value))
    ]
    assert spelled == [], "use streamer.config.Env"
    docs = (ROOT.parents[1] / "docs" / "configuration.md").read_text()
    documented = set(re.findall(r"`(STREAMER_[A-Z0-9_]+)`", docs))
    assert documented == {e.value for e in Env}
