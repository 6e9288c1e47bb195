"""Make moto keep three promises AWS keeps: single-item writes are atomic, an execution name is started once,
and a stopped execution stops.

**DynamoDB.**
DynamoDB applies each write to an item atomically and returns the values of *that* write
(https://docs.aws.amazon.com/amazondynamodb/latest/developerguide/WorkingWithItems.html#WorkingWithItems.AtomicCounters).
moto 5.2.5 does not: its ``UpdateItem`` response is rendered from the live item after the update returns, so
two concurrent ``ADD last_seq :one ... ReturnValues=UPDATED_NEW`` can both answer the later value (two writers
get the same seq, one seq is never written). The request lifecycle relies on that atomicity
(``streamer.aws.store``), so moto's DynamoDB actions run one at a time here: one lock around the handler's
``call_action``. It costs no throughput worth measuring (moto's handlers hold the GIL anyway) and is applied
by the local moto server and by the functional tests' in-process moto.

**Step Functions names.** An execution name is unique per state machine: of two concurrent StartExecution
calls with one name, one starts it and the other gets the same execution (same input) or
``ExecutionAlreadyExists``. moto 5.2.5 checks the name, then appends the execution, with nothing in between:
two concurrent calls can both start one (two executions of one request incarnation), so
:func:`unique_execution_names` runs moto's StartExecution one at a time.

**Step Functions stops.** StopExecution ends a running execution
(https://docs.aws.amazon.com/step-functions/latest/apireference/API_StopExecution.html). moto 5.2.5's
interpreter can lose a stop that arrives just after StartExecution: before its worker has built the
evaluation environment and started the program the stop fails or is ignored, and a ``Wait`` state that has
not begun waiting misses the wake-up (the stop sets and at once clears the event the wait blocks on), so the
execution waits its whole time out.
The request lifecycle stops executions exactly then (a cancel racing the start: ``streamer.service``), so
:func:`reliable_stop` makes the stop wait for the environment and leaves the wake-up set once stopped. And
moto records a stop only when the state in progress returns (a Task: after its Lambda invocation, however long),
where AWS's StopExecution returns with the execution ABORTED: :func:`reliable_stop` records it at once.
"""

from __future__ import annotations

import functools
import threading
from typing import Any

__all__ = ["reliable_stop", "serialize_dynamodb", "unique_execution_names"]

_LOCK = threading.RLock()
_MARK = "_streamer_serialized"


def serialize_dynamodb() -> None:
    """Run moto's DynamoDB actions one at a time (idempotent)."""
    from moto.dynamodb.responses import DynamoHandler

    original = DynamoHandler.call_action
    if getattr(original, _MARK, False):
        return

    @functools.wraps(original)
    def call_action(self: Any) -> Any:
        with _LOCK:
            return original(self)

    setattr(call_action, _MARK, True)
    DynamoHandler.call_action = call_action  # type: ignore[method-assign]


