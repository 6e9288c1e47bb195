"""Helpers for testing steps and workflows, for plugin authors and for streamer's own tests.

Run one step, with its progress captured::

    from streamer.testing import run_step

    result = run_step("echo", {"message": "hi", "steps": 2})
    assert result.output == {"message": "hi"}
    assert [e.percent for e in result.progress] == [50, 100]

Run a whole workflow's state machine for real, in moto's Step Functions interpreter, with the step runner
and a recording notify function served as Lambda functions on 127.0.0.1::

    from streamer.testing import LocalWorkflows

    with LocalWorkflows() as local:
        run = local.run("echo", {"message": "hi"})
        assert run.status == "SUCCEEDED" and run.client_status == "SUCCEEDED"

The pytest plugin (``streamer.pytest_plugin``, active once streamer is installed) offers both as the
fixtures ``streamer_steps`` and ``streamer_workflows``. Nothing here imports moto until a
:class:`LocalWorkflows` is entered.
"""

from __future__ import annotations

import json
import os
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import TYPE_CHECKING, Any

import pluggy

from streamer.config import LOCAL_REGION, restore_environ
from streamer.deploy import statemachines
from streamer.errors import RetryableStepError, StepFailedError
from streamer.models import RequestRef
from streamer.plugins import Registry, create_plugin_manager
from streamer.runner import ProgressSink
from streamer.runner import run_step as _run_step

if TYPE_CHECKING:
    from mypy_boto3_stepfunctions import SFNClient

__all__ = [
    "LAMBDA_ENDPOINT_ENV",
    "NOTIFY_FUNCTION",
    "STEP_RUNNER_FUNCTION",
    "LocalWorkflows",
    "ProgressEvent",
    "RecordingSink",
    "StepHarness",
    "StepResult",
    "WorkflowRun",
    "make_request",
    "run_step",
]

#: Function names (the template's logical IDs, which the local Lambda endpoint also uses).
STEP_RUNNER_FUNCTION = "StepRunnerFunction"
NOTIFY_FUNCTION = "NotifyFunction"
#: botocore sends every Lambda call of the process here (moto's interpreter creates its clients without an
#: endpoint URL, so this is how its Tasks reach our functions).
LAMBDA_ENDPOINT_ENV = "AWS_ENDPOINT_URL_LAMBDA"


def make_request(workflow: str = "test", *, user_id: str = "test-user", request_id: str | None = None) -> RequestRef:
    """A :class:`~streamer.models.RequestRef` for tests (a fresh request id unless one is given)."""
    return RequestRef.of(user_id, request_id or f"req-{uuid.uuid4().hex[:12]}", workflow)


@dataclass(frozen=True)
class ProgressEvent:
    """A progress event as the client would get it; ``source`` is ``"step"`` or ``"notify"``."""

    request_id: str
    step: str
    percent: int
    message: str
    source: str = "step"


class RecordingSink:
    """A :class:`~streamer.steps.ProgressSink` that keeps every event (thread-safe), then passes it on to
    ``forward`` if given (e.g. a real ``RequestService``)."""

    def __init__(self, forward: ProgressSink | None = None) -> None:
        self._events: list[ProgressEvent] = []
        self._lock = threading.Lock()
        self.forward = forward

    def progress(self, ref: RequestRef, step: str, percent: int, message: str) -> None:
        self.add(ProgressEvent(ref.request_id, step, percent, message))
        if self.forward is not None:
            self.forward.progress(ref, step, percent, message)

    def add(self, event: ProgressEvent) -> None:
        with self._lock:
            self._events.append(event)

    @property
    def events(self) -> list[ProgressEvent]:
        with self._lock:
            return list(self._events)

    def for_request(self, request_id: str) -> list[ProgressEvent]:
        return [e for e in self.events if e.request_id == request_id]


@dataclass(frozen=True)
class StepResult:
    """What running a step gave: ``output`` on success, else ``error`` (exactly one is set)."""

    output: dict[str, Any] | None
    progress: list[ProgressEvent]
    error: RetryableStepError | StepFailedError | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def error_type(self) -> str | None:
        """The Lambda ``errorType`` Step Functions would see: ``RetryableStepError``/``StepFailedError``."""
        return type(self.error).__name__ if self.error is not None else None

    @property
    def percents(self) -> list[int]:
        return [e.percent for e in self.progress]


