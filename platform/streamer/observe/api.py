"""The operations of :mod:`streamer.observe` (see the package docstring for the contract)."""

from __future__ import annotations

import base64
import binascii
import hashlib
import heapq
import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from streamer import metrics
from streamer.aws.codec import from_ddb
from streamer.errors import ProtocolError, StreamerError
from streamer.models import Request
from streamer.observe import metricsfile
from streamer.observe.models import (
    ConnectionInfo,
    DurationStat,
    ExecutionDetail,
    ExecutionInfo,
    ExecutionPage,
    ExecutionSummary,
    MinuteCount,
    Overview,
    RequestInfo,
    StateRun,
    StoredEvent,
    UserConnections,
)
from streamer.observe.sources import Sources
from streamer.observe.states import as_datetime, duration_ms, parse_json, state_runs
from streamer.protocol import ErrorCode, RequestStatus

__all__ = [
    "BY_REQUEST_ID",
    "BY_USER_CREATED",
    "BY_WORKFLOW_CREATED",
    "AmbiguousError",
    "CursorError",
    "NotFoundError",
    "cancel",
    "connections",
    "execution_history",
    "list_executions",
    "overview",
    "rerun",
    "resolve",
    "show_execution",
    "summary_id",
]

#: GSIs of the requests table (``infra/template.yaml``): newest-first per workflow / per user, and who
#: owns a request id.
BY_WORKFLOW_CREATED = "by_workflow_created"
BY_USER_CREATED = "by_user_created"
BY_REQUEST_ID = "by_request_id"

_TERMINAL_TYPES = ("result", "error")
_ID_PREFIX = "r_"


class NotFoundError(StreamerError):
    """No request or execution has this id."""


class AmbiguousError(StreamerError):
    """A request id that several users have used: pass ``user``."""

    def __init__(self, request_id: str, users: list[str]) -> None:
        shown = ", ".join(users[:10]) + (f" (+{len(users) - 10} more)" if len(users) > 10 else "")
        super().__init__(f"request id {request_id!r} was used by {len(users)} users ({shown}); pass a user")
        self.request_id = request_id
        self.users = users


class CursorError(StreamerError):
    """A cursor that this listing did not produce (another filter set, or not a cursor at all)."""


# -- ids ------------------------------------------------------------------------------------------------


def summary_id(user_id: str, request_id: str) -> str:
    """The stable id of a request's row: its user and request id, reversible without a lookup."""
    raw = json.dumps([user_id, request_id], separators=(",", ":"), ensure_ascii=False).encode()
    return _ID_PREFIX + base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_summary_id(value: str) -> tuple[str, str] | None:
    if not value.startswith(_ID_PREFIX):
        return None
    text = value[len(_ID_PREFIX) :]
    try:
        data = json.loads(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)))
    except (ValueError, binascii.Error):
        return None
    if isinstance(data, list) and len(data) == 2 and all(isinstance(x, str) and x for x in data):
        return data[0], data[1]
    return None


def resolve(src: Sources, id: str, *, user: str | None = None) -> tuple[str, str]:
    """``(user_id, request_id)`` of a request id, an execution ARN or an :attr:`ExecutionSummary.id`."""
    ident = id.strip()
    if not ident:
        raise NotFoundError("an empty id names nothing")
    decoded = _decode_summary_id(ident)
    if decoded is not None:
        return decoded
    if ident.startswith("arn:"):
        described = src.executions.describe(ident)
        if described is None:
            raise NotFoundError(f"no execution {ident}")
        body = parse_json(described.get("input"))
        req = body.get("request") if isinstance(body, dict) else None
        if not isinstance(req, dict) or not req.get("user_id") or not req.get("request_id"):
            raise NotFoundError(f"execution {ident} is not a streamer request's (its input has no request)")
        return str(req["user_id"]), str(req["request_id"])
    if user is not None:
        return user, ident
    users: list[str] = []
    kwargs: dict[str, Any] = {
        "TableName": src.settings.requests_table,
        "IndexName": BY_REQUEST_ID,
        "KeyConditionExpression": "request_id = :r",
        "ExpressionAttributeValues": {":r": {"S": ident}},
    }
    while True:
        resp = src.dynamodb.query(**kwargs)
        users.extend(item["user_id"]["S"] for item in resp.get("Items", []))
        if "LastEvaluatedKey" not in resp:
            break
        kwargs["ExclusiveStartKey"] = resp["LastEvaluatedKey"]
    if not users:
        raise NotFoundError(f"no request {ident!r}")
    if len(set(users)) > 1:
        raise AmbiguousError(ident, sorted(set(users)))
    return users[0], ident


