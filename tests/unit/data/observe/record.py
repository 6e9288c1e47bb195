"""Record real Step Functions histories from a running ``streamer local`` (moto's ASL interpreter).

``python tests/unit/data/observe/record.py WS_URL MOTO_URL SECRET`` submits one request per case, waits for
its terminal event and writes ``<case>.json`` here: ``{"definition", "describe", "events", "stored"}``
(``stored`` = the request's events as the client received them). The unit tests of
``streamer.observe.states`` read these files; re-run this after changing the state machines.
"""

from __future__ import annotations

import asyncio
import json
import re
import sys
import uuid
from pathlib import Path
from typing import Any

import boto3

from streamer.auth import mint_token
from streamer.client import StreamerClient

HERE = Path(__file__).parent
TEXT = "the cat sat on the mat and the dog sat on the log " * 1700  # ~87 K characters: 6 chunks

CASES: dict[str, tuple[str, dict[str, Any], float | None]] = {
    # name: (workflow, payload, cancel after this many seconds)
    "echo_succeeded": ("echo", {"message": "hi", "steps": 3}, None),
    "echo_failed": ("echo", {"message": "boom", "fail": True}, None),
    "echo_retried": ("echo", {"message": "again", "fail_times": 2, "steps": 2}, None),
    "echo_cancelled": ("echo", {"message": "slow", "steps": 20, "delay_ms": 300}, 1.5),
    "textstats_map": ("textstats", {"text": TEXT, "top": 3}, None),
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


async def record(ws_url: str, moto_url: str, secret: str) -> None:
    sfn = boto3.client(
        "stepfunctions",
        endpoint_url=moto_url,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    ddb = boto3.client(
        "dynamodb",
        endpoint_url=moto_url,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    user = "recorder"
    async with await StreamerClient.connect(ws_url, mint_token(secret, user)) as client:
        for name, (workflow, payload, cancel_after) in CASES.items():
            rid = await client.submit(workflow, payload, f"rec-{name}-{uuid.uuid4().hex[:8]}")
            stored: list[dict[str, Any]] = []
            if cancel_after is not None:
                await asyncio.sleep(cancel_after)
                await client.send({"action": "cancel", "request_id": rid})
            async for ev in client.events(rid, timeout=120):
                stored.append(ev)
            item = ddb.get_item(TableName="streamer-requests", Key={"user_id": {"S": user}, "request_id": {"S": rid}})[
                "Item"
            ]
            arn = item["execution_arn"]["S"]
            for _ in range(100):  # the execution may still be finishing (NotifyResult → Succeed)
                describe = sfn.describe_execution(executionArn=arn)
                if describe["status"] != "RUNNING":
                    break
                await asyncio.sleep(0.1)
            events = sfn.get_execution_history(executionArn=arn)["events"]
            definition = json.loads(sfn.describe_state_machine_for_execution(executionArn=arn)["definition"])
            doc = {"definition": definition, "describe": describe, "events": events, "stored": stored}
            (HERE / f"{name}.json").write_text(json.dumps(_jsonable(doc), indent=1) + "\n")
            print(name, describe["status"], len(events), "events")


if __name__ == "__main__":
    asyncio.run(record(sys.argv[1], sys.argv[2], sys.argv[3]))
