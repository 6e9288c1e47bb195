"""One DynamoDB client per container: the service's stores and the quotas share a ClientSlot, created once even
when the first invocations come together."""

from __future__ import annotations

import threading
from typing import Any

import boto3
import pytest

from streamer.aws import store as store_module
from streamer.aws.store import ClientSlot, ConnectionStore
from streamer.config import Settings
from streamer.handlers import _edges
from streamer.service import RequestService


@pytest.fixture
def created(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every client the adapters create (real boto3 clients; nothing is sent)."""
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    made: list[str] = []
    real = boto3.client

    def counting(service: str, *args: Any, **kwargs: Any) -> Any:
        made.append(service)
        return real(service, *args, **kwargs)

    monkeypatch.setattr(store_module.boto3, "client", counting)
    return made


def test_concurrent_first_uses_create_one_client(created: list[str]) -> None:
    slot: ClientSlot[Any] = ClientSlot("dynamodb")
    start = threading.Barrier(8)
    got: list[Any] = []

    def use() -> None:
        start.wait()
        got.append(slot.get())

    threads = [threading.Thread(target=use) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert created == ["dynamodb"]
    assert len({id(c) for c in got}) == 1


def test_the_service_stores_and_the_quotas_share_one_dynamodb_client(created: list[str]) -> None:
    service = RequestService.from_env(Settings(), endpoint_url="http://127.0.0.1:9")
    quotas = _edges.get_quotas(service)
    clients = {id(service.connections.client), id(service.requests.client), id(service.events.client)}
    clients.add(id(quotas.store.client))
    assert len(clients) == 1
    assert created == ["dynamodb"]


def test_a_given_client_is_used_as_is() -> None:
    client = boto3.client("dynamodb", region_name="us-east-1")
    assert ConnectionStore("t", client).client is client