def _request(src: Sources, id: str, user: str | None) -> Request:
    user_id, request_id = resolve(src, id, user=user)
    req = src.service.find(user_id, request_id)
    if req is None:
        raise NotFoundError(f"no request {request_id!r} of user {user_id!r}")
    return req


# -- list -----------------------------------------------------------------------------------------------


def _dt(epoch: Any) -> datetime | None:
    return None if epoch is None else datetime.fromtimestamp(int(epoch), UTC)


def _summary(src: Sources, item: dict[str, Any]) -> ExecutionSummary:
    status = str(item.get("status", ""))
    created = int(item["created_at"])
    updated = int(item.get("updated_at", created))
    terminal = status not in (RequestStatus.PENDING.value, RequestStatus.RUNNING.value)
    arn = item.get("execution_arn")
    return ExecutionSummary(
        id=summary_id(item["user_id"], item["request_id"]),
        request_id=item["request_id"],
        user_id=item["user_id"],
        workflow=str(item.get("workflow", "")),
        status=status,
        created_at=datetime.fromtimestamp(created, UTC),
        # mark_running stamps updated_at when the execution starts; a terminal update when it ends.
        started_at=datetime.fromtimestamp(updated, UTC) if status == RequestStatus.RUNNING.value else None,
        stopped_at=datetime.fromtimestamp(updated, UTC) if terminal else None,
        duration_ms=(updated - created) * 1000 if terminal else None,
        execution_arn=arn,
        console_url=src.console_url(arn),
        error_code=item.get("error_code"),
        error_message=item.get("error_message"),
    )


def _epoch(value: datetime | None) -> int | None:
    if value is None:
        return None
    return int((value if value.tzinfo else value.replace(tzinfo=UTC)).timestamp())


