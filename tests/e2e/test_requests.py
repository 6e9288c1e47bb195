"""The vertical slice over real sockets: connect → submit → execution → progress → result.

`streamer local` runs as a subprocess (``local_stack`` fixture); every client here is a real WebSocket
client or a real boto3 client pointed at the local endpoints.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from typing import Any

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from streamer.aws.executions import execution_name
from streamer.client import StreamerClient, StreamerClientError

pytestmark = pytest.mark.timeout(240)


def run(coro: Any) -> Any:
    return asyncio.run(coro)


async def collect(client: StreamerClient, rid: str, **kw: Any) -> list[dict[str, Any]]:
    return [ev async for ev in client.events(rid, **kw)]


def executions_of(stack: Any, workflow: str, name: str) -> list[dict[str, Any]]:
    sfn = stack.client("stepfunctions")
    arn = f"arn:aws:states:us-east-1:123456789012:stateMachine:streamer-{workflow}"
    return [e for e in sfn.list_executions(stateMachineArn=arn)["executions"] if e["name"] == name]


def execution_name_of(stack: Any, user: str, rid: str) -> str:
    """The execution name of the user's request: it includes the request's incarnation, chosen at submit."""
    key = {"user_id": {"S": user}, "request_id": {"S": rid}}
    item = stack.client("dynamodb").get_item(TableName="streamer-requests", Key=key, ConsistentRead=True)["Item"]
    return execution_name(user, rid, item.get("incarnation", {}).get("S", ""))


def wait_status(stack: Any, workflow: str, name: str, status: str, timeout: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        (ex,) = executions_of(stack, workflow, name)
        if ex["status"] == status or time.monotonic() > deadline:
            return ex
        time.sleep(0.2)


def test_connect_with_header_and_query_token(local_stack: Any) -> None:
    async def main() -> None:
        user = local_stack.unique_user()
        for via in ("header", "query"):
            async with await StreamerClient.connect(local_stack.ws_url, local_stack.token(user), via=via) as c:
                assert await c.call({"action": "ping"}) == {"type": "pong"}
                if via == "header":
                    assert c.ws.subprotocol == "streamer.v1"

    run(main())


@pytest.mark.parametrize("bad", ["garbage", "wrong-secret", "expired"])
def test_bad_token_is_refused_and_nothing_is_stored(local_stack: Any, bad: str) -> None:
    from streamer.auth import mint_token

    user = local_stack.unique_user("refused")
    tok = {
        "garbage": "not-a-jwt",
        "wrong-secret": mint_token("another-secret-" + "y" * 32, user),
        "expired": mint_token(local_stack.secret, user, ttl_seconds=-3600),
    }[bad]

    async def main() -> None:
        with pytest.raises(InvalidStatus) as exc:
            await connect(local_stack.ws_url, subprotocols=["streamer.v1", f"bearer.{tok}"])  # type: ignore[list-item]
        assert exc.value.response.status_code == 401

    run(main())
    assert local_stack.connection_ids(user, timeout=0.5) == []


def test_echo_five_steps_end_to_end(local_stack: Any) -> None:
    async def main() -> list[dict[str, Any]]:
        async with await StreamerClient.connect(local_stack.ws_url, local_stack.token(local_stack.unique_user())) as c:
            workflows = await c.call({"action": "workflows"})
            assert {"echo", "textstats"} <= {w["name"] for w in workflows["workflows"]}
            rid = await c.submit("echo", {"message": "hello", "steps": 5, "delay_ms": 150})
            events = await collect(c, rid, timeout=90)
            status = await c.call({"action": "status", "request_id": rid})
            assert status["status"] == "SUCCEEDED" and status["last_seq"] == events[-1]["seq"]
            return events

    events = run(main())
    progress = [e for e in events if e["type"] == "progress"]
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    assert len(progress) == 5
    assert [e["percent"] for e in progress] == sorted(e["percent"] for e in progress)
    assert progress[-1]["percent"] == 100
    assert events[-1]["type"] == "result" and events[-1]["output"] == {"message": "hello"}


def test_textstats_is_correct(local_stack: Any) -> None:
    text = "The cat and the hat. THE end, isn't it? Ünïcode ünïcode 42 42 42\n" * 30

    async def main() -> dict[str, Any]:
        async with await StreamerClient.connect(local_stack.ws_url, local_stack.token(local_stack.unique_user())) as c:
            rid = await c.submit("textstats", {"text": text, "top": 3})
            return (await collect(c, rid, timeout=120))[-1]

    final = run(main())
    assert final["type"] == "result", final
    import re

    words = [w.casefold() for w in re.findall(r"[\w']+", text) if not re.search(r"_", w)]
    counts = Counter(words)
    top = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:3]
    assert final["output"] == {"words": len(words), "unique": len(counts), "top": [list(t) for t in top]}


def test_same_request_id_twice_starts_one_execution_and_conflicts_on_other_payload(local_stack: Any) -> None:
    user = local_stack.unique_user()

    async def main() -> None:
        async with await StreamerClient.connect(local_stack.ws_url, local_stack.token(user)) as c:
            payload = {"message": "once", "steps": 1}
            a = await c.call({"action": "submit", "workflow": "echo", "payload": payload, "request_id": "dup-1"})
            b = await c.call({"action": "submit", "workflow": "echo", "payload": payload, "request_id": "dup-1"})
            assert a == b == {"type": "ack", "request_id": "dup-1", "workflow": "echo", "status": "PENDING"}
            with pytest.raises(StreamerClientError) as exc:
                await c.submit("echo", {"message": "other"}, "dup-1")
            assert exc.value.code == "CONFLICT"
            events = await collect(c, "dup-1", timeout=90)
            assert events[-1]["type"] == "result"

    run(main())
    assert len(executions_of(local_stack, "echo", execution_name_of(local_stack, user, "dup-1"))) == 1


def test_transient_failure_is_retried_and_permanent_failure_is_step_failed(local_stack: Any) -> None:
    async def main() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        async with await StreamerClient.connect(local_stack.ws_url, local_stack.token(local_stack.unique_user())) as c:
            flaky = await c.submit("echo", {"message": "again", "steps": 1, "fail_times": 1})
            broken = await c.submit("echo", {"message": "no", "fail": True})
            return await collect(c, flaky, timeout=120), await collect(c, broken, timeout=120)

    flaky, broken = run(main())
    assert flaky[-1]["type"] == "result" and flaky[-1]["output"] == {"message": "again"}
    assert broken[-1]["type"] == "error"
    assert broken[-1]["status"] == "FAILED" and broken[-1]["code"] == "STEP_FAILED"
    assert "Traceback" not in broken[-1]["message"]


def test_resume_after_reconnect_and_two_connections_both_receive(local_stack: Any) -> None:
    user = local_stack.unique_user()

    async def main() -> None:
        token = local_stack.token(user)
        first = await StreamerClient.connect(local_stack.ws_url, token)
        watcher = await StreamerClient.connect(local_stack.ws_url, token)
        rid = await first.submit("echo", {"message": "resumable", "steps": 8, "delay_ms": 400})
        seen: list[dict[str, Any]] = []
        async for ev in first.events(rid, timeout=60):
            seen.append(ev)
            if len(seen) == 2:
                break
        await first.close()  # lost connection mid-execution
        await asyncio.sleep(1.0)  # events keep being produced meanwhile
        second = await StreamerClient.connect(local_stack.ws_url, token)
        last = seen[-1]["seq"]
        await second.resume(rid, last)
        rest = await collect(second, rid, after_seq=last, timeout=90)
        watched = await collect(watcher, rid, timeout=90)
        await second.close()
        await watcher.close()
        assert all(e["seq"] > last for e in rest)
        combined = seen + rest
        assert [e["seq"] for e in combined] == list(range(1, len(combined) + 1))
        assert combined[-1]["type"] == "result"
        # The second connection of the user received the same events, one event per seq.
        assert watched == combined

    run(main())


def test_cancel_running_request(local_stack: Any) -> None:
    user = local_stack.unique_user()

    async def main() -> tuple[str, list[dict[str, Any]]]:
        async with await StreamerClient.connect(local_stack.ws_url, local_stack.token(user)) as c:
            rid = await c.submit("echo", {"message": "long", "steps": 20, "delay_ms": 500})
            async for ev in c.events(rid, timeout=60):
                if ev["type"] == "progress":
                    break
            await c.send({"action": "cancel", "request_id": rid})
            rest = await collect(c, rid, after_seq=ev["seq"], timeout=60)
            return rid, rest

    rid, rest = run(main())
    assert rest[-1]["type"] == "error" and rest[-1]["status"] == "CANCELLED" and rest[-1]["code"] == "CANCELLED"
    ex = wait_status(local_stack, "echo", execution_name_of(local_stack, user, rid), "ABORTED")
    assert ex["status"] == "ABORTED"


def test_stale_connection_row_is_removed_on_410(local_stack: Any) -> None:
    user = local_stack.unique_user()
    ddb = local_stack.client("dynamodb")
    now = int(time.time())
    ddb.put_item(
        TableName="streamer-connections",
        Item={
            "connection_id": {"S": "vanished-without-disconnect"},
            "user_id": {"S": user},
            "connected_at": {"N": str(now)},
            "expires_at": {"N": str(now + 600)},
        },
    )

    async def main() -> list[dict[str, Any]]:
        async with await StreamerClient.connect(local_stack.ws_url, local_stack.token(user)) as c:
            rid = await c.submit("echo", {"message": "x", "steps": 1})
            return await collect(c, rid, timeout=90)

    events = run(main())
    assert events[-1]["type"] == "result"
    assert (
        ddb.get_item(TableName="streamer-connections", Key={"connection_id": {"S": "vanished-without-disconnect"}}).get(
            "Item"
        )
        is None
    )


def test_users_never_see_each_others_requests(local_stack: Any) -> None:
    async def main() -> None:
        alice = await StreamerClient.connect(local_stack.ws_url, local_stack.token(local_stack.unique_user("alice")))
        mallory = await StreamerClient.connect(local_stack.ws_url, local_stack.token(local_stack.unique_user("mal")))
        rid = await alice.submit("echo", {"message": "private", "steps": 2})
        for action in ("status", "cancel", "resume"):
            with pytest.raises(StreamerClientError) as exc:
                await mallory.call(
                    {"action": action, "request_id": rid, **({"after_seq": 0} if action == "resume" else {})}
                )
            assert exc.value.code == "NOT_FOUND"
        await collect(alice, rid, timeout=90)
        await asyncio.sleep(0.5)
        assert mallory._replies.empty() and not mallory._events
        await alice.close()
        await mallory.close()

    run(main())


def test_bad_frames_get_typed_errors_and_connection_stays_usable(local_stack: Any) -> None:
    async def main() -> None:
        async with await StreamerClient.connect(local_stack.ws_url, local_stack.token(local_stack.unique_user())) as c:
            for raw, code in [
                ("{nope", "VALIDATION_ERROR"),
                (json.dumps({"action": "fly"}), "UNKNOWN_ACTION"),
                (json.dumps({"action": "submit", "workflow": "nope"}), "UNKNOWN_WORKFLOW"),
                (json.dumps({"action": "submit", "workflow": "echo", "payload": {"steps": 0}}), "VALIDATION_ERROR"),
            ]:
                await c.ws.send(raw)
                reply = await c.reply()
                assert reply["type"] == "error" and reply["code"] == code, reply
            assert await c.call({"action": "ping"}) == {"type": "pong"}

    run(main())


def test_execution_stopped_outside_the_protocol_still_ends_the_request(local_stack: Any) -> None:
    """StopExecution straight on Step Functions (console, CLI), not the protocol's `cancel`: the execution's
    status change (EventBridge, played by `streamer local`) gives the request its terminal event."""
    user = local_stack.unique_user()
    sfn = local_stack.client("stepfunctions")
    machine = "arn:aws:states:us-east-1:123456789012:stateMachine:streamer-echo"

    async def main() -> tuple[str, list[dict[str, Any]], dict[str, Any]]:
        async with await StreamerClient.connect(local_stack.ws_url, local_stack.token(user)) as c:
            rid = await c.submit("echo", {"message": "x", "steps": 20, "delay_ms": 500})
            async for ev in c.events(rid, timeout=60):
                if ev["type"] == "progress":
                    break
            arn = machine.replace(":stateMachine:", ":execution:") + ":" + execution_name_of(local_stack, user, rid)
            await asyncio.to_thread(sfn.stop_execution, executionArn=arn, error="Console", cause="stopped by hand")
            rest = await collect(c, rid, after_seq=ev["seq"], timeout=90)
            return rid, rest, await c.call({"action": "status", "request_id": rid})

    rid, rest, status = run(main())
    assert rest[-1]["type"] == "error", rest[-1]
    assert (rest[-1]["status"], rest[-1]["code"]) == ("CANCELLED", "CANCELLED")
    assert rest[-1]["message"] == "the execution was stopped"
    assert status["status"] == "CANCELLED" and status["last_seq"] == rest[-1]["seq"]
    assert wait_status(local_stack, "echo", execution_name_of(local_stack, user, rid), "ABORTED")["status"] == "ABORTED"
