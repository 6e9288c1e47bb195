"""``$default``: route one client message; replies go back through the Management API."""

from __future__ import annotations

import base64
from typing import Any

from streamer import plugins
from streamer.errors import StreamerError
from streamer.events import WebSocketEvent
from streamer.handlers._edges import get_closer, get_quotas
from streamer.handlers._runtime import get_logger, get_service, lambda_handler
from streamer.router import Router, closes_connection
from streamer.service import RequestService

logger = get_logger()


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
    replies = get_router(service).handle_message(cid, raw)
    service.reply(cid, replies)
    if closes_connection(replies):
        # The token expired: the reason went out as the FORBIDDEN frame; now close (docs/protocol.md).
        try:
            get_closer(service, ev).close(cid)
            logger.info("closed: token expired")
        except StreamerError:
            logger.warning("expired connection not closed; API Gateway's idle timeout will")
    logger.info("message handled", extra={"replies": len(replies)})
    return {"statusCode": 200}
