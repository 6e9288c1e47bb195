"""The plugin contract: every hook a streamer plugin may implement, and what a plugin declares.

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

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pluggy
from pydantic import BaseModel

from streamer.errors import PluginError
from streamer.limits import STEP_NAME_PATTERN, WORKFLOW_NAME_PATTERN

if TYPE_CHECKING:
    from streamer.runner import StepContext

__all__ = [
    "STEP_NAME_PATTERN",
    "WORKFLOW_NAME_PATTERN",
    "Step",
    "StepFunction",
    "Workflow",
    "hookimpl",
    "hookspec",
    "streamer_steps",
    "streamer_workflows",
]

#: The project name pluggy matches hook implementations against.
PROJECT_NAME = "streamer"

hookspec = pluggy.HookspecMarker(PROJECT_NAME)
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)

#: A step name: letters, digits, ``_``, ``-`` and ``.`` (use ``plugin.step`` to namespace), at most 80.
#: A workflow name is what a client submits (same rule as the wire protocol) and the suffix of the
#: state machine's name: letters, digits, ``_`` and ``-``, at most 80.
_STEP_NAME = re.compile(STEP_NAME_PATTERN)
_WORKFLOW_NAME = re.compile(WORKFLOW_NAME_PATTERN)

#: A step: ``func(input, context) -> output``. ``input`` is an instance of the step's ``input_model`` when
#: it has one, else the raw ``dict``; ``output`` is a ``dict`` or a pydantic model.
StepFunction = Callable[[Any, "StepContext"], Any]


def _is_model(value: Any) -> bool:
    return isinstance(value, type) and issubclass(value, BaseModel)


@dataclass(frozen=True)
class Step:
    """One unit of work a state machine Task runs through the step runner.

    ``func`` is plain Python: it gets its validated input and a :class:`~streamer.steps.StepContext`
    (progress, logger, attempt) and returns a JSON-able ``dict`` or a pydantic model. It never talks to AWS.
    To fail, it raises :class:`~streamer.errors.RetryableStepError` (transient: the Task's ``Retry``
    absorbs it) or :class:`~streamer.errors.StepFailedError` (permanent: the request ends ``FAILED`` with
    that message). Any other exception also ends the request, with a generic message.
    """

    name: str
    func: StepFunction
    #: Validates the Task's ``input`` before the call; a mismatch is a permanent failure.
    input_model: type[BaseModel] | None = None
    #: Validates what ``func`` returns; a mismatch is a permanent failure (the step is broken).
    output_model: type[BaseModel] | None = None
    description: str = ""

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not _STEP_NAME.match(self.name):
            raise PluginError(f"step name {self.name!r} must match {STEP_NAME_PATTERN}")
        if not callable(self.func):
            raise PluginError(f"step {self.name!r}: func must be callable, got {type(self.func).__name__}")
        for what in ("input_model", "output_model"):
            model = getattr(self, what)
            if model is not None and not _is_model(model):
                raise PluginError(f"step {self.name!r}: {what} must be a pydantic BaseModel subclass")


@dataclass(frozen=True)
class Workflow:
    """Something a client can submit: one state machine, named like the workflow.

    ``definition`` is the ASL file (``*.asl.json``, with ``${StepRunnerFunctionArn}`` and
    ``${NotifyFunctionArn}`` placeholders) a plugin ships with its package; leave it ``None`` when the
    definition lives in the project's ``statemachines/<name>.asl.json``.
    """

    name: str
    #: One line, shown to clients by the ``workflows`` action and by ``streamer plugins``.
    description: str
    #: Validates a submitted payload before an execution starts (the router answers VALIDATION_ERROR).
    payload_model: type[BaseModel] | None = None
    definition: Path | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not _WORKFLOW_NAME.match(self.name):
            raise PluginError(f"workflow name {self.name!r} must match {WORKFLOW_NAME_PATTERN}")
        if not isinstance(self.description, str) or "\n" in self.description.strip():
            raise PluginError(f"workflow {self.name!r}: description must be one line of text")
        if self.payload_model is not None and not _is_model(self.payload_model):
            raise PluginError(f"workflow {self.name!r}: payload_model must be a pydantic BaseModel subclass")
        if self.definition is not None and not isinstance(self.definition, Path):
            object.__setattr__(self, "definition", Path(self.definition))


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