class StepHarness:
    """Runs steps of the plugins registered on ``pm`` through the real step runner logic.

    ``pm`` defaults to a fresh manager with the installed plugins; register throwaway plugins on it at any
    time. Progress is not throttled unless ``interval_ms`` is given.
    """

    def __init__(self, pm: pluggy.PluginManager | None = None, *, interval_ms: int = 0) -> None:
        self.pm = pm if pm is not None else create_plugin_manager()
        self.interval_ms = interval_ms

    @property
    def registry(self) -> Registry:
        """The catalogue as of now (plugins registered since the last call are included)."""
        return Registry(self.pm)

    def event(self, step: str, input: Any = None, *, attempt: int = 1) -> dict[str, Any]:
        """The event the step Task would send (``attempt`` counts from 1, like ``StepContext.attempt``)."""
        if attempt < 1:
            raise ValueError("attempt counts from 1")
        return {
            "step": step,
            "request": make_request().model_dump(),
            "input": {} if input is None else input,
            "attempt": attempt - 1,
        }

    def run(self, step: str, input: Any = None, *, attempt: int = 1) -> StepResult:
        """Run ``step`` once; a step error is returned in ``.error``, not raised."""
        target = self.registry.get_step(step)
        sink = RecordingSink()
        try:
            output = _run_step(target, self.event(step, input, attempt=attempt), sink, interval_ms=self.interval_ms)
        except (RetryableStepError, StepFailedError) as exc:
            return StepResult(output=None, progress=sink.events, error=exc)
        return StepResult(output=output, progress=sink.events)


def run_step(
    step: str,
    input: Any = None,
    *,
    attempt: int = 1,
    pm: pluggy.PluginManager | None = None,
    interval_ms: int = 0,
) -> StepResult:
    """Run the installed (or ``pm``'s) step ``step`` on ``input``; see :class:`StepHarness`."""
    return StepHarness(pm, interval_ms=interval_ms).run(step, input, attempt=attempt)


# ---------------------------------------------------------------------------------------------------------
# Whole workflows in moto
# ---------------------------------------------------------------------------------------------------------


@dataclass
class WorkflowRun:
    """One execution, after it ended (or stopped being waited for)."""

    execution_arn: str
    request: RequestRef
    #: Step Functions' status: SUCCEEDED, FAILED, TIMED_OUT, ABORTED (or RUNNING if the wait gave up).
    status: str
    #: The execution's output (the state machines end with ``OutputPath: $.output``: the last step's).
    output: Any = None
    error: str | None = None
    cause: str | None = None
    #: Every call the notify function got for this request, in order.
    notifications: list[dict[str, Any]] = field(default_factory=list)
    #: Progress the client would see: the steps' (through the step runner) and the notify task's.
    progress: list[ProgressEvent] = field(default_factory=list)
    history: list[dict[str, Any]] = field(default_factory=list)

    @property
    def terminal(self) -> dict[str, Any] | None:
        """The ``result``/``failure`` notification, if one was sent."""
        ends = [n for n in self.notifications if n.get("kind") in ("result", "failure")]
        return ends[-1] if ends else None

    @property
    def client_status(self) -> str | None:
        """The request status the client ends with (the platform's notify mapping), if notified."""
        end = self.terminal
        if end is None:
            return None
        if end["kind"] == "result":
            return "SUCCEEDED"
        status, _code, _message = _failure_of(end.get("error"))
        return status

    @property
    def client_error(self) -> tuple[str, str] | None:
        """``(code, message)`` of the failure the client gets (e.g. ``("STEP_FAILED", "...")``)."""
        end = self.terminal
        if end is None or end["kind"] != "failure":
            return None
        _status, code, message = _failure_of(end.get("error"))
        return code, message

    def events(self, *types: str) -> list[dict[str, Any]]:
        """History events of the given types (all if none given)."""
        return [e for e in self.history if not types or e["type"] in types]


