"""The plugin author's contract: :class:`Step`, :class:`Workflow` and the :class:`StepContext` a step gets.

Everything a plugin author touches besides the hook markers (``streamer.hookspecs``) and the two error types
(``streamer.errors``); re-exported from ``streamer``. ``docs/plugins.md`` is the guide.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from streamer.errors import PluginError
from streamer.limits import MAX_ERROR_MESSAGE_CHARS, STEP_NAME_PATTERN, WORKFLOW_NAME_PATTERN, clamp_percent
from streamer.models import RequestRef

__all__ = ["Step", "StepContext", "StepFunction", "Workflow"]

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

    ``func`` is plain Python: it gets its validated input and a :class:`StepContext`
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


def _percent(value: int | float) -> int:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"percent must be a number, got {type(value).__name__}")
    if not math.isfinite(value):
        raise ValueError(f"percent must be a finite number, got {value!r}")
    return clamp_percent(value)


class _StepLogger(logging.LoggerAdapter[logging.Logger]):
    """Adds the step's keys to every record, keeping the caller's own ``extra`` (3.11's adapter drops it)."""

    def process(self, msg: Any, kwargs: Any) -> tuple[Any, Any]:
        kwargs["extra"] = {**(self.extra or {}), **(kwargs.get("extra") or {})}
        return msg, kwargs


class StepContext:
    """What a step gets besides its input.

    ``attempt`` counts from 1 (the Task's first try); ``2`` is the first retry after a
    ``RetryableStepError`` or a Lambda service error. ``logger`` is a standard ``logging`` adapter whose
    records carry the request id and step (never the input). ``progress`` reports how far the step is.
    """

    def __init__(
        self,
        *,
        request: RequestRef,
        step: str,
        attempt: int = 1,
        report: Callable[[int, str], None] | None = None,
    ) -> None:
        self.request = request
        self.step = step
        self.attempt = attempt
        self._report = report
        self.logger: logging.LoggerAdapter[logging.Logger] = _StepLogger(
            logging.getLogger(f"streamer.steps.{step}"),
            {"request_id": request.request_id, "workflow": request.workflow, "step": step},
        )

    @property
    def request_id(self) -> str:
        return self.request.request_id

    @property
    def user_id(self) -> str:
        return self.request.user_id

    @property
    def workflow(self) -> str:
        return self.request.workflow

    def progress(self, percent: int | float, message: str = "") -> None:
        """Report progress: ``percent`` is rounded and clamped to 0-100, ``message`` cut to 1000 chars.

        Cheap to call often: events are throttled (one per ``STREAMER_PROGRESS_INTERVAL_MS``, latest value
        wins, the last one is always delivered).
        """
        pct = _percent(percent)
        text = str(message)[:MAX_ERROR_MESSAGE_CHARS]
        if self._report is not None:
            self._report(pct, text)

    def __repr__(self) -> str:
        return f"StepContext(step={self.step!r}, request_id={self.request_id!r}, attempt={self.attempt})"


