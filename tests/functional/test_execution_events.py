"""Executions that end outside the notify path: recorded EventBridge status-change events (tests/events/) through
``RequestService.end_for_status_change`` and the ``execution_events`` handler, on moto."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from streamer.aws.executions import CANCEL_ERROR, execution_arn, execution_input, execution_name
from streamer.events import ExecutionStatusDetail
from streamer.handlers import _runtime, execution_events
from streamer.models import Connection, RequestRef
from streamer.protocol import RequestStatus
from tests.functional.conftest import EVENTS_DIR

USER = "alice"
ECHO = "arn:aws:states:us-east-1:123456789012:stateMachine:streamer-echo"
REQUEST_IDS = {"aborted": "r-aborted", "failed": "r-failed", "timed_out": "r-timed-out"}


@pytest.fixture(autouse=True)
def wired(service: Any) -> Iterator[None]:
    # The recorded events name requests stored before incarnations existed (an empty incarnation keeps the
    # old key and execution name); tests/functional/test_reliability.py covers incarnations.
    service.incarnations = lambda: ""
    _runtime.set_service(service)
    yield
    _runtime.reset()


def recorded(kind: str, **detail: Any) -> dict[str, Any]:
    """tests/events/sfn_status_change_<kind>.json with ``detail`` fields overridden."""
    event: dict[str, Any] = json.loads((EVENTS_DIR / f"sfn_status_change_{kind}.json").read_text())
    event["detail"].update(detail)
    return event


def connect(service: Any, mgmt_api: Any, cid: str, user: str = USER) -> None:
    now = service.now()
    service.connections.put(Connection(connection_id=cid, user_id=user, connected_at=now, expires_at=now + 3600))
    mgmt_api.open(cid)


def running(service: Any, request_id: str, progress: int = 2) -> RequestRef:
    """A submitted request whose execution is running and has sent ``progress`` events."""
    ref = service.submit(USER, "echo", {"message": "x", "steps": 20, "delay_ms": 500}, request_id).request.ref
    arn = execution_arn(ECHO, execution_name(USER, request_id))
    assert service.requests.mark_running(ref, arn, service.now())[0]
    for i in range(progress):
        service.progress(ref, "echo", (i + 1) * 5, f"step {i + 1} of 20")
    return ref  # type: ignore[no-any-return]


def test_recorded_events_name_the_requests_they_are_about() -> None:
    for kind, rid in REQUEST_IDS.items():
        detail = recorded(kind)["detail"]
        assert detail["name"] == execution_name(USER, rid)
        assert detail["executionArn"] == execution_arn(ECHO, detail["name"])
        assert RequestRef.model_validate(json.loads(detail["input"])["request"]) == RequestRef.of(USER, rid, "echo")


def test_aborted_execution_ends_the_running_request_cancelled(service: Any, mgmt_api: Any) -> None:
    connect(service, mgmt_api, "c1")
    connect(service, mgmt_api, "c2")
    connect(service, mgmt_api, "other", user="bob")
    running(service, "r-aborted")
    assert execution_events.handler(recorded("aborted"), None) == {"outcome": "ended"}
    terminal = {
        "type": "error",
        "status": "CANCELLED",
        "code": "CANCELLED",
        "message": "the execution was stopped",
        "request_id": "r-aborted",
        "seq": 3,  # right after the two progress events
    }
    for cid in ("c1", "c2"):  # every connection of the user
        got = mgmt_api.received(cid)
        assert [m["seq"] for m in got] == [1, 2, 3]
        assert got[-1] == terminal
    assert mgmt_api.received("other") == []
    st = service.status(USER, "r-aborted")
    assert (st["status"], st["code"], st["last_seq"]) == ("CANCELLED", "CANCELLED", 3)
    assert [e.body for e in service.replay(USER, "r-aborted", 2)] == [terminal]


def test_a_second_delivery_changes_nothing(service: Any, mgmt_api: Any) -> None:
    connect(service, mgmt_api, "c1")
    running(service, "r-aborted")
    event = recorded("aborted")
    assert execution_events.handler(event, None) == {"outcome": "ended"}
    assert execution_events.handler(event, None) == {"outcome": "unchanged"}
    assert [m["type"] for m in mgmt_api.received("c1")] == ["progress", "progress", "error"]
    assert service.status(USER, "r-aborted")["last_seq"] == 3


@pytest.mark.parametrize("kind", sorted(REQUEST_IDS))
def test_a_request_that_already_succeeded_is_left_alone(service: Any, mgmt_api: Any, kind: str) -> None:
    connect(service, mgmt_api, "c1")
    ref = running(service, REQUEST_IDS[kind], progress=0)
    assert service.finish(ref, RequestStatus.SUCCEEDED, output={"message": "x"}) is not None
    assert execution_events.handler(recorded(kind), None) == {"outcome": "unchanged"}
    assert [m["type"] for m in mgmt_api.received("c1")] == ["result"]
    st = service.status(USER, REQUEST_IDS[kind])
    assert st["status"] == "SUCCEEDED" and st["output"] == {"message": "x"} and st["last_seq"] == 1


def test_a_request_the_notify_task_ended_keeps_its_failure(service: Any, mgmt_api: Any) -> None:
    """NotifyFailure ended the request, then the execution failed (its Fail state): one terminal event."""
    connect(service, mgmt_api, "c1")
    ref = running(service, "r-failed", progress=1)
    service.finish(ref, RequestStatus.FAILED, message="the step's own words")
    event = recorded("failed", error="RequestFailed", cause="StepFailedError: ...")
    assert execution_events.handler(event, None) == {"outcome": "unchanged"}
    assert [m.get("message") for m in mgmt_api.received("c1")][-1] == "the step's own words"


def test_failed_with_a_runtime_error_gets_the_generic_message_and_no_cause(service: Any, mgmt_api: Any) -> None:
    connect(service, mgmt_api, "c1")
    running(service, "r-failed", progress=1)
    event = recorded("failed")
    assert event["detail"]["error"] == "States.Runtime" and "do-not-leak-7f3a" in event["detail"]["cause"]
    assert execution_events.handler(event, None) == {"outcome": "ended"}
    last = mgmt_api.received("c1")[-1]
    assert last == {
        "type": "error",
        "status": "FAILED",
        "code": "STEP_FAILED",
        "message": "the workflow failed",
        "request_id": "r-failed",
        "seq": 2,
    }
    stored = service.requests.get(USER, "r-failed")
    assert (stored.status, stored.error_code, stored.error_message) == (
        RequestStatus.FAILED,
        "STEP_FAILED",
        "the workflow failed",
    )
    assert "do-not-leak" not in json.dumps([e.body for e in service.replay(USER, "r-failed", 0)])


@pytest.mark.parametrize(
    ("error", "cause", "expected"),
    [
        # The notify task itself failed after its retries: its error is not the client's business.
        ("States.TaskFailed", '{"errorMessage": "boom", "errorType": "ClientError"}', ("FAILED", "STEP_FAILED")),
        ("States.DataLimitExceeded", "The state/task returned a result larger than 256 KiB", ("FAILED", "STEP_FAILED")),
        (None, None, ("FAILED", "STEP_FAILED")),
        # A step's own message, written on purpose, reaches the client (as through NotifyFailure).
        (
            "StepFailedError",
            '{"errorMessage": "no such city", "errorType": "StepFailedError"}',
            ("FAILED", "STEP_FAILED"),
        ),
        # A step's time limit without a Catch: a timeout, not a failure.
        ("States.Timeout", None, ("TIMED_OUT", "TIMEOUT")),
    ],
)
def test_failed_executions_map_like_the_notify_task(
    service: Any, mgmt_api: Any, error: str | None, cause: str | None, expected: tuple[str, str]
) -> None:
    connect(service, mgmt_api, "c1")
    running(service, "r-failed", progress=0)
    assert execution_events.handler(recorded("failed", error=error, cause=cause), None) == {"outcome": "ended"}
    (last,) = mgmt_api.received("c1")
    assert (last["status"], last["code"]) == expected
    if error == "StepFailedError":
        assert last["message"] == "no such city"
    elif error == "States.Timeout":
        assert last["message"] == "a step did not finish within its time limit"
    else:
        assert last["message"] == "the workflow failed"
        assert "boom" not in json.dumps(last) and "256 KiB" not in json.dumps(last)


def test_timed_out_execution_ends_the_request_timed_out(service: Any, mgmt_api: Any) -> None:
    connect(service, mgmt_api, "c1")
    running(service, "r-timed-out", progress=3)
    assert execution_events.handler(recorded("timed_out"), None) == {"outcome": "ended"}
    assert mgmt_api.received("c1")[-1] == {
        "type": "error",
        "status": "TIMED_OUT",
        "code": "TIMEOUT",
        "message": "the workflow did not finish within its time limit",
        "request_id": "r-timed-out",
        "seq": 4,
    }
    assert service.requests.get(USER, "r-timed-out").status is RequestStatus.TIMED_OUT


def test_an_execution_stopped_by_the_protocols_cancel_says_so(service: Any, mgmt_api: Any) -> None:
    """Normally ``cancel`` ends the request itself; should the event win the race, the message is the same."""
    connect(service, mgmt_api, "c1")
    running(service, "r-aborted", progress=0)
    event = recorded("aborted", error=CANCEL_ERROR, cause="cancelled by the client")
    assert execution_events.handler(event, None) == {"outcome": "ended"}
    assert mgmt_api.received("c1")[-1]["message"] == "cancelled by the client"


def test_an_input_left_out_of_the_event_is_read_from_the_execution(
    service: Any, mgmt_api: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    connect(service, mgmt_api, "c1")
    ref = running(service, "r-aborted", progress=0)
    asked: list[str] = []

    class Sfn:
        def describe_execution(self, executionArn: str) -> dict[str, Any]:
            asked.append(executionArn)
            return {"executionArn": executionArn, "input": execution_input(ref, {"message": "x" * 300_000})}

    monkeypatch.setattr(service.executions.slot, "_client", Sfn())
    event = recorded("aborted", input=None, inputDetails={"included": False})
    assert execution_events.handler(event, None) == {"outcome": "ended"}
    assert asked == [event["detail"]["executionArn"]]
    assert mgmt_api.received("c1")[-1]["status"] == "CANCELLED"


def _other_stack(detail: dict[str, Any]) -> dict[str, Any]:
    # Stack "streamer-staging": its state machines share our ARN prefix "…:stateMachine:streamer-".
    sm = "arn:aws:states:us-east-1:123456789012:stateMachine:streamer-staging-echo"
    return {"stateMachineArn": sm, "executionArn": execution_arn(sm, detail["name"])}


IGNORED: dict[str, tuple[Any, str]] = {
    "empty event": (lambda d: None, "unreadable"),
    "input not JSON": (lambda d: {"input": "{not json"}, "unreadable"),
    "input a JSON list": (lambda d: {"input": "[1, 2]"}, "unreadable"),
    "input without request": (lambda d: {"input": json.dumps({"payload": {}})}, "unreadable"),
    "request incomplete": (lambda d: {"input": json.dumps({"request": {"user_id": USER}})}, "unreadable"),
    "input missing": (lambda d: {"input": None}, "unreadable"),
    "another account's state machine": (
        lambda d: {"stateMachineArn": "arn:aws:states:us-east-1:999999999999:stateMachine:streamer-echo"},
        "foreign",
    ),
    "another stack with our prefix": (_other_stack, "foreign"),
    "an execution started by hand": (lambda d: {"name": "debug-run-1"}, "foreign"),
    "a forged request key": (
        lambda d: {"input": json.dumps({"request": {**json.loads(d["input"])["request"], "request_key": "0" * 32}})},
        "foreign",
    ),
    "another workflow's state machine": (lambda d: {"stateMachineArn": ECHO.replace("echo", "textstats")}, "foreign"),
    "SUCCEEDED": (lambda d: {"status": "SUCCEEDED", "output": '{"message": "x"}'}, "ignored"),
    "RUNNING": (lambda d: {"status": "RUNNING", "stopDate": None}, "ignored"),
    "PENDING_REDRIVE": (lambda d: {"status": "PENDING_REDRIVE"}, "ignored"),
}


@pytest.mark.parametrize("case", sorted(IGNORED))
def test_events_not_about_our_requests_are_ignored_without_raising(service: Any, mgmt_api: Any, case: str) -> None:
    connect(service, mgmt_api, "c1")
    running(service, "r-aborted", progress=1)
    change, outcome = IGNORED[case]
    event = recorded("aborted")
    over = change(event["detail"])
    if over is None:
        event = {}
    else:
        event["detail"].update(over)
    assert execution_events.handler(event, None) == {"outcome": outcome}
    assert [m["type"] for m in mgmt_api.received("c1")] == ["progress"]
    assert service.requests.get(USER, "r-aborted").status is RequestStatus.RUNNING


@pytest.mark.parametrize(
    "event",
    [
        {"source": "aws.states", "detail-type": "Step Functions State Machine Status Change", "detail": {}},
        {"source": "aws.ec2", "detail-type": "Step Functions Execution Status Change", "detail": {}},
        {"detail": "garbage"},
        {"Records": []},
    ],
)
def test_other_events_are_ignored_without_raising(event: dict[str, Any]) -> None:
    assert execution_events.handler(event, None) == {"outcome": "unreadable"}


def test_an_expired_request_is_unknown(service: Any, mgmt_api: Any) -> None:
    connect(service, mgmt_api, "c1")
    assert execution_events.handler(recorded("aborted"), None) == {"outcome": "unknown"}
    assert mgmt_api.received("c1") == []
    assert service.requests.get(USER, "r-aborted") is None  # nothing was created either


def test_plain_logic_without_the_handler(service: Any) -> None:
    ref = running(service, "r-timed-out", progress=0)
    detail = ExecutionStatusDetail.model_validate(recorded("timed_out")["detail"])
    assert service.end_for_status_change(detail) == "ended"
    assert service.end_for_status_change(detail) == "unchanged"
    (event,) = service.replay(USER, ref.request_id, 0)
    assert event.body["status"] == "TIMED_OUT"
