"""The scheduled reconciler (``ReconcilerFunction``, an EventBridge schedule): one sweep per invocation.

The logic is ``streamer.reconciler``; the event (a scheduled event) carries nothing it needs.
"""

from __future__ import annotations

from typing import Any

from streamer.handlers._runtime import get_logger, get_service, lambda_handler
from streamer.reconciler import Reconciler

__all__ = ["handler"]

logger = get_logger()


@lambda_handler
def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    report = Reconciler(get_service()).sweep()
    logger.info("reconciler sweep done", extra=report.as_dict())
    return report.as_dict()
