"""The local EventBridge stand-in: the template's status-change rules, and the poller that turns executions
(moto's Step Functions, in-process) into "Step Functions Execution Status Change" events for a scripted
function."""

from __future__ import annotations

import datetime as dt
import json
import re
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto import mock_aws

from streamer.local import StartupError
from streamer.local.eventbridge import (
    DETAIL_TYPE,
    MAX_EVENT_DATA_BYTES,
    ExecutionEventsPoller,
    RuleConfig,
    TargetConfig,
    status_change_event,
    status_change_rules,
)
from streamer.local.invoke import InvokeResult
from streamer.local.plan import local_refs, plan_from_template
from streamer.local.retry import EVENT_RETRIES

#: EventBridge's RetryPolicy allows 185 retries; the local ceiling of an event target.
RETRY_CEILING = EVENT_RETRIES.ceiling

REGION = "us-east-1"
CREDS = {"region_name": REGION, "aws_access_key_id": "testing", "aws_secret_access_key": "testing"}
PREFIX = "arn:aws:states:us-east-1:123456789012:stateMachine:streamer-"
RULE = RuleConfig(
    "ExecutionEndedRule",
    {
        "source": ["aws.states"],
        "detail-type": [DETAIL_TYPE],
        "detail": {"status": ["FAILED", "TIMED_OUT", "ABORTED"], "stateMachineArn": [{"prefix": PREFIX}]},
    },
    (TargetConfig("ExecutionEventsFunction", 185),),
)
DEFINITIONS = {
    "streamer-fails": {"StartAt": "F", "States": {"F": {"Type": "Fail", "Error": "Boom", "Cause": "it broke"}}},
    "streamer-waits": {"StartAt": "W", "States": {"W": {"Type": "Wait", "Seconds": 60, "End": True}}},
    "streamer-passes": {"StartAt": "P", "States": {"P": {"Type": "Pass", "End": True}}},
    "elsewhere-fails": {"StartAt": "F", "States": {"F": {"Type": "Fail", "Error": "Boom"}}},
}


def test_status_change_rules_come_from_the_template() -> None:
    plan = plan_from_template(check_plugins=False)
    assert plan.event_rules == [RULE]
    assert status_change_rules(plan.template, local_refs(plan)) == [RULE]
    assert RULE.targets[0].retry_bound == RETRY_CEILING  # 185 on AWS, bounded locally
    assert RULE.statuses() == {"FAILED", "TIMED_OUT", "ABORTED"}


def test_rules_for_other_events_are_not_status_change_rules() -> None:
    plan = plan_from_template(check_plugins=False)
    tpl = json.loads(json.dumps(plan.template))
    rule = tpl["Resources"]["ExecutionEndedRule"]["Properties"]
    rule["EventPattern"]["source"] = ["aws.s3"]
    assert status_change_rules(tpl, local_refs(plan)) == []
    # A rule on every aws.states event (no detail-type) receives status changes too.
    rule["EventPattern"] = {"source": ["aws.states"]}
    (any_states,) = status_change_rules(tpl, local_refs(plan))
    assert any_states.statuses() is None


def test_a_pattern_not_resolvable_locally_stops_start_up_with_the_rules_name(tmp_path: Path) -> None:
    plan = plan_from_template(check_plugins=False)
    tpl = json.loads(json.dumps(plan.template))
    detail = tpl["Resources"]["ExecutionEndedRule"]["Properties"]["EventPattern"]["detail"]
    detail["stateMachineArn"] = [{"prefix": {"Ref": "NoSuchResource"}}]
    with pytest.raises(ValueError, match="ExecutionEndedRule: event pattern not resolvable locally"):
        status_change_rules(tpl, local_refs(plan))
    path = tmp_path / "template.yaml"
    path.write_text(json.dumps(tpl))  # JSON is YAML
    with pytest.raises(StartupError, match=f"template {re.escape(str(path))}: ExecutionEndedRule: .*NoSuchResource"):
        plan_from_template(path, check_plugins=False)


def test_event_shape() -> None:
    start = dt.datetime(2026, 11, 29, 14, 1, 0, 250000, tzinfo=dt.UTC)
    desc = {
        "executionArn": "arn:aws:states:us-east-1:123456789012:execution:streamer-echo:x",
        "stateMachineArn": "arn:aws:states:us-east-1:123456789012:stateMachine:streamer-echo",
        "name": "x",
        "status": "ABORTED",
        "startDate": start,
        "stopDate": start + dt.timedelta(seconds=2),
        "input": '{"a":1}',
        "inputDetails": {"included": True},
        "ResponseMetadata": {},
    }
    event = status_change_event(desc, account="123456789012", region=REGION)
    assert event["source"] == "aws.states" and event["detail-type"] == DETAIL_TYPE
    assert event["resources"] == [desc["executionArn"]]
    assert event["time"] == "2026-11-29T14:01:02Z"
    assert event["detail"] == {
        "executionArn": desc["executionArn"],
        "stateMachineArn": desc["stateMachineArn"],
        "name": "x",
        "status": "ABORTED",
        "startDate": 1795960860250,
        "stopDate": 1795960862250,
        "input": '{"a":1}',
        "output": None,
        "inputDetails": {"included": True},
        "outputDetails": None,
        "error": None,
        "cause": None,
    }
    big = status_change_event(
        {**desc, "input": json.dumps({"x": "y" * MAX_EVENT_DATA_BYTES})}, account="1", region=REGION
    )
    assert big["detail"]["input"] is None and big["detail"]["inputDetails"] == {"included": False}


