"""The shared notify task the state machines call: step boundaries, the final result, failures."""

from __future__ import annotations

from typing import Any

from streamer.aws.executions import failure_of
from streamer.events import NotifyEvent
from streamer.handlers._runtime import correlate, get_logger, get_service, lambda_handler
from streamer.protocol import RequestStatus

__all__ = ["handler"]

logger = get_logger()


@lambda_handler
def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    ev = NotifyEvent.model_validate(event)
    correlate(request_id=ev.request.request_id, workflow=ev.request.workflow, step=ev.step or None)
    service = get_service()
    if ev.kind == "progress":
        e = service.progress(ev.request, ev.step, ev.percent, ev.message)
    elif ev.kind == "result":
        e = service.finish(ev.request, RequestStatus.SUCCEEDED, output=ev.output or {})
    else:
        status, code, message = failure_of(ev.error)
        logger.info("request failed", extra={"error": ev.error.error if ev.error else None})
        e = service.finish(ev.request, status, code=code, message=message)
    # None: the request had already ended (a retried notify, a cancel that won), nothing was sent.
    logger.info("notified", extra={"kind": ev.kind, "seq": e.seq if e else None})
    return {"seq": e.seq if e else None}
