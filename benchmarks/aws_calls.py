"""AWS calls our handlers make for one request, per operation name (issue 11 goal 3; docs/performance.md).

``python -m benchmarks.aws_calls [--steps N] [--connections N] [--json]`` drives one ``echo`` request through the
handlers' own code paths against moto in-process, with one connection open by default:

1. the router (``$default``): ``Router.handle_message`` of the submit frame, then
   ``RequestService.reply_by_route_response`` — the ack is the route's response, as the template deploys it
   (``--post-replies``: ``RequestService.reply``, posted; an older checkout without route responses posts). The
   connection has sent a message before: its rate window exists, as in the steady state;
2. the stream router: ``handlers.stream_router.handler`` with the requests table's INSERT record;
3. the step runner: ``handlers.step_runner.handle`` running the installed ``echo`` step (``steps`` progress
   reports, no delay; the progress throttle sends the first and the last: 2 events, pushed to one read of the
   user's connections);
4. the notify task: ``handlers.notify.handler`` with the step's result.

Every call the boto3 clients make is counted by a botocore ``before-call`` hook (per service and operation),
so the figure is what AWS would bill and wait for. Building the stream record (one GetItem) is test
scaffolding and is not counted. The Step Functions machine is a long Wait state: its own Task invocations
are what (2)-(4) stand for, so moto's interpreter calls nothing itself.

Written against the handler and service APIs that predate issue 10, so the same script measures an older
checkout: ``git worktree add /tmp/before <commit>`` then ``PYTHONPATH=/tmp/before/platform python -m
benchmarks.aws_calls`` (the package on ``PYTHONPATH`` wins over the editable install).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections import Counter
from typing import Any

os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")

__all__ = ["count_echo_request", "main"]

WAIT = json.dumps({"StartAt": "W", "States": {"W": {"Type": "Wait", "Seconds": 3600, "End": True}}})
ROLE = "arn:aws:iam::123456789012:role/sfn"


class Counting:
    """Counts every API call of the given boto3 clients while ``on``."""

    def __init__(self, *clients: Any) -> None:
        self.calls: Counter[str] = Counter()
        self.on = False
        seen: set[int] = set()
        for client in clients:
            if id(client) in seen:
                continue
            seen.add(id(client))
            client.meta.events.register("before-call", self._count)

    def _count(self, model: Any, **kwargs: Any) -> None:
        if self.on:
            self.calls[f"{model.service_model.service_name}:{model.name}"] += 1


def count_echo_request(
    service: Any, mgmt_api: Any, *, steps: int = 3, connections: int = 1, route_response: bool = True
) -> Counter[str]:
    """The calls of one echo request with ``connections`` open connections of its user (see the module doc).

    ``route_response``: the router's reply is its route response, as the template deploys it
    (``STREAMER_REPLY_ROUTE_RESPONSE``), when this checkout has it; else it is posted."""
    from streamer import plugins
    from streamer.handlers import _runtime, notify, step_runner, stream_router
    from streamer.models import Connection
    from streamer.router import Router

    sfn = service.executions.client
    sfn.create_state_machine(name="streamer-echo", definition=WAIT, roleArn=ROLE)
    now = service.now()
    for i in range(connections):
        service.connections.put(
            Connection(connection_id=f"c{i}", user_id="alice", connected_at=now, expires_at=now + 3600)
        )
        mgmt_api.open(f"c{i}")
    _runtime.set_service(service)
    counter = Counting(service.connections.client, service.requests.client, service.events.client, sfn)
    counter_mgmt = Counting(service.manager.client)
    router = Router(service, plugins.workflows, rate_limit_per_minute=service.settings.rate_limit_per_minute)
    frame = json.dumps({"action": "submit", "workflow": "echo", "request_id": "r1", "payload": {"steps": steps}})
    frame = frame.replace('"steps"', '"message": "hi", "steps"')
    try:
        router.handle_message("c0", '{"action": "ping"}')  # the connection's rate window exists (steady state)
        counter.on = counter_mgmt.on = True
        replies = router.handle_message("c0", frame)  # 1. $default
        if route_response and hasattr(service, "reply_by_route_response"):
            answered = [service.reply_by_route_response("c0", replies)]  # returned to API Gateway, not posted
        else:
            service.reply("c0", replies)
            answered = []
        counter.on = counter_mgmt.on = False
        item = service.requests.client.get_item(
            TableName=service.requests.table, Key={"user_id": {"S": "alice"}, "request_id": {"S": "r1"}}
        )["Item"]
        record = {"eventID": "1", "eventName": "INSERT", "dynamodb": {"NewImage": item, "SequenceNumber": "1"}}
        req = service.requests.get("alice", "r1")
        counter.on = counter_mgmt.on = True
        out = stream_router.handler({"Records": [record]}, None)  # 2. the stream router
        assert out == {"batchItemFailures": []}, out
        ref = req.ref.model_dump()
        event = {"step": "echo", "request": ref, "input": req.payload, "attempt": 0}
        # 3. the step runner. The throttle window is longer than the step, so the count does not depend on the
        # machine's speed: the first report at once, the last one when the step ends (2 events), as on an
        # unloaded machine with the default 100 ms window.
        output = step_runner.handle(event, None, interval_ms=60_000)
        notify.handler({"kind": "result", "request": ref, "output": output}, None)  # 4. the result
    finally:
        counter.on = counter_mgmt.on = False
        _runtime.reset()
    received = answered + mgmt_api.received("c0")
    assert received[0]["type"] == "ack" and received[-1]["type"] == "result", received
    return counter.calls + counter_mgmt.calls


def main(argv: list[str] | None = None) -> int:
    from moto import mock_aws

    sys.path.insert(0, os.getcwd())
    from tests.conftest import ManagementApi
    from tests.functional.conftest import create_tables

    from streamer.aws.connections import ConnectionManager
    from streamer.aws.executions import Executions
    from streamer.aws.store import ConnectionStore, EventStore, RequestStore
    from streamer.config import Settings
    from streamer.service import RequestService

    ap = argparse.ArgumentParser(prog="python -m benchmarks.aws_calls", description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=3, help="echo progress reports (default 3)")
    ap.add_argument("--connections", type=int, default=1, help="open connections of the user (default 1)")
    ap.add_argument("--json", action="store_true", help="print the counts as JSON")
    ap.add_argument(
        "--post-replies", action="store_true", help="post the router's reply (no route response)"
    )
    args = ap.parse_args(argv)
    import boto3

    api = ManagementApi()
    try:
        with mock_aws():
            ddb = boto3.client("dynamodb")
            create_tables(ddb)
            s = Settings(rate_limit_per_minute=1000)
            service = RequestService(
                s,
                connections=ConnectionStore(s.connections_table, ddb),
                requests=RequestStore(s.requests_table, ddb),
                events=EventStore(s.events_table, ddb),
                manager=ConnectionManager(api.url),
                executions=Executions(s.state_machine_arn_prefix, boto3.client("stepfunctions")),
            )
            calls = count_echo_request(
                service, api, steps=args.steps, connections=args.connections, route_response=not args.post_replies
            )
    finally:
        api.stop()
    if args.json:
        print(json.dumps({"total": sum(calls.values()), "calls": dict(sorted(calls.items()))}))
    else:
        for op, n in sorted(calls.items()):
            print(f"{op:48} {n:3}")
        print(f"{'total':48} {sum(calls.values()):3}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
