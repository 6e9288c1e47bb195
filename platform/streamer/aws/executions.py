"""Step Functions, the only module that talks to it: start, stop, describe, history, list; execution naming;
and the mapping of Step Functions errors to a request's terminal status.

Exactly one execution per request incarnation: the execution name is derived from the request's key, which
includes its incarnation, so a replayed, duplicated or reordered stream record can only ever name the same
execution, while a request id reused after its predecessor expired names a new one. Step Functions keeps
Standard execution names unique per state machine for 90 days and answers a StartExecution of a name it
knows with the same execution when the input is the same and the execution still runs, else with
``ExecutionAlreadyExists`` (https://docs.aws.amazon.com/step-functions/latest/apireference/API_StartExecution.html).
That error is success only when the existing execution ran for this very incarnation (its input names the
same request); otherwise :class:`ExecutionNameTakenError`.

AWS errors are translated here: a missing state machine is :class:`WorkflowNotDeployedError`, stopping an
execution that no longer runs is a no-op, describing one that does not exist returns ``None``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from botocore.exceptions import ClientError

from streamer.aws.store import LazyBoto3Client
from streamer.errors import StreamerError
from streamer.events import ExecutionStatusDetail, StepFunctionsError
from streamer.limits import MAX_ERROR_MESSAGE_CHARS, WORKFLOW_NAME_PATTERN
from streamer.models import RequestRef, request_key
from streamer.protocol import ErrorCode, RequestStatus

if TYPE_CHECKING:
    from mypy_boto3_stepfunctions import SFNClient

__all__ = [
    "CANCEL_CAUSE",
    "CANCEL_ERROR",
    "ENDING_STATUSES",
    "ExecutionNameTakenError",
    "Executions",
    "WorkflowNotDeployedError",
    "execution_arn",
    "execution_input",
    "execution_name",
    "failure_of",
    "terminal_of",
]

#: The ``error`` of the StopExecution that the protocol's ``cancel`` makes (an aborted execution carries it).
CANCEL_ERROR = "Streamer.Cancelled"
CANCEL_CAUSE = "cancelled by the client"

#: Execution statuses that end the request outside the notify task. SUCCEEDED is not one: NotifyResult
#: delivered the result before the execution could succeed. RUNNING (and PENDING_REDRIVE) are not ends.
ENDING_STATUSES = frozenset({"FAILED", "TIMED_OUT", "ABORTED"})

_NAME_RE = re.compile(WORKFLOW_NAME_PATTERN)  # execution names share the workflow-name alphabet and length


class WorkflowNotDeployedError(StreamerError):
    """StartExecution named a state machine that does not exist (``StateMachineDoesNotExist``)."""

    def __init__(self, state_machine_arn: str) -> None:
        super().__init__(f"no state machine {state_machine_arn}")
        self.state_machine_arn = state_machine_arn


class ExecutionNameTakenError(StreamerError):
    """StartExecution: the name is taken by an execution that did not run for this request incarnation."""

    def __init__(self, execution_arn: str) -> None:
        super().__init__(f"execution {execution_arn} exists and ran for another request")
        self.execution_arn = execution_arn


def execution_name(user_id: str, request_id: str, incarnation: str = "") -> str:
    """``<request_id prefix>-<32 hex of the request key>``: readable, unique per (user, request, incarnation);
    at most 40 + 1 + 32 = 73 characters of [A-Za-z0-9_-] (the limit is 80)."""
    readable = re.sub(r"[^A-Za-z0-9_-]", "_", request_id)[:40]
    name = f"{readable}-{request_key(user_id, request_id, incarnation)}"
    assert _NAME_RE.match(name), name
    return name


def execution_arn(state_machine_arn: str, name: str) -> str:
    return state_machine_arn.replace(":stateMachine:", ":execution:", 1) + ":" + name


def execution_input(ref: RequestRef, payload: dict[str, Any]) -> str:
    return json.dumps({"request": ref.model_dump(), "payload": payload}, separators=(",", ":"))


def _request_of_input(text: Any) -> Any:
    """The ``request`` member of an execution input (None when the input is not ours)."""
    try:
        body = json.loads(text) if isinstance(text, str) else None
    except ValueError:
        return None
    return body.get("request") if isinstance(body, dict) else None


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


class Executions(LazyBoto3Client["SFNClient"]):
    """The Step Functions adapter: one lazily created ``stepfunctions`` client per container."""

    service = "stepfunctions"

    def __init__(self, state_machine_arn_prefix: str, client: SFNClient | None = None) -> None:
        super().__init__(client)
        self.state_machine_arn_prefix = state_machine_arn_prefix

    def state_machine_arn(self, workflow: str) -> str:
        """ARN of workflow W's state machine: the configured prefix + W."""
        return self.state_machine_arn_prefix + workflow

    def start(self, workflow: str, name: str, input: str) -> str:
        """Start (or find already started) the execution ``name`` of ``workflow``; its ARN.

        An existing execution of that name is ours only when its input names the same request (the
        ``request`` member, which carries the incarnation): one DescribeExecution, on this rare path only.
        Raises :class:`WorkflowNotDeployedError`, :class:`ExecutionNameTakenError`; other errors raise as
        botocore's (worth a retry).
        """
        sm_arn = self.state_machine_arn(workflow)
        try:
            return self.client.start_execution(stateMachineArn=sm_arn, name=name, input=input)["executionArn"]
        except ClientError as exc:
            code = _code(exc)
            if code == "ExecutionAlreadyExists":
                arn = execution_arn(sm_arn, name)
                described = self.describe(arn)
                if described is None or _request_of_input(described.get("input")) != _request_of_input(input):
                    raise ExecutionNameTakenError(arn) from exc
                return arn
            if code == "StateMachineDoesNotExist":
                raise WorkflowNotDeployedError(sm_arn) from exc
            raise

    def stop(self, arn: str, *, error: str = CANCEL_ERROR, cause: str = CANCEL_CAUSE) -> None:
        """StopExecution; an execution that already ended (or never existed) is left as it is."""
        try:
            self.client.stop_execution(executionArn=arn, error=error, cause=cause)
        except ClientError as exc:
            if _code(exc) != "ExecutionDoesNotExist":
                raise

    def describe(self, arn: str) -> dict[str, Any] | None:
        """DescribeExecution, or ``None`` when there is no such execution."""
        try:
            return dict(self.client.describe_execution(executionArn=arn))
        except ClientError as exc:
            if _code(exc) in ("ExecutionDoesNotExist", "InvalidArn"):
                return None
            raise

    def history(self, arn: str) -> list[dict[str, Any]]:
        """The execution's whole event history, ascending (every page of GetExecutionHistory)."""
        events: list[dict[str, Any]] = []
        kwargs: dict[str, Any] = {"executionArn": arn, "maxResults": 1000}
        while True:
            resp = self.client.get_execution_history(**kwargs)
            events.extend(dict(e) for e in resp.get("events", []))
            token = resp.get("nextToken")
            if not token:
                return events
            kwargs["nextToken"] = token

    def list(self, workflow: str, *, status: str | None = None, page_size: int = 100) -> Iterator[dict[str, Any]]:
        """The workflow's executions, newest first, fetched page by page as they are consumed."""
        kwargs: dict[str, Any] = {"stateMachineArn": self.state_machine_arn(workflow), "maxResults": page_size}
        if status:
            kwargs["statusFilter"] = status
        while True:
            resp = self.client.list_executions(**kwargs)
            for item in resp.get("executions", []):
                yield dict(item)
            token = resp.get("nextToken")
            if not token:
                return
            kwargs["nextToken"] = token

    def definition(self, arn: str) -> dict[str, Any] | None:
        """The ASL definition an execution ran (DescribeStateMachineForExecution), parsed."""
        try:
            resp = self.client.describe_state_machine_for_execution(executionArn=arn)
        except ClientError as exc:
            if _code(exc) in ("ExecutionDoesNotExist", "InvalidArn"):
                return None
            raise
        parsed: dict[str, Any] = json.loads(resp["definition"])
        return parsed


