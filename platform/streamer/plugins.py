"""The plugin manager and the catalogue of steps and workflows it yields.

The manager is created lazily on first use and cached for the process (a Lambda container loads its
plugins once, at its first invocation, never at import time). Plugins are found through the
``streamer.plugins`` entry-point group; ``STREAMER_DISABLE_PLUGIN_AUTOLOAD=1`` turns that off so tests and
tools can run with an explicit set.

A plugin that cannot be loaded (import error, unknown hook argument, misspelt hook name) does not stop the
others: it is left out and reported by :func:`plugin_errors` (and by ``streamer plugins``). A catalogue
that cannot be built — the same step or workflow name declared twice, a hook returning the wrong thing —
raises :class:`~streamer.errors.PluginError` naming the plugins involved.

Every function takes an optional ``pm``: tests pass a fresh ``pluggy.PluginManager`` (see
:func:`create_plugin_manager`) with throwaway plugin classes registered on it.
"""

from __future__ import annotations

import importlib.metadata
import os
import threading
import weakref
from collections.abc import Iterable
from typing import Any

import pluggy

from streamer import hookspecs
from streamer.config import Env
from streamer.errors import PluginError, UnknownStepError, UnknownWorkflowError
from streamer.limits import ENTRYPOINT_GROUP
from streamer.step import Step, Workflow

__all__ = [
    "DISABLE_AUTOLOAD_ENV",
    "ENTRYPOINT_GROUP",
    "PluginError",
    "Registry",
    "Step",
    "UnknownStepError",
    "UnknownWorkflowError",
    "Workflow",
    "create_plugin_manager",
    "get_plugin_manager",
    "get_registry",
    "get_step",
    "get_workflow",
    "list_plugins",
    "load_plugins",
    "plugin_errors",
    "reset_plugin_manager",
    "steps",
    "workflows",
]

DISABLE_AUTOLOAD_ENV = Env.DISABLE_PLUGIN_AUTOLOAD


# Errors met while loading a manager's plugins, kept beside the manager (a plain pluggy.PluginManager).
_ERRORS: weakref.WeakKeyDictionary[pluggy.PluginManager, list[PluginError]] = weakref.WeakKeyDictionary()

_lock = threading.Lock()
_manager: pluggy.PluginManager | None = None
_registry: Registry | None = None


def _autoload_disabled() -> bool:
    return os.environ.get(DISABLE_AUTOLOAD_ENV, "").strip().lower() in ("1", "true", "yes", "on")


def create_plugin_manager(*, autoload: bool | None = None) -> pluggy.PluginManager:
    """A new manager with the streamer hookspecs.

    With ``autoload`` (default: unless ``STREAMER_DISABLE_PLUGIN_AUTOLOAD`` is set) the installed
    plugins are loaded through :func:`load_plugins`; their errors are available from :func:`plugin_errors`.
    """
    pm = pluggy.PluginManager(hookspecs.PROJECT_NAME)
    pm.add_hookspecs(hookspecs)
    _ERRORS[pm] = []
    if autoload is None:
        autoload = not _autoload_disabled()
    if autoload:
        load_plugins(pm)
    return pm


def _entry_points() -> list[tuple[str, str]]:
    """``(entry point name, distribution name)`` of every installed ``streamer.plugins`` entry point."""
    found: list[tuple[str, str]] = []
    for dist in importlib.metadata.distributions():
        for ep in dist.entry_points:
            if ep.group == ENTRYPOINT_GROUP:
                found.append((ep.name, dist.name))
    return found


