"""Record real Step Functions histories from a running ``streamer local`` (moto's ASL interpreter).

``python tests/unit/data/observe/record.py [CASE ...]`` starts its own ``streamer local`` on a free port, submits
one request per case (default: every case), waits for its end and writes ``<case>.json`` here:
``{"definition", "describe", "events", "stored"}`` (``stored`` = the request's events as the client received
them; empty for the :data:`DEPLOYED` cases, whose state machines notify nobody). The unit tests of
``streamer.observe.states`` read these files; re-run this after changing the state machines.

:data:`CASES` run the project's workflows through the WebSocket protocol. :data:`DEPLOYED` cases deploy a
state machine of their own next to them (the console benchmark's trick) and submit through
``RequestService.submit`` (the router's path, past its plugin check): a Map of 100 iterations, a Map with
``MaxConcurrency`` whose iterations fail, a Map inside a Parallel branch.
"""

from __future__ import annotations

import asyncio
import copy
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import boto3

from streamer.auth import mint_token
from streamer.client import StreamerClient

HERE = Path(__file__).parent
ROOT = HERE.parents[3]
SECRET = "record-secret-" + "x" * 32
TEXT = "the cat sat on the mat and the dog sat on the log " * 1700  # ~87 K characters: 6 chunks

CASES: dict[str, tuple[str, dict[str, Any], float | None]] = {
    # name: (workflow, payload, cancel after this many seconds)
    "echo_succeeded": ("echo", {"message": "hi", "steps": 3}, None),
    "echo_failed": ("echo", {"message": "boom", "fail": True}, None),
    "echo_retried": ("echo", {"message": "again", "fail_times": 2, "steps": 2}, None),
    "echo_cancelled": ("echo", {"message": "slow", "steps": 20, "delay_ms": 300}, 1.5),
    "textstats_map": ("textstats", {"text": TEXT, "top": 3}, None),
}


def _textstats100() -> dict[str, Any]:
    """textstats with Split replaced by a Pass yielding 100 chunks: the same Map, iterator and notify tasks."""
    definition: dict[str, Any] = copy.deepcopy(json.loads((ROOT / "statemachines" / "textstats.asl.json").read_text()))
    split = definition["States"]["Split"]
    definition["States"]["Split"] = {
        "Type": "Pass",
        "Result": {"chunks": [f"chunk {i} the cat sat on the mat" for i in range(100)], "top": 3},
        "ResultPath": "$.payload",
        "Next": split["Next"],
    }
    return definition


#: Ten items, three at a time; item 6 fails (a Fail state), which fails the Map while 7 and 8 run; the Map's
#: Catch goes on to Recovered.
MAP_FAILURES: dict[str, Any] = {
    "StartAt": "Items",
    "States": {
        "Items": {
            "Type": "Pass",
            "Result": [{"i": i, "fail": i == 6, "wait": 0 if i == 6 else 1} for i in range(10)],
            "ResultPath": "$.items",
            "Next": "Each",
        },
        "Each": {
            "Type": "Map",
            "ItemsPath": "$.items",
            "MaxConcurrency": 3,
            "ItemProcessor": {
                "ProcessorConfig": {"Mode": "INLINE"},
                "StartAt": "Work",
                "States": {
                    "Work": {"Type": "Wait", "SecondsPath": "$.wait", "Next": "Check"},
                    "Check": {
                        "Type": "Choice",
                        "Choices": [{"Variable": "$.fail", "BooleanEquals": True, "Next": "Boom"}],
                        "Default": "Fine",
                    },
                    "Boom": {"Type": "Fail", "Error": "ItemFailed", "Cause": "item 6 fails"},
                    "Fine": {"Type": "Succeed"},
                },
            },
            "Catch": [{"ErrorEquals": ["States.ALL"], "ResultPath": "$.error", "Next": "Recovered"}],
            "Next": "Recovered",
        },
        "Recovered": {"Type": "Pass", "Next": "Done"},
        "Done": {"Type": "Succeed"},
    },
}

#: A Parallel whose second branch is a Map of twelve two-state iterations, then the top-level Succeed.
MAP_IN_PARALLEL: dict[str, Any] = {
    "StartAt": "Prepare",
    "States": {
        "Prepare": {"Type": "Pass", "Result": list(range(12)), "ResultPath": "$.items", "Next": "Fan"},
        "Fan": {
            "Type": "Parallel",
            "Branches": [
                {"StartAt": "Left", "States": {"Left": {"Type": "Pass", "End": True}}},
                {
                    "StartAt": "Each",
                    "States": {
                        "Each": {
                            "Type": "Map",
                            "ItemsPath": "$.items",
                            "ItemProcessor": {
                                "ProcessorConfig": {"Mode": "INLINE"},
                                "StartAt": "Double",
                                "States": {
                                    "Double": {"Type": "Pass", "Next": "Rest"},
                                    "Rest": {"Type": "Wait", "Seconds": 0, "End": True},
                                },
                            },
                            "Next": "After",
                        },
                        "After": {"Type": "Pass", "End": True},
                    },
                },
            ],
            "ResultPath": "$.fan",
            "Next": "Done",
        },
        "Done": {"Type": "Succeed"},
    },
}

#: name: (definition, payload) — deployed as ``streamer-<name>`` and submitted through RequestService.
DEPLOYED: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    "textstats_map100": (_textstats100(), {"text": "unused: Split is a Pass state here"}),
    "map_failures": (MAP_FAILURES, {}),
    "map_in_parallel": (MAP_IN_PARALLEL, {}),
}


