"""Executions: deterministic names, the stream router's per-record logic, and executions that end badly.

Exactly one execution per request: the execution name is derived from the request's key, so a replayed,
duplicated or reordered stream record can only ever name the same execution, and
``ExecutionAlreadyExists`` for that name is success. (Step Functions keeps Standard execution names unique
per state machine for 90 days: https://docs.aws.amazon.com/step-functions/latest/apireference/API_StartExecution.html)

An execution normally ends its request itself (the notify task). :func:`end_for_status_change` covers the
executions that end FAILED / TIMED_OUT / ABORTED without that (EventBridge "Step Functions Execution Status
Change" events: https://docs.aws.amazon.com/step-functions/latest/dg/eventbridge-integration.html).
"""

from __future__ import annotations

import json
import logging
import re
from typing import Any, Literal

from botocore.exceptions import ClientError
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from streamer.aws.store import from_ddb
from streamer.limits import MAX_ERROR_MESSAGE_CHARS, MAX_EXECUTION_NAME, WORKFLOW_NAME_PATTERN
from streamer.models import RequestRef, request_key
from streamer.protocol import ErrorCode, RequestStatus
from streamer.service import CANCEL_ERROR, RequestService

__all__ = [
    "ENDING_STATUSES",
    "MAX_EXECUTION_NAME",
    "ExecutionStatusChange",
    "ExecutionStatusDetail",
    "StepFunctionsError",
    "end_for_status_change",
    "execution_arn",
    "execution_input",
    "execution_name",
    "failure_of",
    "start_for_record",
    "terminal_of",
]

logger = logging.getLogger(__name__)

_NAME_RE = re.compile(WORKFLOW_NAME_PATTERN)  # execution names share the workflow-name alphabet and length


def execution_name(user_id: str, request_id: str) -> str:
    """``<request_id prefix>-<32 hex of the request key>``: readable, unique per (user, request), ≤ 80."""
    readable = re.sub(r"[^A-Za-z0-9_-]", "_", request_id)[:40]
    name = f"{readable}-{request_key(user_id, request_id)}"
    assert _NAME_RE.match(name), name
    return name


def execution_arn(state_machine_arn: str, name: str) -> str:
    return state_machine_arn.replace(":stateMachine:", ":execution:", 1) + ":" + name


def execution_input(ref: RequestRef, payload: dict[str, Any]) -> str:
    return json.dumps({"request": ref.model_dump(), "payload": payload}, separators=(",", ":"))


def start_for_record(service: RequestService, record: dict[str, Any]) -> str:
    """Handle one DynamoDB stream record of the requests table. Returns what was done (for logs/tests).

    Raises on failures worth retrying (the record then appears in ``batchItemFailures``).
    """
    if record.get("eventName") != "INSERT":
        return "ignored"
    image = record.get("dynamodb", {}).get("NewImage")
    if not image:
        raise ValueError("INSERT record without NewImage (stream view type must include new images)")
    item = from_ddb(image)
    user_id, request_id, workflow = item["user_id"], item["request_id"], item["workflow"]
    req = service.requests.get(user_id, request_id)
    if req is None or req.status is not RequestStatus.PENDING:
        return "skipped"  # already started, cancelled, ended or expired
    ref = req.ref
    body = execution_input(ref, req.payload)
    limit = service.settings.max_execution_input_bytes
    if len(body.encode()) > limit:
        service.reject(
            ref,
            ErrorCode.PAYLOAD_TOO_LARGE,
            f"the execution input would be {len(body.encode())} bytes; Step Functions accepts {limit}",
        )
        return "rejected"
    sm_arn = service.settings.state_machine_arn(workflow)
    name = execution_name(user_id, request_id)
    try:
        arn = service.sfn.start_execution(stateMachineArn=sm_arn, name=name, input=body)["executionArn"]
    except ClientError as exc:
        code = exc.response.get("Error", {}).get("Code")
        if code == "ExecutionAlreadyExists":
            arn = execution_arn(sm_arn, name)
        elif code == "StateMachineDoesNotExist":
            service.reject(ref, ErrorCode.UNKNOWN_WORKFLOW, f"workflow {workflow!r} is not deployed")
            return "rejected"
        else:
            raise
    if not service.requests.mark_running(user_id, request_id, arn, service.now()):
        current = service.requests.get(user_id, request_id)
        if current is not None and current.status is RequestStatus.CANCELLED:
            service.stop_execution(arn)  # cancelled while we were starting it
            return "cancelled"
    return "started"


# ---------------------------------------------------------------------------------------------------------
# Executions that ended without their notify task: EventBridge "Step Functions Execution Status Change".
# ---------------------------------------------------------------------------------------------------------

#: Execution statuses that end the request here. SUCCEEDED is not one: NotifyResult delivered the result
#: before the execution could succeed. RUNNING (and PENDING_REDRIVE) are not ends.
ENDING_STATUSES = frozenset({"FAILED", "TIMED_OUT", "ABORTED"})


class ExecutionDataDetails(BaseModel):
    model_config = ConfigDict(extra="ignore")
    #: False when the data was left out of the event (EventBridge events are limited to 256 KiB).
    included: bool = True


