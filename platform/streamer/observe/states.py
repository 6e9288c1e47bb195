"""The state table of an execution, computed from its Step Functions execution history (a pure function).

Input: the events of ``GetExecutionHistory`` (boto3 dicts, or the JSON-safe ones of
:func:`streamer.observe.execution_history`) and the definition as deployed. Output: a
:class:`~streamer.observe.models.StateRun` per state run, in execution order, then the states never reached.

How events are attributed (https://docs.aws.amazon.com/step-functions/latest/apireference/API_HistoryEvent.html):

* an event names the one before it in its thread of execution (``previousEventId``), so following that
  link tells which state run a Task's or Wait's events belong to, even while Map iterations and Parallel
  branches interleave in the history. The link is not trusted across iterations and containers, because an
  engine may reuse a thread: moto 5's Map runs a few workers, and the ``MapIterationStarted`` of each later
  iteration names the *previous iteration's* last event on that worker (not the Map's ``MapStateStarted``),
  its ``MapStateExited``/``MapStateFailed`` name an event inside an iteration, a ``ParallelStateExited`` the
  last event of a branch. So:
* ``MapIterationStarted`` opens iteration ``(name, index)`` (``mapIterationStartedEventDetails``) of the
  Map run called ``name`` on the thread of the event it names *outside any iteration of that same Map*
  (ASL state names are unique, so cutting the thread where it entered an iteration of ``name`` finds the
  Map's own thread); the events that follow it on its thread are the iteration's until its
  ``MapIteration{Succeeded,Failed,Aborted}``, found the same way by name and index;
* a ``*StateExited`` closes the open run of the state it names (``stateExitedEventDetails.name``) on the
  event's thread or the nearest enclosing one, and the thread continues from that state's; a
  ``MapStateFailed``/``ParallelStateFailed`` belongs to the innermost enclosing Map/Parallel run;
* a Parallel state's branches have no events of their own: a state belongs to branch *i* when the
  definition declares it there (ASL state names are unique in the whole state machine:
  https://states-language.net/spec.html#state-names);
* a Task's attempts are its ``*Scheduled`` events; a failure followed by another attempt is a retry, whose
  delay is the time from the failure to the next attempt (the Retry interval and backoff);
* a state exited after its last attempt failed was **caught** (Catch); a state still open when the
  execution (or its iteration) failed **failed**, when it was stopped (StopExecution, the protocol's
  ``cancel``) it is **cancelled**, and while the execution runs it is **running**.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from streamer.observe.models import BranchRun, MapIteration, MapSummary, RetryAttempt, StateRun, StateStatus

__all__ = ["as_datetime", "definition_states", "duration_ms", "parse_json", "state_runs"]

#: A thread of execution: () for the top level, then one (map state name, iteration index) per nested Map.
Path = tuple[tuple[str, int], ...]

_SCHEDULED = frozenset({"LambdaFunctionScheduled", "TaskScheduled", "ActivityScheduled"})
_ATTEMPT_SUCCEEDED = frozenset({"LambdaFunctionSucceeded", "TaskSucceeded", "ActivitySucceeded"})
_ATTEMPT_FAILED = frozenset(
    {
        "LambdaFunctionFailed",
        "LambdaFunctionTimedOut",
        "LambdaFunctionScheduleFailed",
        "LambdaFunctionStartFailed",
        "TaskFailed",
        "TaskTimedOut",
        "TaskStartFailed",
        "TaskSubmitFailed",
        "ActivityFailed",
        "ActivityTimedOut",
        "ActivityScheduleFailed",
    }
)
_ITERATION_END = {
    "MapIterationSucceeded": "succeeded",
    "MapIterationFailed": "failed",
    "MapIterationAborted": "cancelled",
}
_STATE_FAILED = frozenset({"MapStateFailed", "ParallelStateFailed"})
_EXECUTION_END = {
    "ExecutionSucceeded": "succeeded",
    "ExecutionFailed": "failed",
    "ExecutionAborted": "cancelled",
    "ExecutionTimedOut": "failed",
}


def as_datetime(value: Any) -> datetime | None:
    """A history/Describe timestamp (a datetime from boto3, an ISO string from JSON) as an aware datetime."""
    if value is None:
        return None
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    if isinstance(value, int | float):
        return datetime.fromtimestamp(value, UTC)
    parsed = datetime.fromisoformat(str(value))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def duration_ms(start: datetime | None, stop: datetime | None) -> int | None:
    if start is None or stop is None:
        return None
    return max(0, round((stop - start).total_seconds() * 1000))


def parse_json(text: Any) -> Any:
    """A JSON string as its value; anything else (or JSON that does not parse) unchanged."""
    if not isinstance(text, str):
        return text
    try:
        return json.loads(text)
    except ValueError:
        return text


def definition_states(definition: Mapping[str, Any] | None) -> dict[str, dict[str, Any]]:
    """Every state of a definition, nested ones included: ``{name: state}``."""
    out: dict[str, dict[str, Any]] = {}

    def walk(states: Mapping[str, Any]) -> None:
        for name, state in states.items():
            if not isinstance(state, dict):
                continue
            out[name] = state
            for key in ("ItemProcessor", "Iterator"):
                inner = state.get(key)
                if isinstance(inner, dict):
                    walk(inner.get("States") or {})
            for branch in state.get("Branches") or []:
                if isinstance(branch, dict):
                    walk(branch.get("States") or {})

    if definition:
        walk(definition.get("States") or {})
    return out


def _details(event: Mapping[str, Any]) -> dict[str, Any]:
    for key, value in event.items():
        if key.endswith("EventDetails") and isinstance(value, dict):
            return value
    return {}


@dataclass
class _Run:
    entered: Mapping[str, Any]
    path: Path
    name: str
    type: str
    started_at: datetime | None
    input: Any
    attempts: int = 0
    attempt_started: datetime | None = None
    #: The last attempt's failure that was not followed by another attempt (yet).
    pending_failure: tuple[str | None, str | None, datetime | None] | None = None
    retries: list[RetryAttempt] = field(default_factory=list)
    exited: Mapping[str, Any] | None = None
    own_failure: tuple[str | None, str | None] | None = None
    map_length: int | None = None


def _outside(path: Path, map_name: str) -> Path:
    """``path`` cut where it entered an iteration of the Map ``map_name`` (unchanged when it never did)."""
    for depth, (name, _) in enumerate(path):
        if name == map_name:
            return path[:depth]
    return path


def _parallel_of(declared: Mapping[str, Mapping[str, Any]]) -> dict[str, str]:
    """Each state declared directly or nested in a Parallel's branch → that (innermost) Parallel's name."""
    out: dict[str, str] = {}
    for name, state in declared.items():
        if state.get("Type") != "Parallel":
            continue
        for branch in state.get("Branches") or []:
            for inner in (branch or {}).get("States") or {}:
                out[inner] = name  # direct members only: deeper ones belong to their own container
    return out


def _type_of(event_type: str, suffix: str) -> str:
    return event_type[: -len(suffix)] if event_type.endswith(suffix) else event_type


def state_runs(
    definition: Mapping[str, Any] | None,
    events: Sequence[Mapping[str, Any]],
    *,
    expand: bool = False,
) -> list[StateRun]:
    """The top-level state runs of one execution, in execution order, then the top-level states not reached.

    Map states carry ``iterations`` (counts; with ``expand`` each iteration's own state runs) and Parallel
    states ``branches``. ``events`` must be the whole history in ``id`` order (``reverseOrder=False``).
    """
    declared = definition_states(definition)
    parallel_of = _parallel_of(declared)
    path_out: dict[int, Path] = {}  # the thread an event's successors continue on
    owner_out: dict[int, _Run | None] = {}  # the state run an event's successors belong to
    map_owner: dict[Path, _Run | None] = {}  # an iteration's path → its Map run
    open_runs: dict[tuple[Path, str], _Run] = {}  # the latest run of each state on each thread
    runs: list[_Run] = []
    iteration_status: dict[Path, str] = {}
    iteration_ended: dict[Path, datetime | None] = {}
    iteration_started: dict[Path, int] = {}
    execution_end: tuple[str, Mapping[str, Any], datetime | None] | None = None

    def named(path: Path, name: str) -> _Run | None:
        """The latest run of state ``name`` on ``path`` or the nearest thread enclosing it."""
        for depth in range(len(path), -1, -1):
            run = open_runs.get((path[:depth], name))
            if run is not None:
                return run
        return None

    def container(owner: _Run | None, path: Path, kind: str) -> _Run | None:
        """The innermost ``kind`` (Map or Parallel) run enclosing ``owner`` on ``path``."""
        run = owner
        while run is not None and run.type != kind:
            if run.name in parallel_of:  # a branch's state: step out to its Parallel on the same thread
                run = named(run.path, parallel_of[run.name])
            elif run.path:  # an iteration's state: step out to its Map
                run = map_owner.get(run.path)
            else:
                run = None
        if run is None and kind == "Map" and path:
            run = map_owner.get(path)
        return run

    for event in events:
        eid = int(event["id"])
        etype = str(event.get("type", ""))
        prev = int(event.get("previousEventId") or 0)
        path = path_out.get(prev, ())
        owner = owner_out.get(prev)
        details = _details(event)
        when = as_datetime(event.get("timestamp"))

        if etype.endswith("StateEntered"):
            run = _Run(
                entered=event,
                path=path,
                name=str(details.get("name", "")),
                type=_type_of(etype, "StateEntered"),
                started_at=when,
                input=parse_json(details.get("input")),
            )
            runs.append(run)
            open_runs[(path, run.name)] = run
            owner = run
        elif etype.endswith("StateExited"):
            exited = named(path, str(details.get("name", ""))) if details.get("name") else owner
            if exited is not None:
                exited.exited = event
                owner, path = exited, exited.path
        elif etype in _SCHEDULED and owner is not None:
            if owner.pending_failure is not None:  # the failed attempt is retried: a retry
                error, cause, failed_at = owner.pending_failure
                owner.retries.append(
                    RetryAttempt(
                        attempt=owner.attempts,
                        error=error,
                        cause=cause,
                        started_at=owner.attempt_started,
                        failed_at=failed_at,
                        delay_ms=duration_ms(failed_at, when),
                    )
                )
                owner.pending_failure = None
            owner.attempts += 1
            owner.attempt_started = when
        elif etype in _ATTEMPT_FAILED and owner is not None:
            owner.pending_failure = (details.get("error"), details.get("cause"), when)
            if owner.attempts == 0:  # a failure to schedule is an attempt too
                owner.attempts = 1
                owner.attempt_started = when
        elif etype in _ATTEMPT_SUCCEEDED and owner is not None:
            owner.pending_failure = None
        elif etype == "MapStateStarted" and owner is not None:
            owner.map_length = int(details.get("length", 0))
        elif etype == "MapIterationStarted":
            name = str(details.get("name", ""))
            parent = _outside(path, name)
            path = (*parent, (name, int(details.get("index", 0))))
            map_owner[path] = named(parent, name)
            iteration_started[path] = eid
            owner = None
        elif etype in _ITERATION_END:
            name = str(details.get("name", ""))
            iter_path = (*_outside(path, name), (name, int(details.get("index", 0))))
            if iter_path not in iteration_started:  # no index in the details: the event's own thread
                iter_path = path
            iteration_status[iter_path] = _ITERATION_END[etype]
            iteration_ended[iter_path] = when
            path = iter_path[:-1]
            owner = map_owner.get(iter_path)
        elif etype in _STATE_FAILED:
            failed = container(owner, path, "Map" if etype == "MapStateFailed" else "Parallel")
            if failed is not None:
                failed.own_failure = (details.get("error"), details.get("cause"))
                owner, path = failed, failed.path
        elif etype in _EXECUTION_END:
            execution_end = (_EXECUTION_END[etype], details, when)
            path, owner = (), None
        path_out[eid] = path
        owner_out[eid] = owner

    ctx = _Context(declared, iteration_status, iteration_ended, execution_end, {}, expand)
    return _assemble(runs, definition, ctx)


@dataclass
class _Context:
    declared: Mapping[str, Mapping[str, Any]]
    iteration_status: dict[Path, str]
    iteration_ended: dict[Path, datetime | None]
    execution_end: tuple[str, Mapping[str, Any], datetime | None] | None
    children: dict[int, list[_Run]]
    expand: bool

    def ending(self, path: Path) -> tuple[str | None, datetime | None]:
        """How the thread ``path`` ended: its innermost iteration that did not succeed, else the execution."""
        for depth in range(len(path), 0, -1):
            status = self.iteration_status.get(path[:depth])
            if status is not None and status != "succeeded":
                return status, self.iteration_ended.get(path[:depth])
        if self.execution_end is None:
            return None, None
        if path and self.execution_end[0] == "failed":
            # An iteration still open when the execution failed was stopped by that failure (another
            # iteration's, or the Map's own), not failed itself.
            return "cancelled", self.execution_end[2]
        return self.execution_end[0], self.execution_end[2]


def _to_model(run: _Run, ctx: _Context) -> StateRun:
    status: StateStatus
    error: str | None = None
    cause: str | None = None
    stopped: datetime | None = None
    output: Any = None
    if run.exited is not None:
        stopped = as_datetime(run.exited.get("timestamp"))
        output = parse_json(_details(run.exited).get("output"))
        if run.pending_failure is not None:
            status, (error, cause, _) = "caught", run.pending_failure
        elif run.own_failure is not None:
            status, (error, cause) = "caught", run.own_failure
        else:
            status = "succeeded"
    else:
        ending, ended_at = ctx.ending(run.path)
        if ending is None:
            status = "running"
        elif ending == "cancelled":
            status = "cancelled"
        elif run.type == "Fail":  # a Fail state fails its thread, even when a Catch around it recovered
            status = "failed"
        elif ending == "succeeded":  # an open state in a succeeded execution: a Succeed without exit
            status = "succeeded"
        else:
            status = "failed"
        if status == "failed":
            if run.pending_failure is not None:
                error, cause, _ = run.pending_failure
            elif run.own_failure is not None:
                error, cause = run.own_failure
            elif ctx.execution_end is not None and not run.path:
                error, cause = ctx.execution_end[1].get("error"), ctx.execution_end[1].get("cause")
            if run.type == "Fail" and error is None:
                state = ctx.declared.get(run.name, {})
                error, cause = state.get("Error"), state.get("Cause")
        if status != "running":
            stopped = ended_at
    model = StateRun(
        name=run.name,
        type=run.type,
        status=status,
        attempts=max(run.attempts, 1),
        retries=run.retries,
        started_at=run.started_at,
        stopped_at=stopped,
        duration_ms=duration_ms(run.started_at, stopped),
        input=run.input,
        output=output,
        error=error,
        cause=cause,
        entered_event_id=int(run.entered["id"]),
    )
    inner = ctx.children.get(int(run.entered["id"]), [])
    if run.type == "Map":
        model.iterations = _map_summary(run, inner, ctx)
        if model.status in ("caught", "failed") and model.error is None:
            # MapStateFailed carries no error (moto 5): the failing iteration's state has it.
            model.error, model.cause = _first_failure(inner, ctx)
    elif run.type == "Parallel":
        model.branches = _branches(run, inner, ctx)
    return model


def _first_failure(inner: list[_Run], ctx: _Context) -> tuple[str | None, str | None]:
    """The error and cause of the first state in ``inner`` that ended its iteration with one."""
    for child in inner:
        if child.exited is not None:
            continue
        if child.pending_failure is not None:
            return child.pending_failure[0], child.pending_failure[1]
        if child.own_failure is not None and child.own_failure[0] is not None:
            return child.own_failure
        if child.type == "Fail":
            state = ctx.declared.get(child.name, {})
            return state.get("Error"), state.get("Cause")
    return None, None


def _map_summary(run: _Run, inner: list[_Run], ctx: _Context) -> MapSummary:
    by_index: dict[int, list[_Run]] = {}
    for child in inner:
        by_index.setdefault(child.path[-1][1], []).append(child)
    paths = {(*run.path, (run.name, i)) for i in by_index}
    paths |= {
        p
        for p in ctx.iteration_status
        if p[:-1] == run.path and p[-1][0] == run.name and (p in ctx.iteration_ended or p[-1][1] in by_index)
    }
    summary = MapSummary(total=run.map_length if run.map_length is not None else len(paths))
    items: list[MapIteration] = []
    for path in sorted(paths, key=lambda p: p[-1][1]):
        status: StateStatus
        ended = ctx.iteration_status.get(path)
        if ended in ("succeeded", "failed", "cancelled"):
            status = ended  # type: ignore[assignment]
        elif run.exited is not None:
            status = "succeeded"
        else:
            outer, _ = ctx.ending(run.path)
            # Still open when the Map's thread ended: stopped by it (a failure elsewhere, a StopExecution).
            status = "running" if outer is None else ("succeeded" if outer == "succeeded" else "cancelled")
        if status == "succeeded":
            summary.succeeded += 1
        elif status == "failed":
            summary.failed += 1
        elif status == "cancelled":
            summary.cancelled += 1
        else:
            summary.running += 1
        if ctx.expand:
            states = [_to_model(r, ctx) for r in by_index.get(path[-1][1], [])]
            items.append(MapIteration(index=path[-1][1], status=status, states=states))
    if ctx.expand:
        summary.items = items
    return summary


def _branches(run: _Run, inner: list[_Run], ctx: _Context) -> list[BranchRun]:
    branches = ctx.declared.get(run.name, {}).get("Branches") or []
    out: list[BranchRun] = []
    for index, branch in enumerate(branches):
        names = set(definition_states({"States": (branch or {}).get("States") or {}}))
        states = [_to_model(r, ctx) for r in inner if r.name in names]
        out.append(BranchRun(index=index, status=_branch_status(states, run), states=states))
    return out


def _branch_status(states: Iterable[StateRun], run: _Run) -> StateStatus:
    statuses = [s.status for s in states]
    if not statuses:
        return "not_reached"
    for wanted in ("failed", "cancelled", "running"):
        if wanted in statuses:
            return wanted
    return "succeeded" if run.exited is not None or statuses[-1] in ("succeeded", "caught") else "running"


def _assemble(runs: list[_Run], definition: Mapping[str, Any] | None, ctx: _Context) -> list[StateRun]:
    # The container (Map iteration / Parallel branch) of each run: the latest run of that Map or Parallel
    # state on the run's thread.
    parallel_of = _parallel_of(ctx.declared)
    top: list[_Run] = []
    containers: dict[tuple[Path, str], _Run] = {}
    for run in runs:
        parent: _Run | None = None
        if run.name in parallel_of:
            parent = containers.get((run.path, parallel_of[run.name]))
        elif run.path:
            parent = containers.get((run.path[:-1], run.path[-1][0]))
        if parent is not None:
            ctx.children.setdefault(int(parent.entered["id"]), []).append(run)
        else:
            top.append(run)
        if run.type in ("Map", "Parallel"):
            containers[(run.path, run.name)] = run
    out = [_to_model(r, ctx) for r in top]
    seen = {r.name for r in runs}
    for name, state in ((definition or {}).get("States") or {}).items():
        if name not in seen and isinstance(state, dict):
            out.append(StateRun(name=name, type=str(state.get("Type", "")), status="not_reached"))
    return out
