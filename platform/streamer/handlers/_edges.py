"""What the edge handlers ($connect, $default) share beyond the service: the quotas and the closer.

Both follow the container's service (``_runtime.get_service``): a new service (tests inject one per test)
gets new ones, so their lazily created clients are bound to the same endpoints as the service's.
"""

from __future__ import annotations

from streamer.aws.connections import ConnectionManager
from streamer.events import WebSocketEvent
from streamer.quotas import Quotas
from streamer.service import RequestService

__all__ = ["get_closer", "get_quotas"]

_QUOTAS: tuple[RequestService, Quotas] | None = None
_CLOSER: tuple[RequestService, ConnectionManager] | None = None


def get_quotas(service: RequestService) -> Quotas:
    global _QUOTAS
    if _QUOTAS is None or _QUOTAS[0] is not service:
        _QUOTAS = (service, Quotas.from_settings(service.settings))
    return _QUOTAS[1]


def get_closer(service: RequestService, event: WebSocketEvent) -> ConnectionManager:
    """A Management API adapter for ``DELETE @connections/{id}`` (the settings' endpoint, else the event's)."""
    global _CLOSER
    if _CLOSER is None or _CLOSER[0] is not service:
        endpoint = service.settings.apigw_endpoint or event.management_endpoint
        _CLOSER = (service, ConnectionManager(endpoint, max_retries=2))
    return _CLOSER[1]
