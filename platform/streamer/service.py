"""The request lifecycle, the one thing handlers call for request logic.

Connections (connect, disconnect, who is asking and how often, replies), the router's actions (submit, status,
resume, cancel), starting a request's execution (the stream router) and ending it when the execution ended
without its notify task (EventBridge), and events (store, then push to every connection of the user).

Plain logic over its injected collaborators — the three DynamoDB stores, the ConnectionManager (Management
API) and the Step Functions adapter — none of which reaches into another; nothing outside reaches through it.

Ordering (docs/reliability.md): every change of a request is a conditional write on its item — submit
creates it PENDING, the stream router's ``mark_running`` needs PENDING, each event claims its seq only while
the request has not ended, the terminal write needs it not ended. Whoever loses a race learns it from the
condition and acts: ``start`` stops the execution it started for a request that no longer wants it, a
``cancel`` that ends a RUNNING request stops the execution the request names, and nothing is stored after
the terminal event.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, TypedDict, Unpack

from pydantic import ValidationError

from streamer import metrics
from streamer.admission import MemoryConnections
from streamer.aws.connections import ConnectionManager, SendReport, encode_message
from streamer.aws.executions import (
    CANCEL_CAUSE,
    ENDING_STATUSES,
    ExecutionNameTakenError,
    Executions,
    WorkflowNotDeployedError,
    execution_arn,
    execution_input,
    execution_name,
    terminal_of,
)
from streamer.aws.store import ClientSlot, ConnectionStore, EventStore, RequestStore
from streamer.config import Settings
from streamer.errors import ProtocolError, StreamerError, TerminalAlreadyError, WebSocketDisconnectedError
from streamer.events import ExecutionStatusDetail, RequestInsert
from streamer.limits import MAX_CONNECTION_SECONDS, PROGRESS_AUDIENCE_SECONDS, clamp_percent
from streamer.models import OPEN_SHARDS, Connection, Request, RequestEvent, RequestRef, new_incarnation, payload_hash
from streamer.protocol import MAX_MESSAGE_BYTES, ErrorCode, RequestStatus
from streamer.windows import MEMORY, MemoryWindows

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

    from streamer.quotas import Quotas

__all__ = ["Admission", "Audience", "Ending", "RequestService", "StepProgress", "SubmitResult"]

logger = logging.getLogger(__name__)

_TERMINAL_CODES = {
    RequestStatus.FAILED: ErrorCode.STEP_FAILED,
    RequestStatus.CANCELLED: ErrorCode.CANCELLED,
    RequestStatus.TIMED_OUT: ErrorCode.TIMEOUT,
}


@dataclass(frozen=True)
class Admission:
    """What :meth:`RequestService.connect` decided: the stored connection, or why nothing was stored."""

    connection: Connection | None
    refused: Literal["expired", "quota"] | None = None
    reason: str = ""


class Ending(TypedDict, total=False):
    """How a request ends, besides its status: a SUCCEEDED request's output, else an error code and message."""

    output: dict[str, Any] | None
    code: ErrorCode | None
    message: str | None


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


