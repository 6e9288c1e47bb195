"""Wire protocol v1 (normative text: ``docs/protocol.md``).

Sans-I/O: these models parse client frames and shape server frames; nothing here talks to AWS.
"""

from __future__ import annotations

import enum
import json
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from streamer.errors import ErrorCode, ProtocolError
from streamer.limits import MAX_MESSAGE_BYTES, SUBPROTOCOL, WORKFLOW_NAME_PATTERN

__all__ = [
    "MAX_MESSAGE_BYTES",
    "REQUEST_ID_PATTERN",
    "SUBPROTOCOL",
    "TERMINAL_EVENT_TYPES",
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
    "unstorable",
    "validation_details",
]

REQUEST_ID_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"


#: The server frames that end a request: exactly one per request, always its last ``seq``.
TERMINAL_EVENT_TYPES = frozenset({"result", "error"})


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


RequestId = Annotated[str, Field(pattern=REQUEST_ID_PATTERN)]


class _Action(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class PingAction(_Action):
    action: Literal["ping"]


class WorkflowsAction(_Action):
    action: Literal["workflows"]


class SubmitAction(_Action):
    action: Literal["submit"]
    workflow: Annotated[str, Field(min_length=1, max_length=80, pattern=WORKFLOW_NAME_PATTERN)]
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


def validation_details(exc: ValidationError, prefix: tuple[str, ...] = ()) -> list[dict[str, Any]]:
    """The ``details`` of a VALIDATION_ERROR: locations and messages only, never the input back (it may be
    large or sensitive), at most 20."""
    return [
        {"loc": [*prefix, *(str(p) for p in err["loc"])], "msg": err["msg"], "type": err["type"]}
        for err in exc.errors(include_url=False, include_input=False, include_context=False)
    ][:20]


def parse_action(raw: str | bytes) -> Action:
    """Parse one client frame. Raises :class:`~streamer.errors.ProtocolError` with the documented code."""
    size = len(raw.encode("utf-8") if isinstance(raw, str) else raw)
    if size > MAX_MESSAGE_BYTES:
        raise ProtocolError(
            ErrorCode.PAYLOAD_TOO_LARGE,
            f"message is {size} bytes; the limit is {MAX_MESSAGE_BYTES}",
            {"limit": MAX_MESSAGE_BYTES, "size": size},
        )
    try:
        data = json.loads(raw)
    except (ValueError, RecursionError) as exc:
        raise ProtocolError(ErrorCode.VALIDATION_ERROR, "message is not valid JSON") from exc
    if not isinstance(data, dict):
        raise ProtocolError(ErrorCode.VALIDATION_ERROR, "message must be a JSON object")
    action = data.get("action")
    if not isinstance(action, str):
        raise ProtocolError(ErrorCode.VALIDATION_ERROR, "field 'action' (string) is required")
    if action not in ACTIONS:
        raise ProtocolError(
            ErrorCode.UNKNOWN_ACTION,
            f"unknown action {action[:64]!r}",
            {"actions": list(ACTIONS)},
        )
    try:
        parsed = _ACTION_ADAPTER.validate_python(data)
    except ValidationError as exc:
        raise ProtocolError(ErrorCode.VALIDATION_ERROR, f"invalid '{action}' message", validation_details(exc)) from exc
    except RecursionError as exc:  # pathological nesting inside payload
        raise ProtocolError(ErrorCode.VALIDATION_ERROR, "message is nested too deeply") from exc
    if isinstance(parsed, SubmitAction):
        problems = unstorable(parsed.payload, ("payload",))
        if problems:
            raise ProtocolError(
                ErrorCode.VALIDATION_ERROR, "the payload holds values that cannot be stored", problems[:20]
            )
    return parsed


#: DynamoDB numbers: at most 38 significant digits, magnitude from 1E-130 to below 1E+126; documents nest at
#: most 32 levels (the payload is one of them); strings are UTF-8
#: (https://docs.aws.amazon.com/amazondynamodb/latest/developerguide/HowItWorks.NamingRulesDataTypes.html,
#: https://docs.aws.amazon.com/amazondynamodb/latest/developerguide/ServiceQuotas.html).
_MAX_INT = 10**38
_MAX_NUMBER = 1e126
_MIN_NUMBER = 1e-130
MAX_PAYLOAD_DEPTH = 31


def _bad_string(s: str) -> bool:
    try:
        s.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate such as "\ud800"
        return True
    return False


def unstorable(value: Any, prefix: tuple[str, ...] = ()) -> list[dict[str, Any]]:
    """Where ``value`` (parsed JSON) holds something DynamoDB cannot store: NaN or Infinity, an integer of
    more than 38 digits, a number out of DynamoDB's range, a string (or key) that is not valid UTF-8 (a lone
    surrogate), nesting deeper than :data:`MAX_PAYLOAD_DEPTH`. Details as :func:`validation_details`, never
    the value itself. Iterative: no recursion limit to hit."""
    problems: list[dict[str, Any]] = []
    stack: list[tuple[Any, tuple[str, ...], int]] = [(value, prefix, 0)]
    while stack and len(problems) < 20:
        item, loc, depth = stack.pop()

        def bad(msg: str, kind: str, where: tuple[str, ...] = loc) -> None:
            problems.append({"loc": list(where), "msg": msg, "type": kind})

        if isinstance(item, bool) or item is None:
            continue
        if isinstance(item, int):
            if abs(item) >= _MAX_INT:
                bad("integer has more than 38 digits", "number_too_precise")
        elif isinstance(item, float):
            if item != item or item in (float("inf"), float("-inf")):
                bad("NaN and Infinity cannot be stored", "number_not_finite")
            elif abs(item) >= _MAX_NUMBER or (item != 0 and abs(item) < _MIN_NUMBER):
                bad("number out of range (1E-130 to 1E+126)", "number_out_of_range")
        elif isinstance(item, str):
            if _bad_string(item):
                bad("string is not valid UTF-8 (lone surrogate)", "string_unicode")
        elif isinstance(item, dict | list):
            if depth >= MAX_PAYLOAD_DEPTH:
                bad(f"nested more than {MAX_PAYLOAD_DEPTH} levels", "too_deep")
                continue
            pairs = item.items() if isinstance(item, dict) else enumerate(item)
            for k, v in pairs:
                key = str(k)
                if isinstance(k, str) and _bad_string(k):
                    bad("key is not valid UTF-8 (lone surrogate)", "string_unicode", loc)
                    key = "?"
                stack.append((v, (*loc, key), depth + 1))
    return sorted(problems, key=lambda p: [str(x) for x in p["loc"]])


def error_frame(code: ErrorCode, message: str, details: Any = None) -> dict[str, Any]:
    """An error frame not tied to a stored request."""
    return ProtocolError(code, message, details).to_wire()