def _fingerprint(**filters: Any) -> str:
    text = json.dumps(filters, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def _encode_cursor(fingerprint: str, positions: dict[str, Any]) -> str:
    raw = json.dumps({"f": fingerprint, "p": positions}, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_cursor(cursor: str, fingerprint: str) -> dict[str, Any]:
    try:
        data = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except (ValueError, binascii.Error) as exc:
        raise CursorError("not a cursor of this listing") from exc
    if not isinstance(data, dict) or data.get("f") != fingerprint or not isinstance(data.get("p"), dict):
        raise CursorError("the cursor belongs to a listing with other filters")
    positions: dict[str, Any] = data["p"]
    return positions


class _Stream:
    """One newest-first Query of a GSI partition, resumable from the last item handed out."""

    def __init__(self, src: Sources, name: str, kwargs: dict[str, Any], position: Any, want: int) -> None:
        self.name = name
        self.items: list[dict[str, Any]] = []  # fetched, matching, not yet handed out (newest first)
        self.more = position != "end"
        self._src = src
        self._kwargs = kwargs
        self._start = position if isinstance(position, dict) else None
        self._want = want
        self._index_keys = [k["AttributeName"] for k in kwargs.pop("_index_keys")]

    def fill(self) -> None:
        """Fetch pages until ``want`` matching items are held or the partition is exhausted."""
        while self.more and len(self.items) < self._want:
            kwargs = dict(self._kwargs, Limit=max(self._want - len(self.items), 10))
            if self._start is not None:
                kwargs["ExclusiveStartKey"] = self._start
            resp = self._src.dynamodb.query(**kwargs)
            self.items.extend(resp.get("Items", []))
            last = resp.get("LastEvaluatedKey")
            if last is None:
                self.more = False
            self._start = last

    def key_of(self, item: dict[str, Any]) -> dict[str, Any]:
        return {k: item[k] for k in ("user_id", "request_id", *self._index_keys)}


def list_executions(
    src: Sources,
    *,
    workflow: str | None = None,
    status: str | None = None,
    user: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    query: str | None = None,
    limit: int = 50,
    cursor: str | None = None,
) -> ExecutionPage:
    """Requests joined to their executions, newest first, paged on the server.

    Why GSIs of the requests table, not ListExecutions: the table is keyed (user_id, request_id), so it has
    no time order of its own, and ListExecutions (newest first per state machine, ``statusFilter``) knows
    neither the user nor the requests that never started (rejected, still PENDING) nor the status the
    client was told. Two GSIs keyed by ``created_at`` give the order: ``by_workflow_created`` (workflow,
    created_at) and ``by_user_created`` (user_id, created_at). A ``user`` filter queries one partition of the
    latter, a ``workflow`` filter one of the former, no filter merges the per-workflow partitions (one Query
    each; a handful of workflows). Status, request-id search and the other filters are FilterExpressions;
    ``since``/``until`` are key conditions. The cursor records, per partition, the key of the last item
    handed out (``ExclusiveStartKey``), so a page costs one Query per partition whatever its depth. Both
    GSIs project only what a row shows (INCLUDE), never payloads or outputs.
    """
    if limit < 1:
        raise ValueError("limit must be at least 1")
    limit = min(limit, 1000)
    s_from, s_to = _epoch(since), _epoch(until)
    fp = _fingerprint(workflow=workflow, status=status, user=user, since=s_from, until=s_to, query=query)
    positions = _decode_cursor(cursor, fp) if cursor else {}
    partitions: list[tuple[str, str, str, str]] = []  # (stream name, index, key attribute, value)
    if user is not None:
        partitions.append((f"u:{user}", BY_USER_CREATED, "user_id", user))
    elif workflow is not None:
        partitions.append((f"w:{workflow}", BY_WORKFLOW_CREATED, "workflow", workflow))
    else:
        partitions.extend((f"w:{w}", BY_WORKFLOW_CREATED, "workflow", w) for w in src.workflows())
    streams: list[_Stream] = []
    for name, index, attr, value in partitions:
        names = {"#pk": attr}
        values: dict[str, Any] = {":pk": {"S": value}}
        key = "#pk = :pk"
        if s_from is not None or s_to is not None:
            names["#c"] = "created_at"
        if s_from is not None and s_to is not None:
            key += " AND #c BETWEEN :from AND :to"
            values.update({":from": {"N": str(s_from)}, ":to": {"N": str(s_to)}})
        elif s_from is not None:
            key += " AND #c >= :from"
            values[":from"] = {"N": str(s_from)}
        elif s_to is not None:
            key += " AND #c <= :to"
            values[":to"] = {"N": str(s_to)}
        filters: list[str] = []
        if status is not None:
            filters.append("#s = :s")
            names["#s"] = "status"
            values[":s"] = {"S": status}
        if workflow is not None and attr != "workflow":
            filters.append("#w = :w")
            names["#w"] = "workflow"
            values[":w"] = {"S": workflow}
        if query:
            filters.append("contains(request_id, :q)")
            values[":q"] = {"S": query}
        kwargs: dict[str, Any] = {
            "TableName": src.settings.requests_table,
            "IndexName": index,
            "KeyConditionExpression": key,
            "ExpressionAttributeNames": names,
            "ExpressionAttributeValues": values,
            "ScanIndexForward": False,
            "_index_keys": [{"AttributeName": attr}, {"AttributeName": "created_at"}],
        }
        if filters:
            kwargs["FilterExpression"] = " AND ".join(filters)
        streams.append(_Stream(src, name, kwargs, positions.get(name), limit))
    for stream in streams:
        stream.fill()
    # k-way merge, newest first; each partition keeps its own (DynamoDB) order.
    merged = heapq.merge(
        *[
            [(-int(item["created_at"]["N"]), n, i, item) for i, item in enumerate(st.items)]
            for n, st in enumerate(streams)
        ]
    )
    taken: list[tuple[int, dict[str, Any]]] = []
    for _, n, _, item in merged:
        if len(taken) == limit:
            break
        taken.append((n, item))
    new_positions: dict[str, Any] = {}
    last_taken: dict[int, dict[str, Any]] = {}
    count_taken: dict[int, int] = {}
    for n, item in taken:
        last_taken[n] = item
        count_taken[n] = count_taken.get(n, 0) + 1
    more = False
    for n, st in enumerate(streams):
        left = len(st.items) - count_taken.get(n, 0)
        if n in last_taken:
            new_positions[st.name] = st.key_of(last_taken[n]) if (left or st.more) else "end"
        else:
            new_positions[st.name] = positions.get(st.name) if (left or st.more) else "end"
        more = more or bool(left) or st.more
    items = [_summary(src, from_ddb(item)) for _, item in taken]
    return ExecutionPage(items=items, next_cursor=_encode_cursor(fp, new_positions) if more else None)


# -- show -----------------------------------------------------------------------------------------------


def _stored_events(src: Sources, req: Request) -> list[StoredEvent]:
    """The request's events as its clients received them (``RequestService.events_of``: the events table's
    progress events and the terminal event, in seq order)."""
    return [
        StoredEvent(
            seq=ev.seq,
            type=str(ev.body.get("type", "")),
            created_at=datetime.fromtimestamp(ev.created_at, UTC),
            body=ev.body,
        )
        for ev in src.service.events_of(req)
    ]


def _execution_info(src: Sources, described: dict[str, Any]) -> ExecutionInfo:
    start, stop = as_datetime(described.get("startDate")), as_datetime(described.get("stopDate"))
    return ExecutionInfo(
        arn=described["executionArn"],
        name=described.get("name", ""),
        state_machine_arn=described.get("stateMachineArn", ""),
        status=described.get("status", ""),
        input=parse_json(described.get("input")),
        output=parse_json(described.get("output")),
        error=described.get("error") or None,
        cause=described.get("cause") or None,
        started_at=start,
        stopped_at=stop,
        duration_ms=duration_ms(start, stop),
        console_url=src.console_url(described["executionArn"]),
    )


def _deployed_definition(src: Sources, workflow: str) -> dict[str, Any] | None:
    """The workflow's current definition, for a request that has no execution (yet)."""
    from botocore.exceptions import ClientError

    try:
        resp = src.stepfunctions.describe_state_machine(stateMachineArn=src.settings.state_machine_arn(workflow))
    except ClientError:
        return None
    parsed = parse_json(resp.get("definition"))
    return parsed if isinstance(parsed, dict) else None


def show_execution(src: Sources, id: str, *, user: str | None = None, expand: bool = False) -> ExecutionDetail:
    """Everything about one request and its execution (see :class:`ExecutionDetail`)."""
    req = _request(src, id, user)
    events = _stored_events(src, req)
    terminal = next((e.body for e in events if e.type in _TERMINAL_TYPES), None)
    detail = ExecutionDetail(
        summary=_summary(src, req.model_dump(mode="json")),
        request=RequestInfo(
            user_id=req.user_id,
            request_id=req.request_id,
            workflow=req.workflow,
            payload=req.payload,
            status=req.status.value,
            created_at=datetime.fromtimestamp(req.created_at, UTC),
            updated_at=datetime.fromtimestamp(req.updated_at, UTC),
            execution_arn=req.execution_arn,
            output=req.output,
            error_code=req.error_code,
            error_message=req.error_message,
            terminal_event=terminal,
        ),
        events=events,
    )
    history: list[dict[str, Any]] = []
    if req.execution_arn:
        described = src.executions.describe(req.execution_arn)
        if described is not None:
            detail.execution = _execution_info(src, described)
            detail.definition = src.executions.definition(req.execution_arn)
            history = src.executions.history(req.execution_arn)
    if detail.definition is None:
        detail.definition = _deployed_definition(src, req.workflow)
    detail.history_count = len(history)
    detail.states = state_runs(detail.definition, history, expand=expand)
    return detail


def _json_safe(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_json_safe(v) for v in value]
    if isinstance(value, datetime):
        return (value if value.tzinfo else value.replace(tzinfo=UTC)).isoformat()
    return value


def execution_history(src: Sources, id: str, *, user: str | None = None) -> list[dict[str, Any]]:
    """The raw GetExecutionHistory events of the request's execution (every page), JSON-safe."""
    req = _request(src, id, user)
    if not req.execution_arn:
        raise NotFoundError(f"request {req.request_id!r} has no execution (status {req.status.value})")
    return [_json_safe(e) for e in src.executions.history(req.execution_arn)]


# -- actions --------------------------------------------------------------------------------------------


def cancel(src: Sources, id: str, *, user: str | None = None) -> bool:
    """Cancel as the protocol's ``cancel`` does (StopExecution, then the CANCELLED terminal event pushed to
    the user's connections). True when this call ended the request; False when it had already ended."""
    req = _request(src, id, user)
    try:
        return src.service.cancel(req.user_id, req.request_id)
    except ProtocolError as exc:
        if exc.code is ErrorCode.NOT_FOUND:
            raise NotFoundError(f"no request {req.request_id!r}") from exc
        raise


def rerun(src: Sources, id: str, *, user: str | None = None) -> str:
    """Submit a new request with the same user, workflow and payload; returns its request id."""
    req = _request(src, id, user)
    return src.service.submit(req.user_id, req.workflow, req.payload, None).request.request_id


# -- connections ----------------------------------------------------------------------------------------


def connections(src: Sources, *, now: int | None = None) -> list[UserConnections]:
    """The live connections, per user (a Scan of the connections table: it holds only live connections)."""
    at = int(time.time()) if now is None else now
    by_user: dict[str, list[ConnectionInfo]] = {}
    for page in src.dynamodb.get_paginator("scan").paginate(TableName=src.settings.connections_table):
        for raw in page.get("Items", []):
            item = from_ddb(raw)
            if int(item.get("expires_at", 0)) <= at:
                continue  # expired, awaiting TTL deletion
            window = item.get("rate_window")
            by_user.setdefault(str(item["user_id"]), []).append(
                ConnectionInfo(
                    connection_id=str(item["connection_id"]),
                    connected_at=datetime.fromtimestamp(int(item["connected_at"]), UTC),
                    expires_at=datetime.fromtimestamp(int(item["expires_at"]), UTC),
                    messages=int(item.get("rate_count", 0)) if window is not None and int(window) == at // 60 else 0,
                    source_ip=item.get("source_ip"),
                )
            )
    return [
        UserConnections(user_id=u, connections=sorted(c, key=lambda x: x.connected_at))
        for u, c in sorted(by_user.items())
    ]


# -- overview -------------------------------------------------------------------------------------------


def _percentile(values: list[int], q: float) -> int:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * q // 100))  # ceil
    return ordered[int(rank) - 1]


def _window_items(src: Sources, workflow: str, since: int, until: int) -> Iterator[dict[str, Any]]:
    kwargs: dict[str, Any] = {
        "TableName": src.settings.requests_table,
        "IndexName": BY_WORKFLOW_CREATED,
        "KeyConditionExpression": "workflow = :w AND created_at BETWEEN :a AND :b",
        "ExpressionAttributeValues": {":w": {"S": workflow}, ":a": {"N": str(since)}, ":b": {"N": str(until)}},
        "ScanIndexForward": False,
    }
    while True:
        resp = src.dynamodb.query(**kwargs)
        for item in resp.get("Items", []):
            yield from_ddb(item)
        if "LastEvaluatedKey" not in resp:
            return
        kwargs["ExclusiveStartKey"] = resp["LastEvaluatedKey"]


def overview(
    src: Sources, *, window_seconds: int = 3600, now: datetime | None = None, step_sample: int = 20
) -> Overview:
    """Counts by status and workflow, requests per minute, p50/p99 durations per workflow and per step.

    A ``streamer local`` (``src.metrics_file``): every figure from the EMF metrics its handlers wrote
    (:func:`streamer.metrics.overview`) — what a user of the deployed stack sees in CloudWatch.

    A deployed stack: request counts and durations come from the requests table (``by_workflow_created``,
    the window's items); per-step durations from the execution histories of the ``step_sample`` most
    recent ended requests per workflow (a history is one call per execution: bounded so the page stays
    fast). ``Overview.origins`` says which, figure by figure.
    """
    if src.metrics_file is not None:
        return _metrics_overview(src.metrics_file, window_seconds, now)
    until_dt = (now or datetime.now(UTC)).astimezone(UTC)
    since_dt = until_dt - timedelta(seconds=window_seconds)
    since, until = int(since_dt.timestamp()), int(until_dt.timestamp())
    by_status: dict[str, int] = {}
    by_workflow: dict[str, int] = {}
    per_minute: dict[int, int] = {}
    durations: list[DurationStat] = []
    sampled = 0
    for workflow in src.workflows():
        ended: list[dict[str, Any]] = []
        request_ms: list[int] = []
        for item in _window_items(src, workflow, since, until):
            status = str(item.get("status", ""))
            by_status[status] = by_status.get(status, 0) + 1
            by_workflow[workflow] = by_workflow.get(workflow, 0) + 1
            minute = int(item["created_at"]) // 60 * 60
            per_minute[minute] = per_minute.get(minute, 0) + 1
            if status not in (RequestStatus.PENDING.value, RequestStatus.RUNNING.value):
                request_ms.append((int(item.get("updated_at", item["created_at"])) - int(item["created_at"])) * 1000)
                if item.get("execution_arn"):
                    ended.append(item)
        if request_ms:
            durations.append(
                DurationStat(
                    workflow=workflow,
                    count=len(request_ms),
                    p50_ms=_percentile(request_ms, 50),
                    p99_ms=_percentile(request_ms, 99),
                )
            )
        steps: dict[str, list[int]] = {}
        for item in ended[:step_sample]:
            history = src.executions.history(str(item["execution_arn"]))
            sampled += 1
            for run in _flatten(state_runs(None, history, expand=True)):
                if run.duration_ms is not None and run.status in ("succeeded", "caught", "failed"):
                    steps.setdefault(run.name, []).append(run.duration_ms)
        for step, values in sorted(steps.items()):
            durations.append(
                DurationStat(
                    workflow=workflow,
                    step=step,
                    count=len(values),
                    p50_ms=_percentile(values, 50),
                    p99_ms=_percentile(values, 99),
                )
            )
    series = [
        MinuteCount(minute=datetime.fromtimestamp(m, UTC), count=per_minute.get(m, 0))
        for m in range(since // 60 * 60, until // 60 * 60 + 60, 60)
    ]
    return Overview(
        window_seconds=window_seconds,
        since=since_dt,
        until=until_dt,
        total=sum(by_workflow.values()),
        by_status=by_status,
        by_workflow=by_workflow,
        per_minute=series,
        durations=durations,
        step_sample=sampled,
        source="tables",
        origins={
            "by_status": "requests table: status of the requests created in the window",
            "by_workflow": "requests table: requests created in the window",
            "per_minute": "requests table: created_at",
            "workflow_durations": "requests table: updated_at - created_at of the ended requests",
            "step_durations": f"execution histories of the {sampled} most recent ended executions",
        },
    )


def _metrics_overview(path: Path, window_seconds: int, now: datetime | None) -> Overview:
    """The overview from the EMF lines in ``path`` (the names are the metrics': docs/observability.md)."""
    end = (now or datetime.now(UTC)).timestamp()
    series = metricsfile.read(path, since=end - window_seconds, until=end)  # parsed once, then followed
    ov = metrics.overview(series, window_seconds=window_seconds, now=end)
    # STARTED, then the terminal statuses (requests that ended in the window); SUBMITTED is the total.
    order = ["STARTED", *(s.value for s in RequestStatus if s.terminal)]
    counts = ov["by_status"]
    by_status = {k: int(counts[k]) for k in sorted(counts, key=lambda k: order.index(k) if k in order else 99)}
    by_status.pop("SUBMITTED", None)
    durations = [
        DurationStat(
            workflow=d["workflow"],
            step=d["step"],
            count=int(d["count"]),
            p50_ms=round(d["p50_ms"]),
            p99_ms=round(d["p99_ms"]),
        )
        for d in sorted(ov["durations"], key=lambda d: (d["step"] is not None, d["workflow"] or "", d["step"] or ""))
    ]
    ns = metrics.namespace()
    return Overview(
        window_seconds=window_seconds,
        since=datetime.fromtimestamp(ov["since"], UTC),
        until=datetime.fromtimestamp(ov["until"], UTC),
        total=int(ov["by_status"].get("SUBMITTED", 0)),
        by_status=by_status,
        by_workflow=ov["by_workflow"],
        per_minute=[MinuteCount(minute=datetime.fromtimestamp(m, UTC), count=c) for m, c in ov["per_minute"]],
        durations=durations,
        source="metrics",
        origins={
            "by_status": f"EMF metrics {ns}/RequestsSubmitted (requests), RequestsStarted, "
            "Requests{Succeeded,Failed,Cancelled,TimedOut} (Sum)",
            "by_workflow": f"EMF metric {ns}/RequestsSubmitted by workflow (Sum)",
            "per_minute": f"EMF metric {ns}/RequestsSubmitted (Sum per minute)",
            "workflow_durations": f"EMF metric {ns}/RequestDuration by workflow (p50, p99)",
            "step_durations": f"EMF metric {ns}/StepDuration by step, each attempt (p50, p99)",
            "file": str(path),
        },
        connects_refused=ov["connects_refused"],
        rate_limited=ov["rate_limited"],
        pushes_to_gone_connections=ov["pushes_to_gone_connections"],
        stream_records_retried=ov["stream_records_retried"],
    )


def _flatten(runs: list[StateRun]) -> Iterator[StateRun]:
    for run in runs:
        yield run
        if run.iterations is not None and run.iterations.items:
            for it in run.iterations.items:
                yield from _flatten(it.states)
        for branch in run.branches or []:
            yield from _flatten(branch.states)
