"""The shared notify task the state machines call: step boundaries, the final result, failures."""

from __future__ import annotations

import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from streamer.handlers._runtime import get_logger, get_service, lambda_handler
from streamer.models import RequestRef
from streamer.protocol import ErrorCode, RequestStatus

logger = get_logger()

#: Error names whose message was written by the step on purpose and may reach the client.
_STEP_ERRORS = frozenset({"StepFailedError", "RetryableStepError"})
_MAX_MESSAGE = 1000


class StepFunctionsError(BaseModel):
    model_config = ConfigDict(populate_by_name=True, extra="ignore")
    error: str = Field(default="States.TaskFailed", alias="Error")
    cause: str | None = Field(default=None, alias="Cause")


class NotifyEvent(BaseModel):
    model_config = ConfigDict(extra="ignore")
    kind: Literal["progress", "result", "failure"]
    request: RequestRef
    step: str = ""
    percent: int = 0
    message: str = ""
    output: dict[str, Any] | None = None
    error: StepFunctionsError | None = None


def failure_of(err: StepFunctionsError | None) -> tuple[RequestStatus, ErrorCode, str]:
    """Map a Step Functions error to the terminal status, wire code and a client-safe message."""
    if err is None:
        return RequestStatus.FAILED, ErrorCode.STEP_FAILED, "step failed"
    if err.error in ("States.Timeout", "States.HeartbeatTimeout"):
        return RequestStatus.TIMED_OUT, ErrorCode.TIMEOUT, "a step did not finish within its time limit"
    message = "step failed"
    if err.error in _STEP_ERRORS and err.cause:
        try:
            cause = json.loads(err.cause)
            if isinstance(cause, dict) and isinstance(cause.get("errorMessage"), str):
                message = cause["errorMessage"][:_MAX_MESSAGE]
        except ValueError:
            pass
    # Anything else (unexpected exceptions, Lambda errors) gets the generic message: no trace, no secret.
    return RequestStatus.FAILED, ErrorCode.STEP_FAILED, message


@lambda_handler
def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    ev = NotifyEvent.model_validate(event)
    logger.thread_safe_append_keys(request_id=ev.request.request_id, workflow=ev.request.workflow)
    service = get_service()
    if ev.kind == "progress":
        e = service.progress(ev.request, ev.step, ev.percent, ev.message)
        return {"seq": e.seq if e else None}
    if ev.kind == "result":
        e = service.finish(ev.request, RequestStatus.SUCCEEDED, output=ev.output or {})
    else:
        status, code, message = failure_of(ev.error)
        logger.info("request failed", extra={"error": ev.error.error if ev.error else None})
        e = service.finish(ev.request, status, code=code, message=message)
    return {"seq": e.seq if e else None}