#: Absolute paths in recorded stack traces (``/home/me/streamer/platform/...``) become repository-relative.
_ABSOLUTE = re.compile(r"/[^\"\\\s]*/(?=(?:platform|plugins)/)")


def _shorten(value: Any) -> Any:
    """Long strings (the text, its chunks) cut to 40 characters, inside JSON-encoded strings too."""
    if isinstance(value, dict):
        return {k: _shorten(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_shorten(v) for v in value]
    if isinstance(value, str) and len(value) > 300:
        try:
            inner = json.loads(value)
        except ValueError:
            return value[:40] + "…"
        return json.dumps(_shorten(inner)) if isinstance(inner, dict | list) else value[:40] + "…"
    return value


def _jsonable(value: Any) -> Any:
    return _shorten(json.loads(_ABSOLUTE.sub("", json.dumps(value, default=str))))


@contextmanager
def local_stack() -> Iterator[dict[str, str]]:
    """``streamer local`` on a free port; yields its endpoints from the ready line (ws, http, moto, sfn, lambda)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {**os.environ, "STREAMER_JWT_SECRET": SECRET}
    command = [sys.executable, "-m", "streamer.cli", "local", "--port", str(port), "--log-level", "ERROR"]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env, cwd=ROOT)
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            if line.startswith("streamer local ready "):
                parts = line.split()
                fields = dict(p.split("=", 1) for p in parts[4:] if "=" in p)
                yield {"ws": parts[3], "http": parts[3].replace("ws://", "http://"), "pid": str(proc.pid), **fields}
                break
        else:
            raise RuntimeError("streamer local did not start")
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(60)


def _client(service: str, url: str) -> Any:
    return boto3.client(  # type: ignore[call-overload]
        service,
        endpoint_url=url,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )


def _save(name: str, sfn: Any, arn: str, stored: list[dict[str, Any]]) -> None:
    for _ in range(1200):  # the execution may still be finishing (NotifyResult → Succeed)
        describe = sfn.describe_execution(executionArn=arn)
        if describe["status"] != "RUNNING":
            break
        time.sleep(0.1)
    events: list[dict[str, Any]] = []
    for page in sfn.get_paginator("get_execution_history").paginate(executionArn=arn):
        events.extend(page["events"])
    definition = json.loads(sfn.describe_state_machine_for_execution(executionArn=arn)["definition"])
    doc = {"definition": definition, "describe": describe, "events": events, "stored": stored}
    (HERE / f"{name}.json").write_text(json.dumps(_jsonable(doc), indent=1) + "\n")
    print(name, describe["status"], len(events), "events")


def _arn_of(ddb: Any, user: str, rid: str) -> str:
    for _ in range(600):  # the requests table's stream starts the execution
        item = ddb.get_item(TableName="streamer-requests", Key={"user_id": {"S": user}, "request_id": {"S": rid}})
        arn = item.get("Item", {}).get("execution_arn", {}).get("S")
        if arn:
            return str(arn)
        time.sleep(0.1)
    raise RuntimeError(f"{rid}: no execution started")


async def record_protocol(ep: dict[str, str], names: list[str]) -> None:
    sfn, ddb = _client("stepfunctions", ep["sfn"]), _client("dynamodb", ep["moto"])
    user = "recorder"
    async with await StreamerClient.connect(ep["ws"], mint_token(SECRET, user)) as client:
        for name in names:
            workflow, payload, cancel_after = CASES[name]
            rid = await client.submit(workflow, payload, f"rec-{name}-{uuid.uuid4().hex[:8]}")
            stored: list[dict[str, Any]] = []
            if cancel_after is not None:
                await asyncio.sleep(cancel_after)
                await client.send({"action": "cancel", "request_id": rid})
            async for ev in client.events(rid, timeout=120):
                stored.append(ev)
            _save(name, sfn, _arn_of(ddb, user, rid), stored)


def record_deployed(ep: dict[str, str], names: list[str]) -> None:
    from streamer.observe import Sources
    from streamer.observe.localstate import ready_state

    sfn, ddb = _client("stepfunctions", ep["sfn"]), _client("dynamodb", ep["moto"])
    prefix = "arn:aws:states:us-east-1:123456789012:stateMachine:streamer-"
    role = sfn.describe_state_machine(stateMachineArn=prefix + "echo")["roleArn"]
    service = Sources.from_state(ready_state(int(ep["pid"]), ep["ws"], ep)).service
    lambda_arn = "arn:aws:lambda:us-east-1:123456789012:function:"
    for name in names:
        definition, payload = DEPLOYED[name]
        workflow = name.replace("_", "")
        text = json.dumps(definition).replace("${StepRunnerFunctionArn}", lambda_arn + "StepRunnerFunction")
        text = text.replace("${NotifyFunctionArn}", lambda_arn + "NotifyFunction")
        sfn.create_state_machine(name=f"streamer-{workflow}", definition=text, roleArn=role)
        rid = service.submit("recorder", workflow, payload, f"rec-{name}-{uuid.uuid4().hex[:8]}").request.request_id
        _save(name, sfn, _arn_of(ddb, "recorder", rid), [])


def main(names: list[str]) -> None:
    names = names or [*CASES, *DEPLOYED]
    unknown = [n for n in names if n not in CASES and n not in DEPLOYED]
    if unknown:
        raise SystemExit(f"unknown cases {unknown}; known: {[*CASES, *DEPLOYED]}")
    with local_stack() as ep:
        asyncio.run(record_protocol(ep, [n for n in names if n in CASES]))
        record_deployed(ep, [n for n in names if n in DEPLOYED])


if __name__ == "__main__":
    main(sys.argv[1:])