def _failure_of(error: Any) -> tuple[str, str, str]:
    # The platform's own mapping (Step Functions error -> status, code, message), imported when needed.
    from streamer.aws.executions import failure_of
    from streamer.events import StepFunctionsError

    err = StepFunctionsError.model_validate(error) if isinstance(error, dict) else None
    status, code, message = failure_of(err)
    return str(status), str(code), message


#: The history events that end an execution (Step Functions API reference, ``HistoryEvent``).
_EXECUTION_ENDED = frozenset({"ExecutionSucceeded", "ExecutionFailed", "ExecutionAborted", "ExecutionTimedOut"})


class LocalWorkflows:
    """moto's Step Functions interpreter with our step runner and a recording notify function.

    Use as a context manager: entering starts ``moto.mock_aws`` (state machine execution on), a Lambda
    Invoke endpoint on 127.0.0.1 serving ``StepRunnerFunction`` (bound to ``pm``'s plugins and a
    recording sink, which passes events on to ``sink`` if given) and ``NotifyFunction`` (records each call,
    then calls ``notify`` if given, e.g. the platform's ``streamer.handlers.notify.handler``), and points
    ``AWS_ENDPOINT_URL_LAMBDA`` at it; leaving undoes all of it. StopExecution behaves as on AWS, as in
    ``streamer local`` (the execution is ABORTED when the call returns; ``streamer.local.moto_atomic``).
    """

    def __init__(
        self,
        pm: pluggy.PluginManager | None = None,
        *,
        region: str = LOCAL_REGION,
        interval_ms: int = 0,
        notify: Callable[[dict[str, Any], Any], Any] | None = None,
        sink: ProgressSink | None = None,
    ) -> None:
        self.pm = pm if pm is not None else create_plugin_manager()
        self.region = region
        self.interval_ms = interval_ms
        self.sink = RecordingSink(forward=sink)
        #: Called with each notify event after it is recorded; its return value is the function's result.
        self.notify = notify
        self._notifications: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._mock: Any = None
        self._server: Any = None
        self._saved_env: dict[str, str | None] = {}
        self._sfn: SFNClient | None = None
        self.deployed: dict[str, str] = {}

    # -- lifecycle ------------------------------------------------------------------------------------
    def __enter__(self) -> LocalWorkflows:
        from moto import mock_aws

        from streamer.local.lambda_endpoint import serve_in_thread
        from streamer.local.moto_atomic import reliable_stop

        reliable_stop()  # idempotent; moto's interpreter, patched once per process as `streamer local` does
        self._mock = mock_aws(config={"stepfunctions": {"execute_state_machine": True}})
        self._mock.start()
        try:
            self._server, url = serve_in_thread(
                {STEP_RUNNER_FUNCTION: self._step_runner(), NOTIFY_FUNCTION: self._record_notify}
            )
            for key, value in {LAMBDA_ENDPOINT_ENV: url, "AWS_DEFAULT_REGION": self.region}.items():
                self._saved_env[key] = os.environ.get(key)
                os.environ[key] = value
        except BaseException:
            self._mock.stop()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        restore_environ(self._saved_env)
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._mock is not None:
            self._mock.stop()
            self._mock = None
        self._sfn = None

    def _step_runner(self) -> Callable[[dict[str, Any], Any], dict[str, Any]]:
        from streamer.handlers.step_runner import make_handler

        return make_handler(sink=self.sink, registry=Registry(self.pm), interval_ms=self.interval_ms)

    def _record_notify(self, event: dict[str, Any], context: Any) -> Any:
        with self._lock:
            self._notifications.append(json.loads(json.dumps(event)))
        if event.get("kind") == "progress":
            ref = event.get("request") or {}
            self.sink.add(
                ProgressEvent(
                    str(ref.get("request_id")),
                    str(event.get("step", "")),
                    int(event.get("percent", 0)),
                    str(event.get("message", "")),
                    source="notify",
                )
            )
        if self.notify is not None:
            return self.notify(event, context)
        return {"seq": None}

    # -- AWS side ---------------------------------------------------------------------------------------
    @property
    def sfn(self) -> SFNClient:
        if self._mock is None:
            raise RuntimeError("LocalWorkflows is not started (use it as a context manager)")
        if self._sfn is None:
            import boto3

            self._sfn = boto3.client("stepfunctions", region_name=self.region)
        return self._sfn

    @property
    def substitutions(self) -> dict[str, str]:
        """``${Name}`` values for the definitions: our two functions' ARNs."""
        from streamer.local.lambda_endpoint import function_arn

        return {
            "StepRunnerFunctionArn": function_arn(STEP_RUNNER_FUNCTION, self.region),
            "NotifyFunctionArn": function_arn(NOTIFY_FUNCTION, self.region),
        }

    def definition(self, workflow: str) -> dict[str, Any]:
        """The workflow's ASL with the substitutions applied, as a dict (tweak it, then :meth:`deploy`)."""
        paths = statemachines.discover(registry=Registry(self.pm))
        if workflow not in paths:
            raise LookupError(f"no state machine definition for workflow {workflow!r}")
        rendered: dict[str, Any] = json.loads(statemachines.render(paths[workflow], self.substitutions))
        return rendered

    def deploy(self, workflow: str, definition: Mapping[str, Any] | None = None) -> str:
        """Create (or update) the state machine ``workflow``; returns its ARN."""
        body = json.dumps(definition if definition is not None else self.definition(workflow))
        name = f"streamer-{workflow}"
        if workflow in self.deployed:
            self.sfn.update_state_machine(stateMachineArn=self.deployed[workflow], definition=body)
        else:
            created = self.sfn.create_state_machine(name=name, definition=body, roleArn=statemachines.LOCAL_ROLE_ARN)
            self.deployed[workflow] = created["stateMachineArn"]
        return self.deployed[workflow]

    def start(
        self, workflow: str, payload: Mapping[str, Any], *, request: RequestRef | None = None
    ) -> tuple[str, RequestRef]:
        """Start an execution with the platform's input ``{"request", "payload"}``; deploys if needed."""
        from streamer.aws.executions import execution_input

        if workflow not in self.deployed:
            self.deploy(workflow)
        ref = request or make_request(workflow)
        arn = self.sfn.start_execution(
            stateMachineArn=self.deployed[workflow],
            name=ref.request_id,  # always named: moto gives every unnamed execution the same ARN
            input=execution_input(ref, dict(payload)),
        )["executionArn"]
        return arn, ref

    def wait(self, execution_arn: str, request: RequestRef, *, timeout: float = 60.0) -> WorkflowRun:
        """Poll until the execution has ended — no longer RUNNING, and its history holds the event that ends it —
        (or ``timeout``), then collect what happened."""
        deadline = time.monotonic() + timeout
        while True:
            desc = self.sfn.describe_execution(executionArn=execution_arn)
            if time.monotonic() > deadline:
                break
            if desc["status"] != "RUNNING":
                events = self.sfn.get_execution_history(executionArn=execution_arn)["events"]
                if any(e["type"] in _EXECUTION_ENDED for e in events):
                    break
            time.sleep(0.02)
        output = desc.get("output")
        history = self.sfn.get_execution_history(executionArn=execution_arn)["events"]
        return WorkflowRun(
            execution_arn=execution_arn,
            request=request,
            status=desc["status"],
            output=json.loads(output) if output else None,
            error=desc.get("error"),
            cause=desc.get("cause"),
            notifications=self.notifications(request.request_id),
            progress=self.sink.for_request(request.request_id),
            history=[_plain(e) for e in history],
        )

    def run(
        self,
        workflow: str,
        payload: Mapping[str, Any],
        *,
        request: RequestRef | None = None,
        timeout: float = 60.0,
    ) -> WorkflowRun:
        """Start ``workflow`` with ``payload`` and wait for it to end."""
        arn, ref = self.start(workflow, payload, request=request)
        return self.wait(arn, ref, timeout=timeout)

    def notifications(self, request_id: str | None = None) -> list[dict[str, Any]]:
        with self._lock:
            calls = list(self._notifications)
        if request_id is None:
            return calls
        return [c for c in calls if (c.get("request") or {}).get("request_id") == request_id]


def _plain(event: Mapping[str, Any]) -> dict[str, Any]:
    """A history event with its timestamp as epoch seconds (JSON-able, easy to compare)."""
    out = dict(event)
    ts = out.get("timestamp")
    if ts is not None and hasattr(ts, "timestamp"):
        out["timestamp"] = ts.timestamp()
    return out