class Target:
    """A scripted function: ``answers`` are returned in order, then ``ok``."""

    def __init__(self, *answers: InvokeResult) -> None:
        self.answers = list(answers)
        self.events: list[dict[str, Any]] = []
        self.lock = threading.Lock()

    def __call__(self, function_name: str, event: dict[str, Any]) -> InvokeResult:
        assert function_name == "ExecutionEventsFunction"
        with self.lock:
            self.events.append(event)
            return self.answers.pop(0) if self.answers else InvokeResult(ok=True, payload={"outcome": "ended"})

    def statuses(self) -> list[tuple[str, str]]:
        with self.lock:
            return [(e["detail"]["name"], e["detail"]["status"]) for e in self.events]


@pytest.fixture
def sfn() -> Iterator[Any]:
    with mock_aws(config={"stepfunctions": {"execute_state_machine": True}}):
        client = boto3.client("stepfunctions", **CREDS)
        for name, definition in DEFINITIONS.items():
            client.create_state_machine(
                name=name, definition=json.dumps(definition), roleArn="arn:aws:iam::123456789012:role/r"
            )
        yield client


def _arn(name: str) -> str:
    return f"arn:aws:states:us-east-1:123456789012:stateMachine:{name}"


def _start(sfn: Any, machine: str, name: str, payload: Any = None) -> str:
    arn: str = sfn.start_execution(stateMachineArn=_arn(machine), name=name, input=json.dumps(payload or {}))[
        "executionArn"
    ]
    return arn


def _wait(sfn: Any, arn: str, status: str) -> None:
    deadline = time.monotonic() + 30
    while sfn.describe_execution(executionArn=arn)["status"] != status:
        assert time.monotonic() < deadline, f"{arn} never reached {status}"
        time.sleep(0.05)


def _poller(sfn: Any, target: Target) -> ExecutionEventsPoller:
    return ExecutionEventsPoller(
        [RULE],
        sfn=sfn,
        state_machine_arns=[_arn(n) for n in DEFINITIONS],
        invoke=target,
        retry=EVENT_RETRIES.immediate(),
    )


def _until(poller: ExecutionEventsPoller, done: Callable[[], bool]) -> None:
    for _ in range(300):
        poller.poll_once()
        if done():
            return
        time.sleep(0.02)
    raise AssertionError("condition never met")


def test_executions_that_end_badly_are_delivered_once_with_their_input(sfn: Any) -> None:
    before = _start(sfn, "streamer-fails", "before")
    _wait(sfn, before, "FAILED")
    target = Target()
    poller = _poller(sfn, target)
    poller.prime()  # ended before the rule existed: not delivered

    failed = _start(sfn, "streamer-fails", "failed", {"request": {"user_id": "u"}})
    waiting = _start(sfn, "streamer-waits", "stopped")
    passed = _start(sfn, "streamer-passes", "passed")
    elsewhere = _start(sfn, "elsewhere-fails", "elsewhere")
    for arn, status in ((failed, "FAILED"), (passed, "SUCCEEDED"), (elsewhere, "FAILED")):
        _wait(sfn, arn, status)
    sfn.stop_execution(executionArn=waiting, error="Console", cause="stopped by hand")
    _wait(sfn, waiting, "ABORTED")

    _until(poller, lambda: len(target.events) >= 2)
    for _ in range(5):  # later polls deliver nothing again
        poller.poll_once()
    # SUCCEEDED does not match the rule; a state machine outside the prefix neither.
    assert sorted(target.statuses()) == [("failed", "FAILED"), ("stopped", "ABORTED")]
    by_name = {e["detail"]["name"]: e for e in target.events}
    ev = by_name["failed"]
    assert ev["source"] == "aws.states" and ev["detail-type"] == DETAIL_TYPE and ev["resources"] == [failed]
    assert ev["detail"]["executionArn"] == failed and ev["detail"]["stateMachineArn"] == _arn("streamer-fails")
    assert json.loads(ev["detail"]["input"]) == {"request": {"user_id": "u"}}
    assert ev["detail"]["inputDetails"] == {"included": True}
    assert (ev["detail"]["error"], ev["detail"]["cause"]) == ("Boom", "it broke")
    assert isinstance(ev["detail"]["startDate"], int) and ev["detail"]["stopDate"] >= ev["detail"]["startDate"]
    assert poller.stats.delivered == 2 and poller.pending == 0


