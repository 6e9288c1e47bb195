"""Watching executions: the data layer the ``streamer executions`` commands and the web console share.

Plain logic (no argparse, no aiohttp). Both front ends call these functions, so they show the same thing
from the same real sources: Step Functions (DescribeExecution, GetExecutionHistory, ListStateMachines,
DescribeStateMachine(ForExecution)) and the requests, events and connections tables — never a parallel
bookkeeping path. Every result is a pydantic model (:mod:`streamer.observe.models`); the console returns
``model.model_dump(mode="json")``.

* :class:`Sources` — one deployment: ``Sources.local()`` (a running ``streamer local``, found by its state
  file) or ``Sources.stack(profile=, region=, stack=)`` (a CloudFormation stack's outputs).
* :func:`list_executions` — newest first, paged on the server (``ExecutionPage.next_cursor``).
* :func:`show_execution` — the request, its execution, the definition, the state table computed from the
  history (:func:`streamer.observe.states.state_runs`), the stored events with ``seq``.
* :func:`execution_history` — the raw history events.
* :func:`cancel` / :func:`rerun` — through :class:`~streamer.service.RequestService` (the protocol's path).
* :func:`connections`, :func:`overview`.

An id is a request id, an execution ARN or an :attr:`ExecutionSummary.id`. Errors: :class:`NotFoundError`,
:class:`AmbiguousError` (a request id several users have used: pass ``user``), :class:`CursorError`,
:class:`SourceError` and :class:`NoLocalStackError`, all :class:`~streamer.errors.StreamerError`.
"""

from __future__ import annotations

from streamer.observe import api, models
from streamer.observe.api import *  # noqa: F403 (api.__all__: the operations, their errors, the requests table's GSIs)
from streamer.observe.localstate import LocalState, NoLocalStackError, default_state_file
from streamer.observe.models import *  # noqa: F403 (models.__all__: every result)
from streamer.observe.sources import SourceError, Sources
from streamer.observe.states import state_runs

__all__ = [
    *api.__all__,
    *models.__all__,
    "LocalState",
    "NoLocalStackError",
    "SourceError",
    "Sources",
    "default_state_file",
    "state_runs",
]