def load_plugins(pm: pluggy.PluginManager) -> list[PluginError]:
    """Load every plugin of the ``streamer.plugins`` entry-point group into ``pm``, one at a time.

    Each entry point goes through ``pm.load_setuptools_entrypoints(group, name)`` so one broken plugin
    cannot stop the others. Then ``pm.check_pending()`` finds hook implementations that match no hook
    (a misspelt ``streamer_*`` name); such a plugin is unregistered. Returns the errors of this call,
    which are also added to :func:`plugin_errors`.
    """
    errors: list[PluginError] = []
    for name, dist in _entry_points():
        if pm.has_plugin(name) or pm.is_blocked(name):
            continue
        try:
            pm.load_setuptools_entrypoints(ENTRYPOINT_GROUP, name=name)
        except Exception as exc:
            pm.set_blocked(name)  # a half-registered plugin is worse than none
            errors.append(
                PluginError(f"plugin {name!r} (distribution {dist}) failed to load: {type(exc).__name__}: {exc}")
            )
    errors.extend(_drop_pending(pm))
    _ERRORS.setdefault(pm, []).extend(errors)
    return errors


def _drop_pending(pm: pluggy.PluginManager) -> list[PluginError]:
    errors: list[PluginError] = []
    while True:
        try:
            pm.check_pending()
        except pluggy.PluginValidationError as exc:
            name = pm.get_name(exc.plugin)
            errors.append(PluginError(f"plugin {name or exc.plugin!r} is invalid: {exc}"))
            if name is not None:
                pm.set_blocked(name)  # unregisters it, and a later load_plugins() will not bring it back
            else:
                pm.unregister(exc.plugin)
            continue
        return errors


def plugin_errors(pm: pluggy.PluginManager | None = None) -> list[PluginError]:
    """What went wrong loading plugins into ``pm`` (default: the process manager)."""
    return list(_ERRORS.get(pm if pm is not None else get_plugin_manager(), []))


def get_plugin_manager() -> pluggy.PluginManager:
    """The process-wide manager, created (and the installed plugins loaded) on first call."""
    global _manager
    if _manager is None:
        with _lock:
            if _manager is None:
                _manager = create_plugin_manager()
    return _manager


def get_registry(pm: pluggy.PluginManager | None = None) -> Registry:
    """The catalogue of ``pm``; for the process manager it is built once and cached."""
    global _registry
    if pm is not None:
        return Registry(pm)
    if _registry is None:
        manager = get_plugin_manager()
        with _lock:
            if _registry is None:
                _registry = Registry(manager)
    return _registry


def reset_plugin_manager() -> None:
    """Forget the process manager and catalogue (tests; the next call loads the plugins again)."""
    global _manager, _registry
    with _lock:
        _manager = None
        _registry = None