def test_a_failing_function_is_retried_a_bounded_number_of_times_then_given_up(sfn: Any) -> None:
    error = InvokeResult(ok=False, payload={"errorType": "ClientError", "errorMessage": "throttled"})
    target = Target(*[error] * (RETRY_CEILING + 1))
    poller = _poller(sfn, target)
    poller.prime()
    _wait(sfn, _start(sfn, "streamer-fails", "f1"), "FAILED")
    _until(poller, lambda: bool(poller.given_up))
    assert len(target.events) == RETRY_CEILING + 1
    (gave_up,) = poller.given_up
    assert (gave_up.function_name, gave_up.attempts, gave_up.error) == (
        "ExecutionEventsFunction",
        RETRY_CEILING + 1,
        "ClientError: throttled",
    )
    for _ in range(3):
        poller.poll_once()
    assert len(target.events) == RETRY_CEILING + 1 and poller.pending == 0


def test_a_function_error_then_success_is_delivered(sfn: Any) -> None:
    target = Target(InvokeResult(ok=False, payload={"errorType": "X"}))
    poller = _poller(sfn, target)
    poller.prime()
    _wait(sfn, _start(sfn, "streamer-fails", "f2"), "FAILED")
    _until(poller, lambda: poller.stats.delivered == 1)
    assert target.statuses() == [("f2", "FAILED"), ("f2", "FAILED")] and not poller.given_up


def test_a_transport_error_does_not_use_up_attempts(sfn: Any) -> None:
    down = InvokeResult(ok=False, transport_error="ConnectionRefusedError")
    target = Target(*[down] * (RETRY_CEILING + 5))
    poller = _poller(sfn, target)
    poller.prime()
    _wait(sfn, _start(sfn, "streamer-fails", "f3"), "FAILED")
    _until(poller, lambda: poller.stats.delivered == 1)
    assert len(target.events) == RETRY_CEILING + 6 and not poller.given_up


def test_run_and_stop_in_a_thread(sfn: Any) -> None:
    target = Target()
    poller = ExecutionEventsPoller(
        [RULE], sfn=sfn, state_machine_arns=[_arn("streamer-fails")], invoke=target, poll_interval=0.05
    )
    thread = threading.Thread(target=poller.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while not poller.primed:  # executions that end from now on are delivered
            assert time.monotonic() < deadline
            time.sleep(0.02)
        _wait(sfn, _start(sfn, "streamer-fails", "threaded"), "FAILED")
        deadline = time.monotonic() + 10
        while not target.events:
            assert time.monotonic() < deadline
            time.sleep(0.05)
    finally:
        poller.stop()
        thread.join(10)
    assert not thread.is_alive()
    assert target.statuses() == [("threaded", "FAILED")]


def test_an_execution_running_when_the_poller_started_is_delivered_when_it_ends(sfn: Any) -> None:
    target = Target()
    waiting = _start(sfn, "streamer-waits", "running-before")
    poller = _poller(sfn, target)
    poller.prime()
    poller.poll_once()
    assert target.events == []
    sfn.stop_execution(executionArn=waiting, error="Console", cause="stopped by hand")
    _wait(sfn, waiting, "ABORTED")
    _until(poller, lambda: bool(target.events))
    assert target.statuses() == [("running-before", "ABORTED")]


def test_a_poll_reads_what_changed_not_the_whole_history(sfn: Any) -> None:
    """251 ended executions (three pages of ListExecutions) before the poller starts: each later poll
    asks for one page of the newest executions and one of the running ones per state machine, describes
    nothing, and still delivers a new end."""
    for i in range(250):
        _start(sfn, "streamer-fails", f"old-{i}")
    time.sleep(0.3)  # then one more: the 250 are older than the poller's overlap (0.25 s before the newest)
    _wait(sfn, _start(sfn, "streamer-fails", "old-last"), "FAILED")
    calls: list[str] = []
    sfn.meta.events.register("before-call.sfn.*", lambda model, **kw: calls.append(model.name))
    target = Target()
    poller = _poller(sfn, target)
    poller.prime()
    calls.clear()
    for _ in range(3):
        poller.poll_once()
    assert calls == ["ListExecutions", "ListExecutions"] * len(DEFINITIONS) * 3 and target.events == []
    _wait(sfn, _start(sfn, "streamer-fails", "new"), "FAILED")
    calls.clear()
    _until(poller, lambda: bool(target.events))
    assert target.statuses() == [("new", "FAILED")] and calls.count("DescribeExecution") == 1
