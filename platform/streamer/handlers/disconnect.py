"""``$disconnect``: remove the connection row (best effort on AWS; TTL cleans up what is missed)."""

from __future__ import annotations

from typing import Any

from streamer.events import WebSocketEvent
from streamer.handlers._runtime import get_logger, get_service, lambda_handler

logger = get_logger()


@lambda_handler
def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    try:
        ev = WebSocketEvent.parse(event)
    except ValueError:
        logger.warning("malformed $disconnect event")
        return {"statusCode": 400}
    cid = ev.request_context.connection_id
    get_service(ev).disconnect(cid)
    logger.info("disconnected", extra={"connection_id": cid})
    return {"statusCode": 200}
