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
from streamer.router import Router, closes_connection
from streamer.service import RequestService

logger = get_logger()


def _request_id_of(raw: str | bytes) -> str | None:
    """The ``request_id`` a status/resume/cancel (or a submit naming one) is about, for the log lines of
    this invocation; None when the message does not name one (the router answers what is wrong with it)."""
    try:
        body = json.loads(raw)
    except ValueError:  # also UnicodeDecodeError
        return None
    rid = body.get("request_id") if isinstance(body, dict) else None
    return rid if isinstance(rid, str) and 0 < len(rid) <= 128 else None


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
    correlate(request_id=_request_id_of(raw))
    replies = get_router(service).handle_message(cid, raw)
    for frame in replies:
        if frame.get("type") == "ack":  # a submit: now the request id is known (the server may have made it)
            correlate(request_id=frame.get("request_id"), workflow=frame.get("workflow"))
        elif frame.get("code") == ErrorCode.RATE_LIMITED.value:
            metrics.add(metrics.MESSAGES_RATE_LIMITED)
    if closes_connection(replies):
        # The token expired: the reason goes out as the FORBIDDEN frame, then the connection is closed
        # (docs/protocol.md) — posted, since a route response would come after the close.
        service.reply(cid, replies)
        logger.info("message handled", extra={"replies": len(replies)})
        try:
            service.close(cid)
            logger.info("closed: token expired")
        except StreamerError:
            logger.warning("expired connection not closed; API Gateway's idle timeout will")
        return {"statusCode": 200}
    logger.info("message handled", extra={"replies": len(replies)})
    if ev.request_context.route_key in service.settings.reply_route_response:
        # The $default route's route response sends the body to the asker (infra/template.yaml).
        last = service.reply_by_route_response(cid, replies)
        if last is None:
            return {"statusCode": 200}
        return {"statusCode": 200, "body": json.dumps(last, separators=(",", ":"), ensure_ascii=False)}
    service.reply(cid, replies)
    return {"statusCode": 200}
