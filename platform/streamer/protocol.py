"""Wire protocol v1 (normative text: ``docs/protocol.md``).

Sans-I/O: these models parse client frames and shape server frames; nothing here talks to AWS.
"""

from __future__ import annotations

import enum
import json
import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

__all__ = [
    "MAX_MESSAGE_BYTES",
    "PROTOCOL_VERSION",
    "REQUEST_ID_PATTERN",
    "SUBPROTOCOL",
    "Action",
    "CancelAction",
    "ErrorCode",
    "PingAction",
    "RequestStatus",
    "ResumeAction",
    "StatusAction",
    "SubmitAction",
    "WorkflowsAction",
    "error_frame",
    "parse_action",
]

PROTOCOL_VERSION = 1
SUBPROTOCOL = "streamer.v1"
#: API Gateway WebSocket frame limit (https://docs.aws.amazon.com/apigateway/latest/developerguide/limits.html):
#: 128 KiB per message.
MAX_MESSAGE_BYTES = 128 * 1024
REQUEST_ID_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"
_REQUEST_ID_RE = re.compile(REQUEST_ID_PATTERN)


class ErrorCode(enum.StrEnum):
    """The closed set of error codes on the wire."""

    VALIDATION_ERROR = "VALIDATION_ERROR"
    UNKNOWN_ACTION = "UNKNOWN_ACTION"
    UNKNOWN_WORKFLOW = "UNKNOWN_WORKFLOW"
    NOT_FOUND = "NOT_FOUND"
    CONFLICT = "CONFLICT"
    FORBIDDEN = "FORBIDDEN"
    PAYLOAD_TOO_LARGE = "PAYLOAD_TOO_LARGE"
    RATE_LIMITED = "RATE_LIMITED"
    STEP_FAILED = "STEP_FAILED"
    TIMEOUT = "TIMEOUT"
    CANCELLED = "CANCELLED"
    INTERNAL_ERROR = "INTERNAL_ERROR"


class RequestStatus(enum.StrEnum):
    PENDING = "PENDING"
    RUNNING = "RUNNING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"
    TIMED_OUT = "TIMED_OUT"

    @property
    def terminal(self) -> bool:
        return self not in (RequestStatus.PENDING, RequestStatus.RUNNING)


TERMINAL_STATUSES = frozenset(s for s in RequestStatus if s.terminal)

RequestId = Annotated[str, Field(pattern=REQUEST_ID_PATTERN)]


class _Action(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class PingAction(_Action):
    action: Literal["ping"]


class WorkflowsAction(_Action):
    action: Literal["workflows"]


class SubmitAction(_Action):
    action: Literal["submit"]
    workflow: Annotated[str, Field(min_length=1, max_length=80, pattern=r"^[A-Za-z0-9_-]+$")]
    payload: dict[str, Any] = Field(default_factory=dict)
    request_id: RequestId | None = None


class StatusAction(_Action):
    action: Literal["status"]
    request_id: RequestId


class CancelAction(_Action):
    action: Literal["cancel"]
    request_id: RequestId


class ResumeAction(_Action):
    action: Literal["resume"]
    request_id: RequestId
    after_seq: Annotated[int, Field(ge=0)] = 0


Action = Annotated[
    PingAction | WorkflowsAction | SubmitAction | StatusAction | CancelAction | ResumeAction,
    Field(discriminator="action"),
]
_ACTION_ADAPTER: TypeAdapter[Action] = TypeAdapter(Action)
ACTIONS = ("ping", "submit", "status", "cancel", "resume", "workflows")


class FrameError(Exception):
    """A client frame that is not a valid action; carries the wire error (sans-I/O, no AWS)."""

    def __init__(self, code: ErrorCode, message: str, details: Any = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.details = details


def _validation_details(exc: ValidationError) -> list[dict[str, Any]]:
    # Only locations and messages: never echo the input back (it may be large or sensitive).
    return [
        {"loc": [str(p) for p in err["loc"]], "msg": err["msg"], "type": err["type"]}
        for err in exc.errors(include_url=False, include_input=False, include_context=False)
    ][:20]


def parse_action(raw: str | bytes) -> Action:
    """Parse one client frame. Raises :class:`FrameError` with the documented code."""
    size = len(raw.encode("utf-8") if isinstance(raw, str) else raw)
    if size > MAX_MESSAGE_BYTES:
        raise FrameError(
            ErrorCode.PAYLOAD_TOO_LARGE,
            f"message is {size} bytes; the limit is {MAX_MESSAGE_BYTES}",
            {"limit": MAX_MESSAGE_BYTES, "size": size},
        )
    try:
        data = json.loads(raw)
    except (ValueError, RecursionError) as exc:
        raise FrameError(ErrorCode.VALIDATION_ERROR, "message is not valid JSON") from exc
    if not isinstance(data, dict):
        raise FrameError(ErrorCode.VALIDATION_ERROR, "message must be a JSON object")
    action = data.get("action")
    if not isinstance(action, str):
        raise FrameError(ErrorCode.VALIDATION_ERROR, "field 'action' (string) is required")
    if action not in ACTIONS:
        raise FrameError(
            ErrorCode.UNKNOWN_ACTION,
            f"unknown action {action[:64]!r}",
            {"actions": list(ACTIONS)},
        )
    try:
        return _ACTION_ADAPTER.validate_python(data)
    except ValidationError as exc:
        raise FrameError(ErrorCode.VALIDATION_ERROR, f"invalid '{action}' message", _validation_details(exc)) from exc
    except RecursionError as exc:  # pathological nesting inside payload
        raise FrameError(ErrorCode.VALIDATION_ERROR, "message is nested too deeply") from exc


def is_valid_request_id(value: str) -> bool:
    return bool(_REQUEST_ID_RE.match(value))


def error_frame(code: ErrorCode, message: str, details: Any = None, **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"type": "error", "code": code.value, "message": message, **extra}
    if details is not None:
        body["details"] = details
    return body
