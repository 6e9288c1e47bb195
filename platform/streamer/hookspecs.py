"""The hook specifications: every hook a streamer plugin may implement, and the markers.

The shape of pytest's ``hookspec.py``.

What a hook returns (:class:`~streamer.step.Step`, :class:`~streamer.step.Workflow`) lives in ``streamer.step``.

A plugin is a module (usually its own distribution, registered under the ``streamer.plugins`` entry-point
group) with functions marked ``@streamer.hookimpl`` whose names are hooks listed here::

    import streamer

    @streamer.hookimpl
    def streamer_steps() -> list[streamer.Step]:
        return [streamer.Step(name="greet", func=greet, input_model=GreetInput)]

    @streamer.hookimpl
    def streamer_workflows() -> list[streamer.Workflow]:
        return [streamer.Workflow(name="greet", description="Says hello.", payload_model=GreetInput)]

An implementation may accept only the arguments it uses (pluggy checks the names against the spec), and a
misspelt hook name (``streamer_step``) is reported as a plugin error. ``docs/plugins.md`` is the guide.
"""

from __future__ import annotations

import pluggy

from streamer.step import Step, Workflow

__all__ = ["PROJECT_NAME", "hookimpl", "hookspec", "streamer_steps", "streamer_workflows"]

#: The project name pluggy matches hook implementations against.
PROJECT_NAME = "streamer"

hookspec = pluggy.HookspecMarker(PROJECT_NAME)
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)

@hookspec
def streamer_steps() -> list[Step]:  # type: ignore[empty-body]
    """Declare the steps this plugin provides.

    Called once per process when the step catalogue is first needed (by the step runner, ``streamer
    plugins`` and ``streamer statemachines validate``); the result is cached. Return a list of
    :class:`Step`. Step names are global: two plugins declaring the same name is a :class:`PluginError`
    naming both, so prefix a plugin's steps with its name (``textstats.split``).
    """


@hookspec
def streamer_workflows() -> list[Workflow]:  # type: ignore[empty-body]
    """Declare the workflows (state machines) this plugin provides.

    Called once per process when the workflow catalogue is first needed (the router validates a submitted
    payload against ``payload_model``; the ``workflows`` action lists names and descriptions; ``streamer
    deploy`` finds a plugin's ASL through ``definition``). Return a list of :class:`Workflow`. Workflow
    names are global; a duplicate is a :class:`PluginError` naming both plugins.
    """
