"""Functional tier: handlers and services against moto (in-process) with tables from the template."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto import mock_aws

from streamer.aws.connections import ConnectionManager
from streamer.aws.executions import Executions
from streamer.aws.store import ConnectionStore, EventStore, RequestStore
from streamer.config import Settings
from streamer.deploy.template import table_definitions
from streamer.local.moto_atomic import reliable_stop, serialize_dynamodb, unique_execution_names
from streamer.local.moto_server import (
    speed_up_dynamodb_conditions,
    speed_up_dynamodb_queries,
    speed_up_dynamodb_responses,
    speed_up_dynamodb_updates,
    speed_up_dynamodb_validation,
    speed_up_sfn_paths,
)
from streamer.service import RequestService

EVENTS_DIR = Path(__file__).resolve().parents[1] / "events"
TABLE_NAMES = {
    "ConnectionsTable": "streamer-connections",
    "RequestsTable": "streamer-requests",
    "EventsTable": "streamer-events",
    "QuotasTable": "streamer-quotas",
}


def create_tables(client: Any) -> None:
    for logical_id, spec in table_definitions().items():
        spec = dict(spec)
        ttl = spec.pop("TimeToLiveSpecification", None)
        name = TABLE_NAMES[logical_id]
        client.create_table(TableName=name, **spec)
        if ttl:
            client.update_time_to_live(TableName=name, TimeToLiveSpecification=ttl)


@pytest.fixture
def aws() -> Iterator[None]:
    serialize_dynamodb()  # moto's single-item writes atomic, as DynamoDB's are
    reliable_stop()  # and a StopExecution right after StartExecution stops it, as on AWS
    unique_execution_names()  # and one execution name is started once
    speed_up_dynamodb_queries()  # the local stack's Query (one partition read, same answers)
    speed_up_dynamodb_updates()  # and its UpdateItem (each expression parsed once)
    speed_up_dynamodb_validation()  # and validated as the local stack does (expression-only checks kept)
    speed_up_dynamodb_conditions()  # and its condition expressions (each lexed once)
    speed_up_sfn_paths()  # and the state machines' JSONPaths (each parsed once)
    speed_up_dynamodb_responses(check=True)  # and its item responses, each compared with moto's serializer
    with mock_aws(config={"stepfunctions": {"execute_state_machine": True}}):
        yield


@pytest.fixture
def ddb(aws: None) -> Any:
    client = boto3.client("dynamodb", region_name="us-east-1")
    create_tables(client)
    return client


@pytest.fixture
def settings() -> Settings:
    return Settings(rate_limit_per_minute=1000)


@pytest.fixture
def service(ddb: Any, mgmt_api: Any, settings: Settings) -> RequestService:
    connections = ConnectionStore(settings.connections_table, ddb)
    return RequestService(
        settings,
        connections=connections,
        requests=RequestStore(settings.requests_table, ddb),
        events=EventStore(settings.events_table, ddb),
        manager=ConnectionManager(mgmt_api.url, max_retries=2),
        executions=Executions(
            settings.state_machine_arn_prefix, boto3.client("stepfunctions", region_name="us-east-1")
        ),
    )


def record_dynamodb_calls(ddb: Any) -> list[str]:
    """From now on, ``operation:table`` of each call ``ddb`` (a boto3 DynamoDB client) makes, in order (a
    ``BatchWriteItem``'s tables joined by commas)."""
    calls: list[str] = []

    def record(params: dict[str, Any], model: Any, **_: Any) -> None:
        tables = params.get("TableName") or ",".join(params.get("RequestItems", {}))
        calls.append(f"{model.name}:{tables}")

    ddb.meta.events.register("provide-client-params.dynamodb", record)
    return calls


def load_event(name: str, **overrides: Any) -> dict[str, Any]:
    """A recorded API Gateway WebSocket event from tests/events/, with top-level/context overrides."""
    event: dict[str, Any] = json.loads((EVENTS_DIR / f"{name}.json").read_text())
    ctx_over = overrides.pop("requestContext", {})
    event.update(overrides)
    event["requestContext"].update(ctx_over)
    return event
