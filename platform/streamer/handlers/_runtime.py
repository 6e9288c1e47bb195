"""What the handlers of one Lambda container share: settings, the service, the logger."""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from typing import Any

from aws_lambda_powertools import Logger

from streamer.config import Settings
from streamer.events import WebSocketEvent
from streamer.redact import RedactTokensFilter
from streamer.service import RequestService

__all__ = ["get_logger", "get_service", "lambda_handler", "reset", "set_service"]


@functools.cache
def get_logger() -> Logger:
    logger = Logger(service=os.environ.get("POWERTOOLS_SERVICE_NAME", "streamer"))
    # Defence in depth: nothing that looks like a JWT ever reaches a log line.
    for h in logger.handlers:
        h.addFilter(RedactTokensFilter())
    return logger


Handler = Callable[[dict[str, Any], Any], dict[str, Any]]


def lambda_handler(fn: Handler) -> Handler:
    """Per-invocation log context: thread-local keys, cleared before and after each invocation.

    Powertools' plain ``append_keys`` would carry one request's keys into the next invocation of a warm
    container (and, locally, into other functions served by the same process).
    """
    logger = get_logger()

    @functools.wraps(fn)
    def wrapper(event: dict[str, Any], context: Any) -> dict[str, Any]:
        logger.thread_safe_clear_keys()
        keys = {
            "function_name": getattr(context, "function_name", None),
            "function_request_id": getattr(context, "aws_request_id", None),
        }
        logger.thread_safe_append_keys(**{k: v for k, v in keys.items() if isinstance(v, str)})
        try:
            return fn(event, context)
        finally:
            logger.thread_safe_clear_keys()

    return wrapper


_SERVICE: RequestService | None = None


def get_service(event: WebSocketEvent | None = None) -> RequestService:
    """One RequestService per container; the Management API endpoint comes from the settings or the event."""
    global _SERVICE
    if _SERVICE is None:
        settings = Settings.from_env()
        endpoint = settings.apigw_endpoint
        if endpoint is None and event is not None:
            endpoint = event.management_endpoint
        _SERVICE = RequestService.from_env(settings, endpoint_url=endpoint)
    return _SERVICE


def set_service(service: RequestService | None) -> None:
    """Inject a service (tests), or ``None`` to rebuild from the environment on next use."""
    global _SERVICE
    _SERVICE = service


def reset() -> None:
    set_service(None)
