"""What the edge handlers ($connect, $default) share beyond the service: the quotas.

The quotas follow the container's service (``_runtime.get_service``): a new service (tests inject one per test)
gets new ones, so their lazily created client is bound to the same endpoints as the service's.
"""

from __future__ import annotations

from streamer.quotas import Quotas
from streamer.service import RequestService

__all__ = ["get_quotas"]

_QUOTAS: tuple[RequestService, Quotas] | None = None


def get_quotas(service: RequestService) -> Quotas:
    global _QUOTAS
    if _QUOTAS is None or _QUOTAS[0] is not service:
        _QUOTAS = (service, Quotas.from_settings(service.settings, service.dynamodb, service.admissions))
    return _QUOTAS[1]
