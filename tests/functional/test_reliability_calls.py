"""AWS calls per request (issue 11 goal 3) with issue 10's guarantees intact: the count of one 3-step ``echo``
request through the handlers' code paths (``benchmarks.aws_calls``), per operation, counted by botocore
``before-call`` hooks. Before the request-item ordering: 20 (GetItem 3, Query 6, PutItem 3, UpdateItem 2,
TransactWriteItems 1, StartExecution 1, PostToConnection 4; the same script on commit 0b796cc); before the
route response and the step's shared connection read: 16."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from benchmarks.aws_calls import count_echo_request  # the repository root holds the benchmarks package


def test_one_echo_request_costs_fourteen_calls_and_no_transaction(service: Any, mgmt_api: Any) -> None:
    calls = count_echo_request(service, mgmt_api, steps=3)
    assert dict(calls) == {
        "dynamodb:UpdateItem": 5,  # rate window; mark_running; 2 progress seq claims; the terminal write
        "dynamodb:PutItem": 3,  # the request; 2 progress events
        "dynamodb:Query": 2,  # the user's connections: once for the step's 2 progress events, once for the result
        "stepfunctions:StartExecution": 1,
        "apigatewaymanagementapi:PostToConnection": 3,  # 2 progress, result (the ack is the route response)
    }
    assert sum(calls.values()) == 14


def test_posted_replies_cost_one_more_call(service: Any, mgmt_api: Any) -> None:
    calls = count_echo_request(service, mgmt_api, steps=3, route_response=False)
    assert calls["apigatewaymanagementapi:PostToConnection"] == 4 and sum(calls.values()) == 15


def test_each_more_connection_costs_one_post_per_event(service: Any, mgmt_api: Any) -> None:
    calls = count_echo_request(service, mgmt_api, steps=3, connections=3)
    assert calls["apigatewaymanagementapi:PostToConnection"] == 3 * 3  # 3 events to all (the ack: route response)
    assert calls["dynamodb:Query"] == 2