# -- Step Functions errors → a request's terminal status -----------------------------------------------------

_WORKFLOW_FAILED = "the workflow failed"
_STEP_FAILED = "step failed"
#: Error names whose message was written by the step on purpose and may reach the client.
_STEP_ERRORS = frozenset({"StepFailedError", "RetryableStepError"})


def failure_of(err: StepFunctionsError | None, *, generic: str = _STEP_FAILED) -> tuple[RequestStatus, ErrorCode, str]:
    """Map a Step Functions error to the terminal status, wire code and a client-safe message.

    ``States.Timeout`` is a timeout; a step's own ``StepFailedError``/``RetryableStepError`` message may reach
    the client; anything else (unexpected exceptions, Lambda errors) gets ``generic``: no trace, no secret.
    """
    if err is None:
        return RequestStatus.FAILED, ErrorCode.STEP_FAILED, generic
    if err.error in ("States.Timeout", "States.HeartbeatTimeout"):
        return RequestStatus.TIMED_OUT, ErrorCode.TIMEOUT, "a step did not finish within its time limit"
    message = generic
    if err.error in _STEP_ERRORS and err.cause:
        try:
            cause = json.loads(err.cause)
            if isinstance(cause, dict) and isinstance(cause.get("errorMessage"), str):
                message = cause["errorMessage"][:MAX_ERROR_MESSAGE_CHARS]
        except ValueError:
            pass
    return RequestStatus.FAILED, ErrorCode.STEP_FAILED, message


def terminal_of(detail: ExecutionStatusDetail) -> tuple[RequestStatus, ErrorCode, str]:
    """The request's terminal status, wire code and client-safe message for an execution that ended badly.

    FAILED goes through the notify task's mapping (:func:`failure_of`): a step's own ``StepFailedError``
    message may reach the client, ``States.Timeout`` is a timeout; any other error gets a generic message —
    its cause (a stack trace, the data of a state) never does.
    """
    if detail.status == "ABORTED":
        if detail.error == CANCEL_ERROR:  # the protocol's cancel stopped it (and normally ended it first)
            return RequestStatus.CANCELLED, ErrorCode.CANCELLED, CANCEL_CAUSE
        return RequestStatus.CANCELLED, ErrorCode.CANCELLED, "the execution was stopped"
    if detail.status == "TIMED_OUT":
        return RequestStatus.TIMED_OUT, ErrorCode.TIMEOUT, "the workflow did not finish within its time limit"
    if detail.status != "FAILED":
        raise ValueError(f"execution status {detail.status} does not end a request")
    err = StepFunctionsError(Error=detail.error, Cause=detail.cause) if detail.error else None
    return failure_of(err, generic=_WORKFLOW_FAILED)