def reliable_stop(env_wait_seconds: float = 5.0) -> None:
    """Make moto's StopExecution stop an execution however soon after its start it comes, and return with the
    execution stopped however long the state it is in runs on (idempotent)."""
    import datetime
    import time

    from moto.stepfunctions.parser.api import ExecutionStatus, HistoryEventType
    from moto.stepfunctions.parser.asl.eval.environment import Environment
    from moto.stepfunctions.parser.asl.eval.event.event_manager import EventHistoryContext, EventManager
    from moto.stepfunctions.parser.asl.eval.program_state import ProgramStopped
    from moto.stepfunctions.parser.backend.execution import BaseExecutionWorkerCommunication, Execution

    set_stop = Environment.set_stop
    if getattr(set_stop, _MARK, False):
        return

    @functools.wraps(set_stop)
    def sticky_set_stop(self: Any, *args: Any, **kwargs: Any) -> None:
        set_stop(self, *args, **kwargs)
        if not self.is_running():
            self.program_state_event.set()  # stays set: a wait that begins later returns at once

    execution_stop = Execution.stop

    @functools.wraps(execution_stop)
    def stop_when_ready(self: Any, *args: Any, **kwargs: Any) -> None:
        deadline = time.monotonic() + env_wait_seconds
        # The worker thread builds its environment, then the program marks it running (its first state): a
        # stop before that is ignored by moto, so wait for it.
        while time.monotonic() < deadline and (
            self.exec_worker is None or self.exec_worker.env is None or self.exec_worker.env._program_state is None
        ):
            time.sleep(0.005)
        execution_stop(self, *args, **kwargs)
        # On AWS the execution is ABORTED when StopExecution returns, whatever its current state is doing
        # (a Task's Lambda invocation runs on, unawaited: "Stops an execution", API_StopExecution). moto's worker
        # records the stop only when the state it is in returns — a Task after its Lambda invocation, however
        # long that runs — so it is recorded here as the worker records it: the status ABORTED with the stop's
        # date, and the history's ExecutionAborted event (moto's own, later, is then left out: below). Waiting for
        # the worker instead held every cancel of a request whose step was running for the whole wait, and the
        # local gateway's route threads with it.
        env: Any = self.exec_worker.env if self.exec_worker is not None else None
        state = env.program_state() if env is not None else None
        if isinstance(state, ProgramStopped) and self.exec_status == ExecutionStatus.RUNNING:
            details: Any = {"executionAbortedEventDetails": {"error": state.error, "cause": state.cause}}
            env.event_manager.add_event(
                context=EventHistoryContext.of_program_start(),
                event_type=HistoryEventType.ExecutionAborted,
                event_details=details,  # moto's EventDetails (a TypedDict), as its program adds it
            )
            self.stop_date = kwargs.get("stop_date") or datetime.datetime.now(tz=datetime.UTC)
            self.exec_status = ExecutionStatus.ABORTED

    reflect: Any = BaseExecutionWorkerCommunication._reflect_execution_status

    @functools.wraps(reflect)
    def keep_recorded_stop(self: Any) -> None:
        execution = self.execution
        if execution.exec_status == ExecutionStatus.ABORTED and execution.stop_date is not None:
            return  # recorded by stop_when_ready: the stop's date stays the one StopExecution returned
        reflect(self)

    add_event: Any = EventManager.add_event
    history_lock = threading.Lock()

    @functools.wraps(add_event)
    def one_abort_event(self: Any, *args: Any, **kwargs: Any) -> int:
        # Once an execution's history has its ExecutionAborted, it ends there: the worker's events of the state
        # that was running when it stopped (its Lambda's return, then moto's own ExecutionAborted) are not added.
        with history_lock:  # the check and the add as one: nothing slips in after the abort
            if getattr(self, "_streamer_aborted", False):
                return -1
            kind = kwargs.get("event_type", args[1] if len(args) > 1 else None)
            if kind == HistoryEventType.ExecutionAborted:
                self._streamer_aborted = True
            result: int = add_event(self, *args, **kwargs)
            return result

    setattr(sticky_set_stop, _MARK, True)
    EventManager.add_event = one_abort_event  # type: ignore[method-assign]
    Environment.set_stop = sticky_set_stop  # type: ignore[method-assign]
    Execution.stop = stop_when_ready  # type: ignore[method-assign]
    BaseExecutionWorkerCommunication._reflect_execution_status = keep_recorded_stop  # type: ignore[method-assign]


def unique_execution_names() -> None:
    """Run moto's StartExecution one at a time, in both of its Step Functions backends (idempotent)."""
    from moto.stepfunctions.models import StepFunctionBackend
    from moto.stepfunctions.parser.models import StepFunctionsParserBackend

    lock = threading.RLock()
    for backend in (StepFunctionBackend, StepFunctionsParserBackend):
        original = backend.__dict__.get("start_execution")
        if original is None or getattr(original, _MARK, False):
            continue

        def make(fn: Any) -> Any:
            @functools.wraps(fn)
            def start_execution(self: Any, *args: Any, **kwargs: Any) -> Any:
                with lock:
                    return fn(self, *args, **kwargs)

            setattr(start_execution, _MARK, True)
            return start_execution

        backend.start_execution = make(original)  # type: ignore[method-assign]
