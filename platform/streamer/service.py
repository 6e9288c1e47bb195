"""Request lifecycle: submit, status, resume, cancel, and emitting events (store, then push).

Plain logic over the stores and the ConnectionManager; the Lambda handlers adapt AWS events to it.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import boto3
from botocore.exceptions import ClientError

from streamer.aws.connections import ConnectionManager, SendReport
from streamer.aws.store import ConnectionStore, EventStore, RequestStore, TerminalAlreadyError
from streamer.config import Settings
from streamer.errors import ProtocolError
from streamer.limits import clamp_percent
from streamer.models import Request, RequestEvent, RequestRef, payload_hash
from streamer.protocol import MAX_MESSAGE_BYTES, ErrorCode, RequestStatus

if TYPE_CHECKING:
    from mypy_boto3_stepfunctions import SFNClient

__all__ = ["CANCEL_ERROR", "RequestService", "SubmitResult"]

logger = logging.getLogger(__name__)

#: The ``error`` of the StopExecution that the protocol's ``cancel`` makes (an aborted execution carries it).
CANCEL_ERROR = "Streamer.Cancelled"

_TERMINAL_CODES = {
    RequestStatus.FAILED: ErrorCode.STEP_FAILED,
    RequestStatus.CANCELLED: ErrorCode.CANCELLED,
    RequestStatus.TIMED_OUT: ErrorCode.TIMEOUT,
}


@dataclass(frozen=True)
class SubmitResult:
    request: Request
    created: bool

    def ack(self) -> dict[str, Any]:
        return {
            "type": "ack",
            "request_id": self.request.request_id,
            "workflow": self.request.workflow,
            "status": RequestStatus.PENDING.value,
        }


class RequestService:
    def __init__(
        self,
        settings: Settings,
        *,
        connections: ConnectionStore,
        requests: RequestStore,
        events: EventStore,
        manager: ConnectionManager,
        sfn: SFNClient | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.connections = connections
        self.requests = requests
        self.events = events
        self.manager = manager
        self._sfn = sfn
        self.clock = clock

    @classmethod
    def from_env(cls, settings: Settings | None = None, *, endpoint_url: str | None = None) -> RequestService:
        """Build the service with lazily created boto3 clients (one set per Lambda container)."""
        s = settings or Settings.from_env()
        connections = ConnectionStore(s.connections_table)
        return cls(
            s,
            connections=connections,
            requests=RequestStore(s.requests_table),
            events=EventStore(s.events_table, ttl_seconds=s.request_ttl_seconds),
            manager=ConnectionManager(endpoint_url or s.apigw_endpoint, connections=connections),
        )

    @property
    def sfn(self) -> SFNClient:
        if self._sfn is None:
            self._sfn = boto3.client("stepfunctions")
        return self._sfn

    def now(self) -> int:
        return int(self.clock())

    # -- router actions -------------------------------------------------------------------------

    def submit(self, user_id: str, workflow: str, payload: dict[str, Any], request_id: str | None) -> SubmitResult:
        """Store a new request (the table's stream starts its execution) or recognise a retry."""
        now = self.now()
        rid = request_id or uuid.uuid4().hex
        req = Request(
            user_id=user_id,
            request_id=rid,
            workflow=workflow,
            payload=payload,
            payload_hash=payload_hash(workflow, payload),
            status=RequestStatus.PENDING,
            created_at=now,
            updated_at=now,
            expires_at=now + self.settings.request_ttl_seconds,
        )
        if self.requests.create(req):
            return SubmitResult(req, created=True)
        existing = self.requests.get(user_id, rid)
        if existing is None:  # expired by TTL between the two calls: try once more
            if self.requests.create(req):
                return SubmitResult(req, created=True)
            existing = self.requests.get(user_id, rid)
        if existing is None or existing.payload_hash != req.payload_hash:
            raise ProtocolError(
                ErrorCode.CONFLICT,
                f"request_id {rid!r} was already used with a different workflow or payload",
            )
        return SubmitResult(existing, created=False)

    def get_owned(self, user_id: str, request_id: str) -> Request:
        req = self.requests.get(user_id, request_id)
        if req is None:
            raise ProtocolError(ErrorCode.NOT_FOUND, "no such request")
        return req

    def status(self, user_id: str, request_id: str) -> dict[str, Any]:
        req = self.get_owned(user_id, request_id)
        body: dict[str, Any] = {
            "type": "status",
            "request_id": req.request_id,
            "workflow": req.workflow,
            "status": req.status.value,
            "last_seq": self.events.last_seq(req.ref.request_key),
            "created_at": req.created_at,
            "updated_at": req.updated_at,
        }
        if req.status is RequestStatus.SUCCEEDED and req.output is not None:
            body["output"] = req.output
        if req.error_code:
            body["code"] = req.error_code
            body["message"] = req.error_message or ""
        return body

    def replay(self, user_id: str, request_id: str, after_seq: int) -> list[RequestEvent]:
        """Stored events after ``after_seq``, through the terminal one.

        A progress write racing the terminal write can land one seq after it (its status check and its put
        are not one transaction); the replay ends at the terminal event, so it is always the last one seen.
        """
        req = self.get_owned(user_id, request_id)
        out: list[RequestEvent] = []
        for event in self.events.after(req.ref.request_key, after_seq):
            out.append(event)
            if event.body.get("type") in ("result", "error"):
                break
        return out

    def cancel(self, user_id: str, request_id: str) -> bool:
        """Stop the request. True when this call ended it; False when it had already ended."""
        req = self.get_owned(user_id, request_id)
        if req.status.terminal:
            return False
        if req.execution_arn:
            self.stop_execution(req.execution_arn)
        return (
            self.finish(req.ref, RequestStatus.CANCELLED, code=ErrorCode.CANCELLED, message="cancelled by the client")
            is not None
        )

    def stop_execution(self, execution_arn: str) -> None:
        try:
            self.sfn.stop_execution(executionArn=execution_arn, error=CANCEL_ERROR, cause="cancelled by the client")
        except ClientError as exc:
            # Already finished: the terminal event below (conditional) settles who wins.
            if exc.response.get("Error", {}).get("Code") != "ExecutionDoesNotExist":
                raise

    # -- events ---------------------------------------------------------------------------------

    def emit(self, ref: RequestRef, body: dict[str, Any], *, also: list[dict[str, Any]] | None = None) -> RequestEvent:
        """Store an event (assigning its seq), then push it to every connection of the user.

        ``also`` joins other writes to the event's put in one transaction (see ``EventStore.append``).
        """
        event = self.events.append(
            ref.request_key,
            lambda seq: {**body, "request_id": ref.request_id, "seq": seq},
            self.now(),
            also=also,
        )
        self.push(ref.user_id, event.body)
        return event

    def push(self, user_id: str, body: dict[str, Any]) -> SendReport:
        try:
            return self.manager.send_to_user(user_id, body)
        except Exception:  # delivery is best effort: the event is stored and `resume` recovers it
            logger.exception("push failed", extra={"request_id": body.get("request_id")})
            return SendReport()

    def progress(self, ref: RequestRef, step: str, percent: int, message: str) -> RequestEvent | None:
        """A progress event; dropped (None) once the request has ended."""
        req = self.requests.get(ref.user_id, ref.request_id)
        if req is not None and req.status.terminal:
            return None
        pct = clamp_percent(percent)
        return self.emit(ref, {"type": "progress", "step": step, "percent": pct, "message": message})

    def finish(
        self,
        ref: RequestRef,
        status: RequestStatus,
        *,
        output: dict[str, Any] | None = None,
        code: ErrorCode | None = None,
        message: str | None = None,
    ) -> RequestEvent | None:
        """Move the request to a terminal status with its terminal event, exactly once.

        The status change and the terminal event are one transaction, so a request never has two
        terminal events; a second call (a retried notify, a cancel racing the result) returns None.
        """
        if not status.terminal:
            raise ValueError(f"{status} is not terminal")
        now = self.now()
        if status is RequestStatus.SUCCEEDED and _frame_size(output or {}) > MAX_MESSAGE_BYTES - 1024:
            # A result that cannot be delivered in one frame is a typed failure, not a silent loss.
            status, code = RequestStatus.FAILED, ErrorCode.PAYLOAD_TOO_LARGE
            message = f"the result is larger than the {MAX_MESSAGE_BYTES}-byte message limit"
        if status is RequestStatus.SUCCEEDED:
            body: dict[str, Any] = {"type": "result", "status": status.value, "output": output or {}}
            update = self.requests.terminal_update(ref, status, now, output=output or {})
        else:
            code = code or _TERMINAL_CODES[status]
            body = {"type": "error", "status": status.value, "code": code.value, "message": message or ""}
            update = self.requests.terminal_update(ref, status, now, error_code=code.value, error_message=message or "")
        try:
            return self.emit(ref, body, also=[update])
        except TerminalAlreadyError:
            return None

    def reject(self, ref: RequestRef, code: ErrorCode, message: str) -> RequestEvent | None:
        """End a request that never started (e.g. its input is too large for StartExecution)."""
        return self.finish(ref, RequestStatus.FAILED, code=code, message=message)


def _frame_size(value: Any) -> int:
    return len(json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode("utf-8"))
