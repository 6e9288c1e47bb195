"""The per-connection rate and the per-user message quota on the running local stack, on both of its paths:
the routes in the gateway's process with the windows in its memory (the default), and the parity path through
the Lambda endpoint with the windows in DynamoDB (``STREAMER_LOCAL_INVOKE=http``) — the same refusals. The
connections are admitted likewise (``streamer.admission``): in the gateway's memory, or in the quota table."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import pytest
from tests.e2e.conftest import LocalStack, free_port
from websockets.asyncio.client import ClientConnection, connect
from websockets.typing import Subprotocol

PING = json.dumps({"action": "ping"})


def _protocols(token: str) -> list[Subprotocol]:
    return [Subprotocol("streamer.v1"), Subprotocol(f"bearer.{token}")]


async def _open(stack: LocalStack, user: str) -> ClientConnection:
    return await connect(stack.ws_url, subprotocols=_protocols(stack.token(user)))


async def _pings(ws: ClientConnection, n: int) -> list[dict[str, Any]]:
    for _ in range(n):
        await ws.send(PING)
    return [json.loads(await asyncio.wait_for(ws.recv(), 30)) for _ in range(n)]


async def _per_user_round(stack: LocalStack, user: str) -> tuple[list[dict[str, Any]], bool]:
    """Six pings of one user over two fresh connections, sent together at the start of a second; whether all
    six were answered within that second."""
    a, b = await _open(stack, user), await _open(stack, user)
    try:
        await asyncio.sleep(1 - time.time() % 1 + 0.02)
        second = int(time.time())
        replies = [r for rs in await asyncio.gather(_pings(a, 3), _pings(b, 3)) for r in rs]
        return replies, int(time.time()) == second
    finally:
        await a.close()
        await b.close()


async def _per_connection(stack: LocalStack, user: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Eight pings on one connection, at most three a second (under the user's quota of four); and the user's
    connection rows, read while the connection is open."""
    if time.time() % 60 > 50:  # not across a minute's boundary: the window is per minute
        await asyncio.sleep(60 - time.time() % 60 + 0.1)
    ws = await _open(stack, user)
    replies: list[dict[str, Any]] = []
    async with ws:
        for _ in range(8):
            replies += await _pings(ws, 1)
            await asyncio.sleep(0.35)
        rows = await asyncio.to_thread(_rows, stack, user)
    return replies, rows


def _rows(stack: LocalStack, user: str) -> list[dict[str, Any]]:
    ddb = stack.client("dynamodb")
    try:
        items: list[dict[str, Any]] = ddb.query(
            TableName="streamer-connections",
            IndexName="by_user",
            KeyConditionExpression="user_id = :u",
            ExpressionAttributeValues={":u": {"S": user}},
        )["Items"]
        return items
    finally:
        ddb.close()


@pytest.mark.parametrize(("mode", "windows"), [("inprocess", "memory"), ("http", "dynamodb")])
def test_the_rate_and_the_message_quota_refuse_alike_on_both_paths(
    start_local: Any, mode: str, windows: str
) -> None:
    stack = start_local(
        "--port",
        str(free_port()),
        env={
            "STREAMER_LOCAL_INVOKE": mode,
            "STREAMER_RATE_LIMIT_PER_MINUTE": "6",
            "STREAMER_MAX_MESSAGES_PER_SECOND_PER_USER": "4",
        },
    )
    quota_user, rate_user = stack.unique_user("quota"), stack.unique_user("rate")

    async def run() -> tuple[list[dict[str, Any]], tuple[list[dict[str, Any]], list[dict[str, Any]]]]:
        for _ in range(5):  # a round that straddled a second proves nothing exact: try again
            replies, one_second = await _per_user_round(stack, quota_user)
            if one_second:
                break
        assert one_second, "no round of six pings was answered within one second"
        return replies, await _per_connection(stack, rate_user)

    per_user, (per_connection, rows) = asyncio.run(run())
    assert sorted(r.get("type", "") for r in per_user) == ["error"] * 2 + ["pong"] * 4
    for r in per_user:
        if r["type"] == "error":
            assert r["code"] == "RATE_LIMITED"
            assert r["details"] == {"quota": "messages_per_second", "limit": 4}
    assert [r.get("type") for r in per_connection] == ["pong"] * 6 + ["error"] * 2
    assert all(r["details"] == {"limit_per_minute": 6} for r in per_connection[6:])

    # Where the windows were counted: in the gateway's memory, or on the connection row and the quota table.
    ddb = stack.client("dynamodb")
    try:
        quota_item = ddb.get_item(TableName="streamer-quotas", Key={"user_id": {"S": quota_user}}).get("Item", {})
    finally:
        ddb.close()
    assert ("msg_window" in quota_item) == (windows == "dynamodb")
    # And where its connections were admitted (streamer.admission): the user's slots in the gateway's memory,
    # or in the quota item's map; the rows are in the table either way.
    assert ("connections" in quota_item) == (windows == "dynamodb")
    assert len(rows) == 1
    assert ("rate_window" in rows[0]) == (windows == "dynamodb")
