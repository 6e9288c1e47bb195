"""Starting executions: deterministic names and the stream router's per-record logic.

Exactly one execution per request: the execution name is derived from the request's key, so a replayed,
duplicated or reordered stream record can only ever name the same execution, and
``ExecutionAlreadyExists`` for that name is success. (Step Functions keeps Standard execution names unique
per state machine for 90 days: https://docs.aws.amazon.com/step-functions/latest/apireference/API_StartExecution.html)
"""

from __future__ import annotations

import json
import logging
import re
from typing import Any

from botocore.exceptions import ClientError

from streamer.models import RequestRef, request_key
from streamer.protocol import ErrorCode, RequestStatus
from streamer.service import RequestService
from streamer.store import from_ddb

__all__ = ["MAX_EXECUTION_NAME", "execution_input", "execution_name", "start_for_record"]

logger = logging.getLogger(__name__)

#: Execution names: 1 to 80 characters from [A-Za-z0-9_-] (other characters break CloudWatch metrics).
MAX_EXECUTION_NAME = 80
_NAME_RE = re.compile(r"^[A-Za-z0-9_-]{1,80}$")


def execution_name(user_id: str, request_id: str) -> str:
    """``<request_id prefix>-<32 hex of the request key>``: readable, unique per (user, request), ≤ 80."""
    readable = re.sub(r"[^A-Za-z0-9_-]", "_", request_id)[:40]
    name = f"{readable}-{request_key(user_id, request_id)}"
    assert _NAME_RE.match(name), name
    return name


def execution_arn(state_machine_arn: str, name: str) -> str:
    return state_machine_arn.replace(":stateMachine:", ":execution:", 1) + ":" + name


def execution_input(ref: RequestRef, payload: dict[str, Any]) -> str:
    return json.dumps({"request": ref.model_dump(), "payload": payload}, separators=(",", ":"))


def start_for_record(service: RequestService, record: dict[str, Any]) -> str:
    """Handle one DynamoDB stream record of the requests table. Returns what was done (for logs/tests).

    Raises on failures worth retrying (the record then appears in ``batchItemFailures``).
    """
    if record.get("eventName") != "INSERT":
        return "ignored"
    image = record.get("dynamodb", {}).get("NewImage")
    if not image:
        raise ValueError("INSERT record without NewImage (stream view type must include new images)")
    item = from_ddb(image)
    user_id, request_id, workflow = item["user_id"], item["request_id"], item["workflow"]
    req = service.requests.get(user_id, request_id)
    if req is None or req.status is not RequestStatus.PENDING:
        return "skipped"  # already started, cancelled, ended or expired
    ref = req.ref
    body = execution_input(ref, req.payload)
    limit = service.settings.max_execution_input_bytes
    if len(body.encode()) > limit:
        service.reject(
            ref,
            ErrorCode.PAYLOAD_TOO_LARGE,
            f"the execution input would be {len(body.encode())} bytes; Step Functions accepts {limit}",
        )
        return "rejected"
    sm_arn = service.settings.state_machine_arn(workflow)
    name = execution_name(user_id, request_id)
    try:
        arn = service.sfn.start_execution(stateMachineArn=sm_arn, name=name, input=body)["executionArn"]
    except ClientError as exc:
        code = exc.response.get("Error", {}).get("Code")
        if code == "ExecutionAlreadyExists":
            arn = execution_arn(sm_arn, name)
        elif code == "StateMachineDoesNotExist":
            service.reject(ref, ErrorCode.UNKNOWN_WORKFLOW, f"workflow {workflow!r} is not deployed")
            return "rejected"
        else:
            raise
    if not service.requests.mark_running(user_id, request_id, arn, service.now()):
        current = service.requests.get(user_id, request_id)
        if current is not None and current.status is RequestStatus.CANCELLED:
            service.stop_execution(arn)  # cancelled while we were starting it
            return "cancelled"
    return "started"
