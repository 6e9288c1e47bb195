"""``$default``: route one client message; replies go back through the Management API."""

from __future__ import annotations

import base64
import json
from typing import Any

from streamer import metrics, plugins
from streamer.errors import StreamerError
from streamer.events import WebSocketEvent
from streamer.handlers._edges import get_quotas
from streamer.handlers._runtime import correlate, get_logger, get_service, lambda_handler
from streamer.protocol import ErrorCode
from streamer.router import Router, changes_state, closes_connection
from streamer.service import RequestService

logger = get_logger()


def _peek(raw: str | bytes) -> tuple[str | None, str | None]:
    """The message's ``request_id`` (a status/resume/cancel, or a submit naming one), for the log lines of this
    invocation, and its ``action``; None when the message does not say (the router answers what is wrong)."""
    try:
        body = json.loads(raw)
    except ValueError:  # also UnicodeDecodeError
        return None, None
    if not isinstance(body, dict):
        return None, None
    rid, action = body.get("request_id"), body.get("action")
    return (
        rid if isinstance(rid, str) and 0 < len(rid) <= 128 else None,
        action if isinstance(action, str) else None,
    )


def get_router(service: RequestService) -> Router:
    return Router(
        service,
        plugins.workflows,
        rate_limit_per_minute=service.settings.rate_limit_per_minute,
        quotas=get_quotas(service),
    )


@lambda_handler
def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    try:
        ev = WebSocketEvent.parse(event)
    except ValueError:
        logger.warning("malformed message event")
        return {"statusCode": 400}
    cid = ev.request_context.connection_id
    logger.thread_safe_append_keys(connection_id=cid)
    service = get_service(ev)
    raw: str | bytes = ev.body or ""
    if ev.is_base64_encoded:
        try:
            raw = base64.b64decode(raw)
        except ValueError:
            raw = b"\xff"  # not JSON: the router answers VALIDATION_ERROR
    request_id, action = _peek(raw)
    correlate(request_id=request_id)
    replies = get_router(service).handle_message(cid, raw)
    for frame in replies:
        if frame.get("type") == "ack":  # a submit: now the request id is known (the server may have made it)
            correlate(request_id=frame.get("request_id"), workflow=frame.get("workflow"))
        elif frame.get("code") == ErrorCode.RATE_LIMITED.value:
            metrics.add(metrics.MESSAGES_RATE_LIMITED)
    # A line per accepted request or cancel; ping, status, resume and refusals (counted by the metrics) only
    # at DEBUG: a line per message cost a seventh of a local ping's CPU (and, on AWS, log bill) and says nothing new.
    handled = logger.info if changes_state(action, replies) else logger.debug
    if closes_connection(replies):
        # The token expired: the reason goes out as the FORBIDDEN frame, then the connection is closed
        # (docs/protocol.md) — posted, since a route response would come after the close.
        service.reply(cid, replies)
        handled("message handled", extra={"replies": len(replies)})
        try:
            service.close(cid)
            logger.info("closed: token expired")
        except StreamerError:
            logger.warning("expired connection not closed; API Gateway's idle timeout will")
        return {"statusCode": 200}
    handled("message handled", extra={"replies": len(replies)})
    if ev.request_context.route_key in service.settings.reply_route_response:
        # The $default route's route response sends the body to the asker (infra/template.yaml).
        last = service.reply_by_route_response(cid, replies)
        if last is None:
            return {"statusCode": 200}
        return {"statusCode": 200, "body": json.dumps(last, separators=(",", ":"), ensure_ascii=False)}
    service.reply(cid, replies)
    return {"statusCode": 200}