class ExecutionStatusDetail(BaseModel):
    """``detail`` of a "Step Functions Execution Status Change" event (dates are epoch milliseconds)."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True)
    execution_arn: str = Field(alias="executionArn")
    state_machine_arn: str = Field(alias="stateMachineArn")
    name: str
    status: str
    start_date: int | None = Field(default=None, alias="startDate")
    stop_date: int | None = Field(default=None, alias="stopDate")
    input: str | None = None
    input_details: ExecutionDataDetails | None = Field(default=None, alias="inputDetails")
    error: str | None = None
    cause: str | None = None


class ExecutionStatusChange(BaseModel):
    """The EventBridge event Step Functions sends to the default bus when an execution changes status."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True)
    version: str = "0"
    id: str = ""
    detail_type: Literal["Step Functions Execution Status Change"] = Field(alias="detail-type")
    source: Literal["aws.states"]
    account: str = ""
    time: str = ""
    region: str = ""
    resources: list[str] = Field(default_factory=list)
    detail: ExecutionStatusDetail


_WORKFLOW_FAILED = "the workflow failed"
_STEP_FAILED = "step failed"
#: Error names whose message was written by the step on purpose and may reach the client.
_STEP_ERRORS = frozenset({"StepFailedError", "RetryableStepError"})


class StepFunctionsError(BaseModel):
    """Step Functions' ``{"Error", "Cause"}`` (a Catch's ``ResultPath`` output, or a failed execution's)."""

    model_config = ConfigDict(populate_by_name=True, extra="ignore")
    error: str = Field(default="States.TaskFailed", alias="Error")
    cause: str | None = Field(default=None, alias="Cause")


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
            return RequestStatus.CANCELLED, ErrorCode.CANCELLED, "cancelled by the client"
        return RequestStatus.CANCELLED, ErrorCode.CANCELLED, "the execution was stopped"
    if detail.status == "TIMED_OUT":
        return RequestStatus.TIMED_OUT, ErrorCode.TIMEOUT, "the workflow did not finish within its time limit"
    if detail.status != "FAILED":
        raise ValueError(f"execution status {detail.status} does not end a request")
    err = StepFunctionsError(Error=detail.error, Cause=detail.cause) if detail.error else None
    return failure_of(err, generic=_WORKFLOW_FAILED)


def _input_of(service: RequestService, detail: ExecutionStatusDetail) -> str | None:
    if detail.input is not None:
        return detail.input
    if detail.input_details is None or detail.input_details.included:
        return None
    # Left out of the event for its size: ask Step Functions (transient errors raise, so the event is retried).
    try:
        return service.sfn.describe_execution(executionArn=detail.execution_arn).get("input")
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") in ("ExecutionDoesNotExist", "InvalidArn"):
            return None
        raise


def _request_of(service: RequestService, detail: ExecutionStatusDetail) -> tuple[RequestRef | None, str]:
    """The request an execution ran for, or ``(None, outcome)`` when the event is not about one of ours."""
    settings = service.settings
    if not detail.state_machine_arn.startswith(settings.state_machine_arn_prefix):
        return None, "foreign"
    text = _input_of(service, detail)
    try:
        body = json.loads(text) if text is not None else None
        ref = RequestRef.model_validate(body.get("request") if isinstance(body, dict) else None)
    except (ValueError, ValidationError):  # JSONDecodeError is a ValueError
        return None, "unreadable"
    # Only the request's own execution ends it: the ARN of its workflow's state machine (another stack
    # whose name shares our prefix has others) and the deterministic name (not a copy started by hand).
    if (
        ref != RequestRef.of(ref.user_id, ref.request_id, ref.workflow)
        or detail.state_machine_arn != settings.state_machine_arn(ref.workflow)
        or detail.name != execution_name(ref.user_id, ref.request_id)
    ):
        return None, "foreign"
    return ref, ""


def end_for_status_change(service: RequestService, detail: ExecutionStatusDetail) -> str:
    """End the request of an execution that ended FAILED / TIMED_OUT / ABORTED. Returns what was done.

    ``ended``: this call gave the request its terminal event. ``unchanged``: the request had already ended
    (the notify task or a ``cancel`` did it; a repeated event). ``ignored``: a status that ends nothing.
    ``foreign`` / ``unreadable``: not an execution of one of our requests, or its input cannot be read;
    ``unknown``: no such request (expired). None of these raise: a redelivery could not change them. Store
    and Step Functions errors do raise, so the event is retried.
    """
    if detail.status not in ENDING_STATUSES:
        return "ignored"
    ref, outcome = _request_of(service, detail)
    if ref is None:
        logger.warning(
            "execution status change not about a request of this stack; ignored",
            extra={"outcome": outcome, "execution_arn": detail.execution_arn, "status": detail.status},
        )
        return outcome
    req = service.requests.get(ref.user_id, ref.request_id)
    if req is None:
        logger.warning("execution of an unknown request ended", extra={"request_id": ref.request_id})
        return "unknown"
    if req.status.terminal:
        return "unchanged"
    status, code, message = terminal_of(detail)
    ended = service.finish(ref, status, code=code, message=message)
    logger.info(
        "request ended by its execution's status change",
        extra={"request_id": ref.request_id, "status": status.value, "error": detail.error, "ended": bool(ended)},
    )
    return "ended" if ended is not None else "unchanged"