class Audience:
    """A user's connection ids, read once and reused for ``max_age`` seconds (thread-safe): what one step
    invocation's progress events are pushed to, one DynamoDB ``Query`` for a burst of events instead of one per
    event. Connections found gone are dropped at once; one opened meanwhile is found by the next read, at most
    ``max_age`` later (``resume`` returns what it missed). Terminal events never use one: they read afresh."""

    def __init__(
        self, read: Callable[[], list[str]], max_age: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._read = read
        self.max_age = max_age
        self._clock = clock
        self._lock = threading.Lock()
        self._ids: list[str] | None = None
        self._read_at = 0.0

    def ids(self) -> list[str]:
        with self._lock:
            now = self._clock()
            if self._ids is None or now - self._read_at >= self.max_age:
                self._ids, self._read_at = self._read(), now
            return list(self._ids)

    def drop(self, gone: list[str]) -> None:
        with self._lock:
            if self._ids is not None and gone:
                self._ids = [c for c in self._ids if c not in gone]


class StepProgress:
    """The :class:`~streamer.runner.ProgressSink` of one step invocation: :meth:`RequestService.progress`
    with one :class:`Audience` per user for the invocation's events."""

    def __init__(self, service: RequestService) -> None:
        self.service = service
        self._audiences: dict[str, Audience] = {}

    def progress(self, ref: RequestRef, step: str, percent: int, message: str) -> RequestEvent | None:
        audience = self._audiences.get(ref.user_id)
        if audience is None:  # built once per user, not once per event
            audience = self._audiences.setdefault(ref.user_id, self.service.audience(ref.user_id))
        return self.service.progress(ref, step, percent, message, audience)


class RequestService:
    def __init__(
        self,
        settings: Settings,
        *,
        connections: ConnectionStore,
        requests: RequestStore,
        events: EventStore,
        manager: ConnectionManager,
        executions: Executions,
        clock: Callable[[], float] = time.time,
        incarnations: Callable[[], str] = new_incarnation,
    ) -> None:
        self.settings = settings
        self.connections = connections
        self.requests = requests
        self.events = events
        self.manager = manager
        self.executions = executions
        self.clock = clock
        self.incarnations = incarnations
        # STREAMER_MESSAGE_WINDOWS=memory (streamer.windows): the connections' rate windows and their rows,
        # kept here once read — only where this process runs every $default invocation.
        self.windows = MemoryWindows() if settings.message_windows == MEMORY else None
        self._known: dict[str, Connection] = {}
        self._known_lock = threading.Lock()
        self._known_prune_at = self.KNOWN_PRUNE_AT
        # STREAMER_CONNECTION_ADMISSION=memory (streamer.admission): the users' connection slots, kept here —
        # only where this process runs every $connect and $disconnect (the rows then written in batches).
        self.admissions = MemoryConnections(clock) if settings.connection_admission == MEMORY else None

    @classmethod
    def from_env(cls, settings: Settings | None = None, *, endpoint_url: str | None = None) -> RequestService:
        """Build the service with lazily created boto3 clients (one set per Lambda container)."""
        s = settings or Settings.from_env()
        dynamodb: ClientSlot[DynamoDBClient] = ClientSlot("dynamodb")  # one client for the three tables
        return cls(
            s,
            connections=ConnectionStore(s.connections_table, dynamodb, batched=s.connection_admission == MEMORY),
            requests=RequestStore(s.requests_table, dynamodb),
            events=EventStore(s.events_table, dynamodb, ttl_seconds=s.request_ttl_seconds),
            manager=ConnectionManager(endpoint_url or s.apigw_endpoint),
            executions=Executions(s.state_machine_arn_prefix),
        )

    def now(self) -> int:
        return int(self.clock())

    @property
    def dynamodb(self) -> ClientSlot[DynamoDBClient]:
        """The DynamoDB client slot of the service's stores, for other adapters of the container to share."""
        return self.connections.slot

    # -- connections ----------------------------------------------------------------------------

    def connect(
        self,
        connection_id: str,
        user_id: str,
        token_expires_at: int,
        *,
        source_ip: str | None = None,
        quotas: Quotas | None = None,
    ) -> Admission:
        """Admit an authenticated connection (``$connect``) and store it; a refusal stores nothing.

        Refused ``expired`` when the token has expired (a token accepted within the clock leeway but past its
        ``exp`` would yield a connection that is expired from its first message), ``quota`` over the user's
        connection quota (``streamer.quotas``; a connection whose row looks live is asked about through the
        Management API). The row expires with the token, at the latest when API Gateway ends the connection;
        when its write fails, the quota reservation is released and the error raised.
        """
        self._unknow(connection_id)
        now = self.now()
        if token_expires_at <= now:
            return Admission(None, "expired", "token expired")
        if quotas is not None:
            try:
                quotas.admit_connection(user_id, connection_id, alive=self.manager.alive)
            except ProtocolError as exc:
                return Admission(None, "quota", exc.message)
        connection = Connection(
            connection_id=connection_id,
            user_id=user_id,
            connected_at=now,
            expires_at=min(token_expires_at, now + MAX_CONNECTION_SECONDS),
            source_ip=source_ip,
        )
        try:
            self.connections.put(connection)
        except Exception:
            if quotas is not None:
                quotas.release_connection(user_id, connection_id)
            raise
        if self.admissions is not None:
            self.admissions.admitted(connection_id, connection.expires_at)
        self._remember(connection, now)
        return Admission(connection)

    def close(self, connection_id: str) -> bool:
        """Close a connection through the Management API (``DELETE @connections/{id}``: API Gateway then runs
        ``$disconnect``). False when it was already gone; SendError when API Gateway cannot be reached."""
        self._unknow(connection_id)
        return self.manager.close(connection_id)

    def disconnect(self, connection_id: str) -> None:
        """Remove a connection's row (``$disconnect``; TTL removes what is missed)."""
        self._unknow(connection_id)
        self.connections.delete(connection_id)

    def count_message(self, connection_id: str, now: int | None = None) -> tuple[Connection, int] | None:
        """Who is asking and how many messages this connection sent in the current minute, in one write.

        With the windows in memory (``streamer.windows``) no DynamoDB call: the row is the one ``$connect``
        stored in this process, or read by the connection's first message (counted in DynamoDB, the count
        carried on here); None when it does not exist.
        """
        if self.windows is None:
            return self.connections.count_message(connection_id, now)
        now = self.now() if now is None else now
        with self._known_lock:
            conn = self._known.get(connection_id)
        if conn is not None:
            return conn, self.windows.add(connection_id, now // 60)
        seen = self.connections.count_message(connection_id, now)
        if seen is None:
            return None
        conn, count = seen
        self._remember(conn, now)
        self.windows.seed(connection_id, now // 60, count)
        return seen

    def _remember(self, conn: Connection, now: int) -> None:
        """With the windows in memory: this connection's row, as stored (``$connect`` in this process) or read."""
        if self.windows is None:
            return
        with self._known_lock:
            self._known[conn.connection_id] = conn
            if len(self._known) > self._known_prune_at:
                self._known = {c: k for c, k in self._known.items() if k.expires_at > now}
                self._known_prune_at = max(self.KNOWN_PRUNE_AT, 2 * len(self._known))

    #: With the windows in memory: past this many known connections (then twice as many as were kept), the
    #: expired ones are dropped (a connection whose $disconnect never ran here).
    KNOWN_PRUNE_AT = 10_000

    def _unknow(self, connection_id: str) -> None:
        if self.admissions is not None:
            self.admissions.release(connection_id)
        if self.windows is not None:
            with self._known_lock:
                self._known.pop(connection_id, None)
            self.windows.forget(connection_id)

    def reply(self, connection_id: str, frames: list[dict[str, Any]]) -> int:
        """Send the router's replies to the asking connection, in order; the number delivered.

        A reply over the frame limit is replaced by its PAYLOAD_TOO_LARGE error frame; a gone connection
        (410) has its row deleted and gets nothing more; any other failure stops the sequence.
        """
        sent = 0
        for frame in frames:
            try:
                try:
                    self.manager.send(connection_id, frame)
                except ProtocolError as exc:  # e.g. a reply over the frame limit
                    self.manager.send(connection_id, exc.to_wire())
            except WebSocketDisconnectedError:
                metrics.add(metrics.PUSHES_TO_GONE_CONNECTIONS)
                self._forget([connection_id])
                break
            except StreamerError:
                logger.info("reply not delivered", extra={"connection_id": connection_id})
                break
            sent += 1
        return sent

    def reply_by_route_response(self, connection_id: str, frames: list[dict[str, Any]]) -> dict[str, Any] | None:
        """For a two-way route: post every reply but the last, in order (as :meth:`reply`), and return the last
        for the integration response (it reaches the client after the posted ones); ``None`` when there is
        nothing to return (no replies, or a post failed: the sequence stops, as in :meth:`reply`). A last reply
        over the frame limit is returned as its PAYLOAD_TOO_LARGE error frame."""
        if not frames:
            return None
        *first, last = frames
        if self.reply(connection_id, first) < len(first):
            return None
        try:
            encode_message(last)
        except ProtocolError as exc:
            return exc.to_wire()
        return last

    def _forget(self, connection_ids: list[str]) -> None:
        """Delete the rows of connections API Gateway says are gone."""
        for cid in connection_ids:
            self._unknow(cid)
            try:
                self.connections.delete(cid)
            except Exception:  # best effort: the row's TTL removes it anyway
                logger.warning("stale connection row not deleted", extra={"connection_id": cid})

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
            incarnation=self.incarnations(),
        )
        if self.requests.create(req):
            metrics.add(metrics.REQUESTS_SUBMITTED, workflow=workflow)
            return SubmitResult(req, created=True)
        existing = self.requests.get(user_id, rid)
        if existing is None:  # expired by TTL between the two calls: try once more (a new incarnation)
            req = req.model_copy(update={"incarnation": self.incarnations()})
            if self.requests.create(req):
                metrics.add(metrics.REQUESTS_SUBMITTED, workflow=workflow)
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
            "last_seq": req.last_seq,
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
        """The request's events after ``after_seq``, through the terminal one (always the last seq).

        Progress events come from the events table under this incarnation's key (a predecessor with the
        same id wrote under another key); the terminal event is the request item itself.
        """
        req = self.get_owned(user_id, request_id)
        return self.events_of(req, after_seq)

    def events_of(self, req: Request, after_seq: int = 0) -> list[RequestEvent]:
        """Every event of ``req`` after ``after_seq``, ascending, the terminal one last (for replay and for
        tools that show a request's events)."""
        terminal = req.terminal_body()
        upto = req.last_seq - 1 if terminal is not None else None
        out = list(self.events.after(req.ref.request_key, after_seq, upto=upto)) if upto != after_seq else []
        if terminal is not None and req.last_seq > after_seq:
            key = req.ref.request_key
            out.append(RequestEvent(request_key=key, seq=req.last_seq, body=terminal, created_at=req.updated_at))
        return out

    def cancel(self, user_id: str, request_id: str) -> bool:
        """End the request CANCELLED and stop its execution. True when this call ended it; False when it had
        already ended.

        The terminal write comes first and is conditional; the execution to stop is the one the request
        names *in that write's result*, so a ``start`` that marked it RUNNING after we read it is seen. A
        ``start`` that has not marked it yet loses its own conditional write and stops what it started. A
        request that names no execution (still PENDING) may still have one: a stream router that died
        between StartExecution and ``mark_running``. Its name is derived from the incarnation, so cancel stops
        it by that name (StopExecution of an execution that does not exist is a no-op).
        """
        req = self.get_owned(user_id, request_id)
        if req.status.terminal:
            return False
        ended = self._end(req.ref, RequestStatus.CANCELLED, code=ErrorCode.CANCELLED, message=CANCEL_CAUSE)
        if ended is None:
            return False
        self.executions.stop(ended.execution_arn or self.execution_of(req.ref))
        self._announce(req.ref, ended)
        return True

    # -- executions -----------------------------------------------------------------------------

    def start(self, insert: RequestInsert) -> str:
        """Start the execution of a newly stored request (the stream router; the reconciler's re-drive).

        No read first: the stream record's new image carries the request. StartExecution names the
        incarnation's execution (a redelivered record names the same one, never a second), then
        ``mark_running`` (conditional on PENDING, this incarnation) records it. When that write loses — the
        request was cancelled or ended meanwhile, or a redelivery finds it already RUNNING — the item read
        in the same call says whether the execution is the request's own; if not, it is stopped, so a
        cancelled request's execution never keeps running.

        Returns ``started``; ``skipped`` (already started: a redelivered record); ``cancelled`` (the request
        ended or went away while it was being started: its execution is stopped); ``rejected`` (the input
        is too large for StartExecution, the workflow is not deployed, or the name is held by another
        request's execution: the request ends FAILED). Raises on failures worth retrying.
        """
        ref = RequestRef.of(insert.user_id, insert.request_id, insert.workflow, insert.incarnation)
        body = execution_input(ref, insert.payload)
        limit = self.settings.max_execution_input_bytes
        size = len(body.encode())
        if size > limit:
            message = f"the execution input would be {size} bytes; Step Functions accepts {limit}"
            self.reject(ref, ErrorCode.PAYLOAD_TOO_LARGE, message)
            return "rejected"
        name = execution_name(ref.user_id, ref.request_id, ref.incarnation)
        try:
            arn = self.executions.start(ref.workflow, name, body)
        except WorkflowNotDeployedError:
            self.reject(ref, ErrorCode.UNKNOWN_WORKFLOW, f"workflow {ref.workflow!r} is not deployed")
            return "rejected"
        except ExecutionNameTakenError:
            logger.error("execution name held by another request", extra={"request_id": ref.request_id})
            self.reject(ref, ErrorCode.INTERNAL_ERROR, "the request could not be started")
            return "rejected"
        won, current = self.requests.mark_running(ref, arn, self.now())
        if won:
            metrics.add(metrics.REQUESTS_STARTED, workflow=ref.workflow)
            return "started"
        if current is not None and current.incarnation == ref.incarnation and current.execution_arn == arn:
            return "skipped"  # the request names this execution: a redelivery (or the reconciler) found it
        self.executions.stop(arn)  # cancelled, ended or gone while we were starting it
        return "cancelled"

    def end_for_status_change(self, detail: ExecutionStatusDetail) -> str:
        """End the request of an execution that ended FAILED / TIMED_OUT / ABORTED. Returns what was done.

        ``ended``: this call gave the request its terminal event. ``unchanged``: the request had already ended
        (the notify task or a ``cancel`` did it; a repeated event). ``ignored``: a status that ends nothing.
        ``foreign`` / ``unreadable``: not an execution of one of our requests, or its input cannot be read;
        ``unknown``: no such request (expired). None of these raise: a redelivery could not change them. Store
        and Step Functions errors do raise, so the event is retried.
        (EventBridge "Step Functions Execution Status Change":
        https://docs.aws.amazon.com/step-functions/latest/dg/eventbridge-integration.html)
        """
        if detail.status not in ENDING_STATUSES:
            return "ignored"
        ref, outcome = self._request_of(detail)
        if ref is None:
            logger.warning(
                "execution status change not about a request of this stack; ignored",
                extra={"outcome": outcome, "execution_arn": detail.execution_arn, "status": detail.status},
            )
            return outcome
        req = self.requests.get(ref.user_id, ref.request_id)
        if req is None or req.incarnation != ref.incarnation:
            logger.warning("execution of an unknown request ended", extra={"request_id": ref.request_id})
            return "unknown"
        if req.status.terminal:
            return "unchanged"
        status, code, message = terminal_of(detail)
        ended = self.finish(ref, status, code=code, message=message)
        logger.info(
            "request ended by its execution's status change",
            extra={"request_id": ref.request_id, "status": status.value, "error": detail.error, "ended": bool(ended)},
        )
        return "ended" if ended is not None else "unchanged"

    # -- reconciling (streamer.reconciler) -------------------------------------------------------

    def open_requests(self, created_before: int) -> Iterator[tuple[str, str]]:
        """(user_id, request_id) of every request that has not ended, created before ``created_before`` (the
        sparse ``by_open`` index, shard by shard)."""
        for shard in range(OPEN_SHARDS):
            yield from self.requests.open_before(str(shard), created_before)

    def request(self, user_id: str, request_id: str) -> Request | None:
        """The stored request (consistent read), or None."""
        return self.requests.get(user_id, request_id)

    def execution_of(self, ref: RequestRef) -> str:
        """The ARN the execution of ``ref``'s incarnation has (or would have): it is derived, never guessed."""
        name = execution_name(ref.user_id, ref.request_id, ref.incarnation)
        return execution_arn(self.executions.state_machine_arn(ref.workflow), name)

    def redrive(self, req: Request, *, give_up: bool) -> str:
        """Start a request still PENDING long after it was stored (its stream record was given up on, or the
        stream router died between StartExecution and ``mark_running``), through :meth:`start` — the same
        path, so it names the same execution and cannot start a second one. When starting fails and
        ``give_up`` is set, the request ends ``INTERNAL_ERROR`` instead. Returns what was done."""
        insert = RequestInsert(
            user_id=req.user_id,
            request_id=req.request_id,
            workflow=req.workflow,
            incarnation=req.incarnation,
            payload=req.payload,
        )
        try:
            outcome = self.start(insert)
        except Exception:
            if not give_up:
                raise
            logger.exception("request could not be started; given up", extra={"request_id": req.request_id})
            ended = self.finish(
                req.ref, RequestStatus.FAILED, code=ErrorCode.INTERNAL_ERROR, message="the request could not be started"
            )
            return "ended" if ended is not None else "unchanged"
        if outcome in ("started", "skipped"):
            # It may have been started long ago and have ended since (nobody recorded it): settle it now.
            current = self.requests.get(req.user_id, req.request_id)
            if current is not None and current.status is RequestStatus.RUNNING:
                settled = self.settle(current, hard_timeout=False)
                return f"redriven:{settled}"
        return f"redriven:{outcome}"

    def settle(self, req: Request, *, hard_timeout: bool) -> str:
        """Compare a RUNNING request with its execution and end it when the execution has ended (or never
        existed): exactly one terminal event, through the conditional terminal write.

        ``running``: the execution still runs (when ``hard_timeout`` is set — the request is older than the
        reconciler's hard bound — it is stopped and the request ends ``TIMED_OUT``/``TIMEOUT``).
        ``ended``: this call ended the request. ``unchanged``: something else ended it first.
        """
        arn = req.execution_arn or self.execution_of(req.ref)
        described = self.executions.describe(arn)
        if described is None:
            status, code, message = RequestStatus.FAILED, ErrorCode.INTERNAL_ERROR, "the request's execution was lost"
        elif described.get("status") in ("RUNNING", "PENDING_REDRIVE"):
            if not hard_timeout:
                return "running"
            ended = self._end(
                req.ref, RequestStatus.TIMED_OUT, code=ErrorCode.TIMEOUT, message="the request ran too long"
            )
            self.executions.stop(arn, error="Streamer.Timeout", cause="the request ran too long")
            return "ended" if self._announce(req.ref, ended) is not None else "unchanged"
        elif described.get("status") == "SUCCEEDED":
            # The workflow's own notification ends a request before its execution can succeed; a success
            # that ended nothing lost its result on the way: say so rather than guess the result's shape.
            status, code = RequestStatus.FAILED, ErrorCode.INTERNAL_ERROR
            message = "the request's result was lost"
        else:
            detail = ExecutionStatusDetail.model_validate(
                {
                    "executionArn": arn,
                    "stateMachineArn": str(described.get("stateMachineArn", "")),
                    "name": str(described.get("name", "")),
                    "status": described["status"],
                    "error": described.get("error"),
                    "cause": described.get("cause"),
                }
            )
            status, code, message = terminal_of(detail)
        ended_event = self.finish(req.ref, status, code=code, message=message)
        logger.info(
            "request settled by the reconciler",
            extra={"request_id": req.request_id, "status": status.value, "ended": ended_event is not None},
        )
        return "ended" if ended_event is not None else "unchanged"

    def _request_of(self, detail: ExecutionStatusDetail) -> tuple[RequestRef | None, str]:
        """The request an execution ran for, or ``(None, outcome)`` when the event is not about one of ours."""
        if not detail.state_machine_arn.startswith(self.executions.state_machine_arn_prefix):
            return None, "foreign"
        text = detail.input
        if text is None and detail.input_details is not None and not detail.input_details.included:
            # Left out of the event for its size: ask Step Functions (transient errors raise: retried).
            described = self.executions.describe(detail.execution_arn)
            text = described.get("input") if described else None
        try:
            body = json.loads(text) if text is not None else None
            ref = RequestRef.model_validate(body.get("request") if isinstance(body, dict) else None)
        except (ValueError, ValidationError):  # JSONDecodeError is a ValueError
            return None, "unreadable"
        # Only the request's own execution ends it: the ARN of its workflow's state machine (another stack
        # whose name shares our prefix has others) and the deterministic name (not a copy started by hand).
        if (
            ref != RequestRef.of(ref.user_id, ref.request_id, ref.workflow, ref.incarnation)
            or detail.state_machine_arn != self.executions.state_machine_arn(ref.workflow)
            or detail.name != execution_name(ref.user_id, ref.request_id, ref.incarnation)
        ):
            return None, "foreign"
        return ref, ""

    # -- events ---------------------------------------------------------------------------------

    def emit(self, ref: RequestRef, body: dict[str, Any], audience: Audience | None = None) -> RequestEvent:
        """Store a (non-terminal) event at the next seq, then push it to every connection of the user.

        Two writes: the seq claim on the request item (conditional: not ended, this incarnation) and the
        event's put. Raises :class:`TerminalAlreadyError` when the request has ended: nothing is stored.
        """
        now = self.now()
        seq = self.requests.claim_seq(ref, now)
        if seq is None:
            raise TerminalAlreadyError(f"request {ref.request_key} already ended")
        event = self.events.put(ref.request_key, seq, {**body, "request_id": ref.request_id, "seq": seq}, now)
        self.push(ref.user_id, event.body, audience)
        return event

    def push(self, user_id: str, body: dict[str, Any], audience: Audience | None = None) -> SendReport:
        """Send to every current connection of the user (read now, or ``audience``'s recent read); delete the
        rows of those that are gone.

        Best effort: the event is stored and ``resume`` recovers it, so a failure here is logged, not raised.
        """
        try:
            ids = audience.ids() if audience is not None else self._connection_ids(user_id)
            report = self.manager.send_many(ids, body)
        except Exception:
            logger.exception("push failed", extra={"request_id": body.get("request_id")})
            return SendReport()
        if audience is not None:
            audience.drop(report.gone)
        if report.gone:
            metrics.add(metrics.PUSHES_TO_GONE_CONNECTIONS, len(report.gone))
        if report.failed:
            metrics.add(metrics.PUSHES_FAILED, len(report.failed))
        self._forget(report.gone)
        return report

    def _connection_ids(self, user_id: str) -> list[str]:
        return [c.connection_id for c in self.connections.for_user(user_id)]

    def audience(self, user_id: str, max_age: float = PROGRESS_AUDIENCE_SECONDS) -> Audience:
        """The user's connections, read on first use and reused for ``max_age`` seconds (see :class:`Audience`)."""
        return Audience(lambda: self._connection_ids(user_id), max_age)

    def step_progress(self) -> StepProgress:
        """The progress sink of one step invocation: its events share one read of the user's connections."""
        return StepProgress(self)

    def progress(
        self, ref: RequestRef, step: str, percent: int, message: str, audience: Audience | None = None
    ) -> RequestEvent | None:
        """A progress event; dropped (None) once the request has ended — decided by the seq claim's condition,
        in the same write, so no progress is ever stored after the terminal event."""
        pct = clamp_percent(percent)
        try:
            event = self.emit(
                ref, {"type": "progress", "step": step, "percent": pct, "message": message}, audience=audience
            )
        except TerminalAlreadyError:
            return None
        metrics.add(metrics.PROGRESS_EVENTS_PUSHED, workflow=ref.workflow)
        return event

    def finish(self, ref: RequestRef, status: RequestStatus, **ending: Unpack[Ending]) -> RequestEvent | None:
        """Move the request to a terminal status with its terminal event, exactly once; push it.

        One conditional write ends the request and takes the terminal event's seq, so a request never has
        two terminal events and nothing follows it; a second call (a retried notify, a cancel racing the
        result) returns None.
        """
        return self._announce(ref, self._end(ref, status, **ending))

    def _announce(self, ref: RequestRef, ended: Request | None) -> RequestEvent | None:
        """Push the terminal event of a request this call ended (None: it had already ended, nothing to say)."""
        if ended is None:
            return None
        body = ended.terminal_body()
        assert body is not None
        self.push(ref.user_id, body)
        return RequestEvent(request_key=ref.request_key, seq=ended.last_seq, body=body, created_at=ended.updated_at)

    def _end(
        self,
        ref: RequestRef,
        status: RequestStatus,
        *,
        output: dict[str, Any] | None = None,
        code: ErrorCode | None = None,
        message: str | None = None,
    ) -> Request | None:
        """The terminal write (not pushed): the request as ended, or None when it had already ended."""
        if not status.terminal:
            raise ValueError(f"{status} is not terminal")
        now = self.now()
        if status is RequestStatus.SUCCEEDED and _frame_size(output or {}) > MAX_MESSAGE_BYTES - 1024:
            # A result that cannot be delivered in one frame is a typed failure, not a silent loss.
            status, code = RequestStatus.FAILED, ErrorCode.PAYLOAD_TOO_LARGE
            message = f"the result is larger than the {MAX_MESSAGE_BYTES}-byte message limit"
        try:
            if status is RequestStatus.SUCCEEDED:
                ended = self.requests.end(ref, status, now, output=output or {})
            else:
                code = code or _TERMINAL_CODES[status]
                ended = self.requests.end(ref, status, now, error_code=code.value, error_message=message or "")
        except TerminalAlreadyError:
            return None
        # Counted at the one terminal write: exactly once per request, whoever ended it.
        metrics.add(metrics.terminal_metric(ended.status.value), workflow=ref.workflow)
        duration_ms = max(0, ended.updated_at - ended.created_at) * 1000
        metrics.add(metrics.REQUEST_DURATION, duration_ms, workflow=ref.workflow)
        return ended

    def reject(self, ref: RequestRef, code: ErrorCode, message: str) -> RequestEvent | None:
        """End a request that never started (e.g. its input is too large for StartExecution)."""
        return self.finish(ref, RequestStatus.FAILED, code=code, message=message)

    def find(self, user_id: str, request_id: str) -> Request | None:
        """The request, or None (operator tools: ``streamer executions``, the console; no ownership check)."""
        return self.requests.get(user_id, request_id)


def _frame_size(value: Any) -> int:
    return len(json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode("utf-8"))
