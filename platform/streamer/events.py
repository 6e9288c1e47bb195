"""Every event that crosses a boundary into the platform, modelled once (snake_case fields, AWS's names as
aliases, ``Literal`` where AWS fixes the value — the shape of Powertools' parser models). No raw dict travels
past a handler: each handler validates its event into one of these and hands the model to plain logic.

* :class:`WebSocketEvent` — API Gateway WebSocket ``$connect`` / ``$disconnect`` / message events;
* :class:`RequestInsert` — a DynamoDB stream ``INSERT`` record of the requests table (the stream router);
* :class:`StepEvent` — the step runner's event (a step Task's ``Parameters``);
* :class:`NotifyEvent` — the notify task's event; :class:`StepFunctionsError` — Step Functions'
  ``{"Error", "Cause"}``;
* :class:`ExecutionStatusChange` — EventBridge "Step Functions Execution Status Change".
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from streamer.aws.codec import from_ddb
from streamer.models import RequestRef

__all__ = [
    "ExecutionDataDetails",
    "ExecutionStatusChange",
    "ExecutionStatusDetail",
    "NotifyEvent",
    "RequestInsert",
    "StepEvent",
    "StepFunctionsError",
    "WebSocketEvent",
    "ended_in_batch",
]


# -- API Gateway WebSocket -----------------------------------------------------------------------------------


class Identity(BaseModel):
    model_config = ConfigDict(extra="ignore")
    source_ip: str | None = Field(default=None, alias="sourceIp")


class RequestContext(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True)
    connection_id: str = Field(alias="connectionId", min_length=1)
    route_key: str = Field(alias="routeKey")
    event_type: Literal["CONNECT", "DISCONNECT", "MESSAGE"] = Field(alias="eventType")
    domain_name: str | None = Field(default=None, alias="domainName")
    stage: str | None = None
    request_id: str | None = Field(default=None, alias="requestId")
    identity: Identity = Field(default_factory=Identity)


class WebSocketEvent(BaseModel):
    """An API Gateway WebSocket event (https://docs.aws.amazon.com/apigateway/latest/developerguide/apigateway-websocket-api-mapping-template-reference.html)."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True)
    request_context: RequestContext = Field(alias="requestContext")
    headers: dict[str, str] | None = None
    query_string_parameters: dict[str, str] | None = Field(default=None, alias="queryStringParameters")
    body: str | None = None
    is_base64_encoded: bool = Field(default=False, alias="isBase64Encoded")

    @classmethod
    def parse(cls, event: dict[str, Any]) -> WebSocketEvent:
        return cls.model_validate(event)

    @property
    def management_endpoint(self) -> str | None:
        """``https://{domainName}/{stage}``: the Management API endpoint of the API this event came from."""
        ctx = self.request_context
        if ctx.domain_name and ctx.stage:
            return f"https://{ctx.domain_name}/{ctx.stage}"
        return None


# -- DynamoDB stream (requests table) ------------------------------------------------------------------------


class RequestInsert(BaseModel):
    """The part of a requests-table stream record the stream router acts on: who, which request (and which
    incarnation of it), and its payload.

    Built with :meth:`from_record`, which returns ``None`` for anything but ``INSERT`` (MODIFY and REMOVE
    records are ignored by design) and raises ``ValueError`` for an INSERT without a new image (the stream's
    view type must include new images).
    """

    model_config = ConfigDict(extra="ignore", frozen=True)
    user_id: str
    request_id: str
    workflow: str
    #: The request as stored, so the stream router starts it without reading it again.
    incarnation: str = ""
    payload: dict[str, Any] = Field(default_factory=dict)

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> RequestInsert | None:
        if record.get("eventName") != "INSERT":
            return None
        image = (record.get("dynamodb") or {}).get("NewImage")
        if not image:
            raise ValueError("INSERT record without NewImage (stream view type must include new images)")
        return cls.model_validate(from_ddb(image))

    @property
    def incarnation_key(self) -> tuple[str, str, str]:
        return (self.user_id, self.request_id, self.incarnation)


_TERMINAL_STATUSES = frozenset({"SUCCEEDED", "FAILED", "CANCELLED", "TIMED_OUT"})


def ended_in_batch(records: list[dict[str, Any]]) -> set[tuple[str, str, str]]:
    """(user_id, request_id, incarnation) of the requests a batch of requests-table stream records shows
    ended (a MODIFY whose new image has a terminal status): their INSERT in the same batch need not start an
    execution — records of one item arrive in order, so the request was cancelled (or rejected) before the
    stream router reached it."""
    out: set[tuple[str, str, str]] = set()
    for record in records:
        if not isinstance(record, dict) or not isinstance(record.get("dynamodb"), dict):
            continue
        image = record["dynamodb"].get("NewImage")
        if record.get("eventName") != "MODIFY" or not isinstance(image, dict):
            continue
        try:
            item = from_ddb(image)
        except (TypeError, ValueError, KeyError):
            continue
        if item.get("status") in _TERMINAL_STATUSES:
            out.add((str(item.get("user_id")), str(item.get("request_id")), str(item.get("incarnation") or "")))
    return out


# -- Step Functions tasks ------------------------------------------------------------------------------------


class StepEvent(BaseModel):
    """The step runner's event (the step Task's ``Parameters``)."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    step: str
    request: RequestRef
    input: Any = Field(default_factory=dict)
    #: ``$$.State.RetryCount``.
    attempt: int = Field(default=0, ge=0)


class StepFunctionsError(BaseModel):
    """Step Functions' ``{"Error", "Cause"}`` (a Catch's ``ResultPath`` output, or a failed execution's)."""

    model_config = ConfigDict(populate_by_name=True, extra="ignore")
    error: str = Field(default="States.TaskFailed", alias="Error")
    cause: str | None = Field(default=None, alias="Cause")


class NotifyEvent(BaseModel):
    """The notify task's event: a step boundary's progress, the final result, or the failure a Catch caught."""

    model_config = ConfigDict(extra="ignore")
    kind: Literal["progress", "result", "failure"]
    request: RequestRef
    step: str = ""
    percent: int = 0
    message: str = ""
    output: dict[str, Any] | None = None
    error: StepFunctionsError | None = None


# -- EventBridge ---------------------------------------------------------------------------------------------


class ExecutionDataDetails(BaseModel):
    model_config = ConfigDict(extra="ignore")
    #: False when the data was left out of the event (EventBridge events are limited to 256 KiB).
    included: bool = True


class ExecutionStatusDetail(BaseModel):
    """``detail`` of a "Step Functions Execution Status Change" event (dates are epoch milliseconds)."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True)
    execution_arn: str = Field(alias="executionArn")
    state_machine_arn: str = Field(alias="stateMachineArn")
    name: str
    status: Literal["RUNNING", "SUCCEEDED", "FAILED", "TIMED_OUT", "ABORTED", "PENDING_REDRIVE"]
    start_date: int | None = Field(default=None, alias="startDate")
    stop_date: int | None = Field(default=None, alias="stopDate")
    input: str | None = None
    input_details: ExecutionDataDetails | None = Field(default=None, alias="inputDetails")
    error: str | None = None
    cause: str | None = None


class ExecutionStatusChange(BaseModel):
    """The EventBridge event Step Functions sends to the default bus when an execution changes status
    (https://docs.aws.amazon.com/step-functions/latest/dg/eventbridge-integration.html)."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True)
    version: str = "0"
    id: str = ""
    detail_type: Literal["Step Functions Execution Status Change"] = Field(alias="detail-type")
    source: Literal["aws.states"]
    account: str = ""
    time: str = ""
    region: str = ""
    resources: list[str] = Field(default_factory=list)
    detail: ExecutionStatusDetail