class Registry:
    """Steps and workflows of the plugins registered on one manager, checked for clashes.

    The hooks are called once, on first use; later plugin (un)registrations are not seen — build a new
    ``Registry`` for that.
    """

    def __init__(self, pm: pluggy.PluginManager) -> None:
        self.pm = pm
        self._steps: dict[str, tuple[Step, str]] | None = None
        self._workflows: dict[str, tuple[Workflow, str]] | None = None
        self._lock = threading.Lock()

    def _collect(self, hook_name: str, kind: type[Any]) -> dict[str, tuple[Any, str]]:
        """``{item name: (item, plugin name)}`` from each implementation of ``hook_name``."""
        caller = getattr(self.pm.hook, hook_name)
        found: dict[str, tuple[Any, str]] = {}
        # Called implementation by implementation (latest registered first, as pluggy would) to know which
        # plugin declared what.
        for impl in reversed(caller.get_hookimpls()):
            if impl.hookwrapper or impl.wrapper:
                continue
            plugin = impl.plugin_name
            try:
                result = impl.function()
            except Exception as exc:
                raise PluginError(f"plugin {plugin!r}: {hook_name}() raised {type(exc).__name__}: {exc}") from exc
            if result is None:
                continue
            if isinstance(result, kind) or not isinstance(result, Iterable):
                raise PluginError(f"plugin {plugin!r}: {hook_name}() must return a list of {kind.__name__}")
            for item in result:
                if not isinstance(item, kind):
                    raise PluginError(
                        f"plugin {plugin!r}: {hook_name}() returned {type(item).__name__}, expected {kind.__name__}"
                    )
                if item.name in found:
                    other = found[item.name][1]
                    what = "step" if kind is Step else "workflow"
                    raise PluginError(
                        f"{what} {item.name!r} is declared by both plugin {other!r} and plugin {plugin!r}"
                    )
                found[item.name] = (item, plugin)
        return found

    def _step_table(self) -> dict[str, tuple[Step, str]]:
        if self._steps is None:
            with self._lock:
                if self._steps is None:
                    self._steps = self._collect("streamer_steps", Step)
        return self._steps

    def _workflow_table(self) -> dict[str, tuple[Workflow, str]]:
        if self._workflows is None:
            with self._lock:
                if self._workflows is None:
                    self._workflows = self._collect("streamer_workflows", Workflow)
        return self._workflows

    def steps(self) -> dict[str, Step]:
        """Every step by name (sorted)."""
        return {name: step for name, (step, _) in sorted(self._step_table().items())}

    def workflows(self) -> dict[str, Workflow]:
        """Every workflow by name (sorted)."""
        return {name: wf for name, (wf, _) in sorted(self._workflow_table().items())}

    def get_step(self, name: str) -> Step:
        try:
            return self._step_table()[name][0]
        except KeyError:
            raise UnknownStepError(name) from None

    def get_workflow(self, name: str) -> Workflow:
        try:
            return self._workflow_table()[name][0]
        except KeyError:
            raise UnknownWorkflowError(name) from None

    def list_plugins(self) -> list[dict[str, Any]]:
        """One dict per registered plugin, sorted by name, for ``streamer plugins``::

            {"name": "echo", "distribution": "streamer-echo", "version": "0.1.0",
             "steps": ["echo"], "workflows": ["echo"], "hooks": ["streamer_steps", "streamer_workflows"]}

        ``distribution``/``version`` are ``None`` for a plugin registered directly rather than through an
        entry point.
        """
        dists: dict[int, tuple[str, str]] = {}
        for plugin, dist in self.pm.list_plugin_distinfo():
            dists[id(plugin)] = (dist.project_name, dist.version)
        steps = self._step_table()
        workflows = self._workflow_table()
        out: list[dict[str, Any]] = []
        for name, plugin in self.pm.list_name_plugin():
            if plugin is None:  # blocked
                continue
            distribution, version = dists.get(id(plugin), (None, None))
            hooks = sorted(caller.name for caller in self.pm.get_hookcallers(plugin) or [])
            out.append(
                {
                    "name": name,
                    "distribution": distribution,
                    "version": version,
                    "steps": sorted(s for s, (_, p) in steps.items() if p == name),
                    "workflows": sorted(w for w, (_, p) in workflows.items() if p == name),
                    "hooks": hooks,
                }
            )
        return sorted(out, key=lambda d: d["name"])


def steps(pm: pluggy.PluginManager | None = None) -> dict[str, Step]:
    """Every installed step by name."""
    return get_registry(pm).steps()


def workflows(pm: pluggy.PluginManager | None = None) -> dict[str, Workflow]:
    """Every installed workflow by name."""
    return get_registry(pm).workflows()


def get_step(name: str, pm: pluggy.PluginManager | None = None) -> Step:
    """The step ``name``; :class:`UnknownStepError` (a ``PluginError`` and ``LookupError``) if none."""
    return get_registry(pm).get_step(name)


def get_workflow(name: str, pm: pluggy.PluginManager | None = None) -> Workflow:
    """The workflow ``name``; :class:`UnknownWorkflowError` (a ``PluginError`` and ``LookupError``)."""
    return get_registry(pm).get_workflow(name)


def list_plugins(pm: pluggy.PluginManager | None = None) -> list[dict[str, Any]]:
    """See :meth:`Registry.list_plugins`."""
    return get_registry(pm).list_plugins()
