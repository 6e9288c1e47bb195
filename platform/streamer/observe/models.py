"""The results of :mod:`streamer.observe`: pydantic models, one JSON shape for the terminal and the console.

The console's JSON API returns ``model.model_dump(mode="json")`` of these; ``streamer executions … --json``
prints the same. Field names are a contract (add fields, never rename). Times are timezone-aware UTC
datetimes; durations are integer milliseconds.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field

__all__ = [
    "BranchRun",
    "ConnectionInfo",
    "DurationStat",
    "ExecutionDetail",
    "ExecutionInfo",
    "ExecutionPage",
    "ExecutionSummary",
    "MapIteration",
    "MapSummary",
    "MinuteCount",
    "Overview",
    "RequestInfo",
    "RetryAttempt",
    "StateRun",
    "StateStatus",
    "StoredEvent",
    "UserConnections",
]

#: A state's status in one execution (the console colours states by it).
StateStatus = Literal["not_reached", "running", "succeeded", "failed", "caught", "cancelled"]


class ExecutionSummary(BaseModel):
    """One row of the executions list: a request joined to its execution."""

    #: Stable, opaque id of the row (user and request id); ``show_execution`` accepts it.
    id: str
    request_id: str
    user_id: str
    workflow: str
    #: The request's status (what its clients were told): PENDING, RUNNING, SUCCEEDED, FAILED, CANCELLED, TIMED_OUT.
    status: str
    created_at: datetime
    #: When the request started running / ended (the requests table keeps second precision).
    started_at: datetime | None = None
    stopped_at: datetime | None = None
    duration_ms: int | None = None
    execution_arn: str | None = None
    console_url: str | None = None
    error_code: str | None = None
    error_message: str | None = None


class ExecutionPage(BaseModel):
    items: list[ExecutionSummary]
    #: Pass to ``list_executions(cursor=…)`` for the next (older) page; None on the last page.
    next_cursor: str | None = None


class RetryAttempt(BaseModel):
    """One failed attempt of a state that was retried (Retry), and how long Step Functions waited."""

    attempt: int
    error: str | None = None
    cause: str | None = None
    started_at: datetime | None = None
    failed_at: datetime | None = None
    #: From this attempt's failure to the next attempt's start (the Retry interval and backoff).
    delay_ms: int | None = None


class MapIteration(BaseModel):
    index: int
    status: StateStatus
    states: list[StateRun] = Field(default_factory=list)


class MapSummary(BaseModel):
    """A Map state's iterations: counted always, listed one by one with ``expand``."""

    total: int = 0
    succeeded: int = 0
    failed: int = 0
    running: int = 0
    cancelled: int = 0
    items: list[MapIteration] | None = None


class BranchRun(BaseModel):
    """One branch of a Parallel state."""

    index: int
    status: StateStatus
    states: list[StateRun] = Field(default_factory=list)


class StateRun(BaseModel):
    """One state's run in an execution (a state entered twice — a loop — has two runs)."""

    name: str
    #: The ASL type: Task, Choice, Map, Parallel, Pass, Wait, Succeed, Fail.
    type: str
    status: StateStatus
    attempts: int = 0
    retries: list[RetryAttempt] = Field(default_factory=list)
    started_at: datetime | None = None
    stopped_at: datetime | None = None
    duration_ms: int | None = None
    input: Any = None
    output: Any = None
    error: str | None = None
    cause: str | None = None
    iterations: MapSummary | None = None
    branches: list[BranchRun] | None = None
    #: The id of the history event that entered the state (None for states not reached).
    entered_event_id: int | None = None


class StoredEvent(BaseModel):
    """One of the request's stored events, exactly as its clients received it (``body``)."""

    seq: int
    type: str
    created_at: datetime
    body: dict[str, Any]


class RequestInfo(BaseModel):
    user_id: str
    request_id: str
    workflow: str
    payload: dict[str, Any]
    status: str
    created_at: datetime
    updated_at: datetime
    execution_arn: str | None = None
    output: dict[str, Any] | None = None
    error_code: str | None = None
    error_message: str | None = None
    #: The terminal event (``result`` or ``error``) the clients got, when the request has ended.
    terminal_event: dict[str, Any] | None = None


class ExecutionInfo(BaseModel):
    """Step Functions' DescribeExecution of the request's execution."""

    arn: str
    name: str
    state_machine_arn: str
    status: str
    input: Any = None
    output: Any = None
    error: str | None = None
    cause: str | None = None
    started_at: datetime | None = None
    stopped_at: datetime | None = None
    duration_ms: int | None = None
    console_url: str | None = None


class ExecutionDetail(BaseModel):
    summary: ExecutionSummary
    request: RequestInfo
    #: None while the request is PENDING (or was rejected before an execution started).
    execution: ExecutionInfo | None = None
    #: The state machine definition (ASL) the execution ran, as deployed.
    definition: dict[str, Any] | None = None
    #: States in execution order, then the states not reached (definition order).
    states: list[StateRun] = Field(default_factory=list)
    events: list[StoredEvent] = Field(default_factory=list)
    history_count: int = 0


class ConnectionInfo(BaseModel):
    connection_id: str
    connected_at: datetime
    expires_at: datetime
    #: Messages counted in the connection's current one-minute rate-limit window.
    messages: int = 0
    source_ip: str | None = None


class UserConnections(BaseModel):
    user_id: str
    connections: list[ConnectionInfo]


class MinuteCount(BaseModel):
    minute: datetime
    count: int


class DurationStat(BaseModel):
    #: None for a step's figure from the metrics (``StepDuration`` has the ``step`` dimension only).
    workflow: str | None
    #: None: the whole request; otherwise a state of the workflow (a step, from the metrics).
    step: str | None = None
    count: int
    p50_ms: int
    p99_ms: int


class Overview(BaseModel):
    window_seconds: int
    since: datetime
    until: datetime
    total: int
    by_status: dict[str, int]
    by_workflow: dict[str, int]
    per_minute: list[MinuteCount]
    durations: list[DurationStat]
    #: How many executions' histories the per-step durations were computed from (the most recent ended ones).
    step_sample: int = 0
    #: ``metrics``: the EMF metrics the handlers wrote (``streamer local``'s metrics file), what CloudWatch
    #: would show; ``tables``: the requests table and execution histories (a deployed stack).
    source: Literal["metrics", "tables"] = "tables"
    #: Where each figure comes from, for the page: ``{"by_status": "…", "per_minute": "…", …}``.
    origins: dict[str, str] = {}
    #: Only from the metrics (None from the tables): connects refused per reason, messages rate-limited,
    #: pushes to gone connections, stream records retried.
    connects_refused: dict[str, int] | None = None
    rate_limited: int | None = None
    pushes_to_gone_connections: int | None = None
    stream_records_retried: int | None = None


MapIteration.model_rebuild()
BranchRun.model_rebuild()
