"""EventBridge "Step Functions Execution Status Change" → the request's terminal event, when nothing else sent it.

The rule (``ExecutionEndedRule`` in ``infra/template.yaml``) forwards this stack's executions that ended
FAILED, TIMED_OUT or ABORTED; the logic is ``RequestService.end_for_status_change``. Events that are not
about one of our requests are logged and answered normally: raising would only make Lambda retry them.
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import ValidationError

from streamer.events import ExecutionStatusChange, ExecutionStatusDetail
from streamer.handlers._runtime import correlate, get_logger, get_service, lambda_handler

__all__ = ["handler"]

logger = get_logger()


def _correlation_of(detail: ExecutionStatusDetail) -> tuple[str | None, str | None]:
    """``(request_id, workflow)`` from the execution's input when the event carries it, for the log lines only
    (the service decides, from the same input, whether the execution is one of ours)."""
    try:
        request = json.loads(detail.input or "null").get("request")
        return str(request["request_id"]), str(request["workflow"])
    except (ValueError, AttributeError, TypeError, KeyError):
        return None, None


@lambda_handler
def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    try:
        change = ExecutionStatusChange.model_validate(event)
    except ValidationError as exc:
        logger.warning(
            "not a Step Functions execution status change; ignored",
            extra={"errors": [".".join(map(str, e["loc"])) for e in exc.errors()][:5]},
        )
        return {"outcome": "unreadable"}
    detail = change.detail
    logger.thread_safe_append_keys(execution_arn=detail.execution_arn, execution_status=detail.status)
    request_id, workflow = _correlation_of(detail)
    correlate(request_id=request_id, workflow=workflow)
    outcome = get_service().end_for_status_change(detail)
    logger.info("execution status change", extra={"outcome": outcome, "event_id": change.id})
    return {"outcome": outcome}
