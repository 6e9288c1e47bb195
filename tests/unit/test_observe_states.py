"""The state table computed from real Step Functions histories (recorded from moto by data/observe/record.py)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from streamer.observe.models import StateRun
from streamer.observe.states import as_datetime, definition_states, parse_json, state_runs

DATA = Path(__file__).parent / "data" / "observe"


def load(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((DATA / f"{name}.json").read_text())
    return data


def by_name(runs: list[StateRun]) -> dict[str, StateRun]:
    return {r.name: r for r in runs}


def test_succeeded_echo_runs_every_state_in_order_and_marks_the_rest_not_reached() -> None:
    rec = load("echo_succeeded")
    runs = state_runs(rec["definition"], rec["events"])
    assert [(r.name, r.status) for r in runs] == [
        ("Echo", "succeeded"),
        ("NotifyResult", "succeeded"),
        ("Succeeded", "succeeded"),
        ("NotifyFailure", "not_reached"),
        ("Failed", "not_reached"),
    ]
    echo = runs[0]
    assert echo.type == "Task" and echo.attempts == 1 and echo.retries == []
    assert echo.duration_ms is not None and echo.duration_ms >= 0
    assert echo.output["output"] == {"message": "hi"}  # ResultPath $.output
    assert echo.input["payload"]["message"] == "hi"
    assert runs[3].started_at is None and runs[3].attempts == 0


def test_failing_echo_puts_the_step_error_on_echo_as_caught_and_the_execution_error_on_the_fail_state() -> None:
    rec = load("echo_failed")
    runs = by_name(state_runs(rec["definition"], rec["events"]))
    echo = runs["Echo"]
    assert echo.status == "caught"
    assert echo.error == "StepFailedError"
    assert "echo failed because the payload asked it to" in (echo.cause or "")
    assert runs["NotifyFailure"].status == "succeeded"
    failed = runs["Failed"]
    assert (failed.type, failed.status, failed.error) == ("Fail", "failed", "RequestFailed")
    assert (failed.cause or "").startswith("StepFailedError: ")
    assert runs["NotifyResult"].status == "not_reached"


def test_retried_echo_counts_attempts_and_each_retry_with_its_delay() -> None:
    rec = load("echo_retried")
    echo = by_name(state_runs(rec["definition"], rec["events"]))["Echo"]
    assert echo.status == "succeeded"
    assert echo.attempts == 3
    assert [r.attempt for r in echo.retries] == [1, 2]
    assert {r.error for r in echo.retries} == {"RetryableStepError"}
    assert "attempt 1 failed" in (echo.retries[0].cause or "")
    # Retry: IntervalSeconds 1, BackoffRate 2 → ~1 s then ~2 s.
    delays = [r.delay_ms or 0 for r in echo.retries]
    assert 900 <= delays[0] <= 1500 and 1800 <= delays[1] <= 2600
    assert echo.error is None


def test_cancelled_echo_marks_the_open_state_cancelled_with_its_end_time() -> None:
    rec = load("echo_cancelled")
    runs = state_runs(rec["definition"], rec["events"])
    echo = runs[0]
    assert (echo.name, echo.status) == ("Echo", "cancelled")
    assert echo.stopped_at == as_datetime(rec["events"][-1]["timestamp"])
    assert all(r.status == "not_reached" for r in runs[1:])


def test_textstats_map_counts_iterations_and_expands_each_with_its_own_states() -> None:
    rec = load("textstats_map")
    runs = by_name(state_runs(rec["definition"], rec["events"]))
    count = runs["Count"]
    assert count.type == "Map" and count.status == "succeeded"
    assert count.iterations is not None
    assert (count.iterations.total, count.iterations.succeeded, count.iterations.failed) == (6, 6, 0)
    assert count.iterations.items is None  # not expanded
    assert "CountChunk" not in runs  # iterator states live inside the Map, not at the top
    expanded = by_name(state_runs(rec["definition"], rec["events"], expand=True))["Count"]
    assert expanded.iterations is not None and expanded.iterations.items is not None
    items = expanded.iterations.items
    assert [i.index for i in items] == list(range(6))
    for item in items:
        assert item.status == "succeeded"
        assert [(s.name, s.status) for s in item.states] == [("CountChunk", "succeeded")]
        # Each iteration's own output, although the iterations interleave in the history.
        assert item.states[0].input["index"] == item.index
        assert "counts" in item.states[0].output


def test_a_running_execution_shows_running_states_and_running_iterations() -> None:
    rec = load("textstats_map")
    events = rec["events"]
    cut = next(i for i, e in enumerate(events) if e["type"] == "MapIterationSucceeded")
    runs = by_name(state_runs(rec["definition"], events[: cut + 1], expand=True))
    assert runs["Split"].status == "succeeded"
    count = runs["Count"]
    assert count.status == "running" and count.stopped_at is None
    assert count.iterations is not None and count.iterations.items is not None
    assert count.iterations.succeeded == 1 and count.iterations.running == 5
    assert runs["Merge"].status == "not_reached"
    running = [i for i in count.iterations.items if i.status == "running"]
    assert running and all(s.status == "running" for i in running for s in i.states)


def test_an_execution_failed_inside_a_map_iteration_fails_the_iteration_and_the_map() -> None:
    rec = load("textstats_map")
    events = [e for e in rec["events"] if e["id"] <= 37]  # every iteration scheduled, none finished
    first = next(e for e in events if e["type"] == "LambdaFunctionStarted" and e["id"] > 13)
    last_id = events[-1]["id"]
    events += [
        {
            "id": last_id + 1,
            "previousEventId": first["id"],
            "timestamp": events[-1]["timestamp"],
            "type": "LambdaFunctionFailed",
            "lambdaFunctionFailedEventDetails": {"error": "States.TaskFailed", "cause": "boom"},
        },
        {
            "id": last_id + 2,
            "previousEventId": last_id + 1,
            "timestamp": events[-1]["timestamp"],
            "type": "MapIterationFailed",
            "mapIterationFailedEventDetails": {"name": "Count", "index": 0},
        },
        {
            "id": last_id + 3,
            "previousEventId": last_id + 2,
            "timestamp": events[-1]["timestamp"],
            "type": "MapStateFailed",
        },
        {
            "id": last_id + 4,
            "previousEventId": last_id + 3,
            "timestamp": events[-1]["timestamp"],
            "type": "ExecutionFailed",
            "executionFailedEventDetails": {"error": "States.TaskFailed", "cause": "boom"},
        },
    ]
    count = by_name(state_runs(rec["definition"], events, expand=True))["Count"]
    assert count.status == "failed"
    assert count.iterations is not None and count.iterations.items is not None
    assert (count.iterations.failed, count.iterations.cancelled) == (1, 5)
    first_iteration = count.iterations.items[0]
    assert first_iteration.status == "failed"
    assert (first_iteration.states[0].status, first_iteration.states[0].error) == ("failed", "States.TaskFailed")
    # The others never finished: the failure stopped them.
    assert {i.status for i in count.iterations.items[1:]} == {"cancelled"}
    assert {s.status for i in count.iterations.items[1:] for s in i.states} == {"cancelled"}


def test_a_100_iteration_map_counts_every_iteration_though_later_ones_chain_to_their_worker() -> None:
    # moto runs a few Map workers: each later MapIterationStarted names the previous iteration's last event on
    # its worker, not MapStateStarted. Following that link alone counted 8 of 100 ("8/100 done").
    rec = load("textstats_map100")
    started = [e for e in rec["events"] if e["type"] == "MapIterationStarted"]
    map_started = next(e["id"] for e in rec["events"] if e["type"] == "MapStateStarted")
    assert len(started) == 100 and sum(e["previousEventId"] != map_started for e in started) > 8
    runs = by_name(state_runs(rec["definition"], rec["events"], expand=True))
    count = runs["Count"]
    it = count.iterations
    assert count.status == "succeeded" and it is not None and it.items is not None
    assert (it.total, it.succeeded, it.failed, it.cancelled, it.running) == (100, 100, 0, 0, 0)
    assert [i.index for i in it.items] == list(range(100))
    assert all([(s.name, s.status) for s in i.states] == [("CountChunk", "succeeded")] for i in it.items)
    # Nothing of the iterations leaks to the top level, and the states after the Map are there once.
    assert [r.name for r in state_runs(rec["definition"], rec["events"])] == [
        "Split", "ReportSplit", "Count", "ReportMerge", "Merge", "NotifyResult", "Succeeded",
        "NotifyFailure", "Failed",
    ]  # fmt: skip
    assert {r.status for n, r in runs.items() if n not in ("NotifyFailure", "Failed")} == {"succeeded"}


def test_a_map_with_max_concurrency_and_a_failing_iteration_is_caught_with_that_iterations_error() -> None:
    rec = load("map_failures")  # ten items, three at a time; item 6 reaches a Fail state; Catch → Recovered
    runs = state_runs(rec["definition"], rec["events"], expand=True)
    assert [(r.name, r.status) for r in runs] == [
        ("Items", "succeeded"),
        ("Each", "caught"),
        ("Recovered", "succeeded"),
        ("Done", "succeeded"),
    ]
    each = runs[1]
    assert (each.error, each.cause) == ("ItemFailed", "item 6 fails")  # MapStateFailed itself carries none
    it = each.iterations
    assert it is not None and it.items is not None
    # 0-5 succeeded (4 and 5 after the Map had failed: moto lets running iterations finish), 7-9 never started.
    assert (it.total, it.succeeded, it.failed, it.cancelled, it.running) == (10, 6, 1, 0, 0)
    assert {i.index: i.status for i in it.items} == {**{i: "succeeded" for i in range(6)}, 6: "failed"}
    failed = it.items[6].states
    assert [(s.name, s.status) for s in failed] == [("Work", "succeeded"), ("Check", "succeeded"), ("Boom", "failed")]
    assert (failed[2].error, failed[2].cause) == ("ItemFailed", "item 6 fails")
    assert [s.name for s in it.items[0].states] == ["Work", "Check", "Fine"]


def test_a_map_inside_a_parallel_branch_keeps_its_iterations_inside_and_the_top_level_outside() -> None:
    rec = load("map_in_parallel")  # Prepare → Fan(Left | Each(12 iterations of Double → Rest) → After) → Done
    runs = state_runs(rec["definition"], rec["events"], expand=True)
    assert [(r.name, r.status) for r in runs] == [("Prepare", "succeeded"), ("Fan", "succeeded"), ("Done", "succeeded")]
    fan = runs[1]
    assert fan.branches is not None
    assert [(b.index, b.status, [s.name for s in b.states]) for b in fan.branches] == [
        (0, "succeeded", ["Left"]),
        (1, "succeeded", ["Each", "After"]),
    ]
    each = fan.branches[1].states[0]
    it = each.iterations
    assert each.status == "succeeded" and it is not None and it.items is not None
    assert (it.total, it.succeeded, it.failed, it.cancelled, it.running) == (12, 12, 0, 0, 0)
    assert all([(s.name, s.status) for s in i.states] == [("Double", "succeeded"), ("Rest", "succeeded")]
               for i in it.items)  # fmt: skip
    assert fan.stopped_at is not None and runs[2].started_at is not None and fan.stopped_at <= runs[2].started_at


def _event(eid: int, prev: int, etype: str, **details: Any) -> dict[str, Any]:
    event: dict[str, Any] = {"id": eid, "previousEventId": prev, "timestamp": f"2026-01-01T00:00:{eid:02d}+00:00"}
    event["type"] = etype
    event.update(details)
    return event


def _parallel_both(second: tuple[str, dict[str, Any]], **leaving: Any) -> dict[str, Any]:
    """A definition starting at the Parallel ``Both`` of two one-state branches, the Pass ``A`` and ``second`` (its
    name and state); ``leaving`` is the Parallel's ``End``, or its ``Next`` (a Succeed) and ``Catch``."""
    branches = [
        {"StartAt": name, "States": {name: state}} for name, state in [("A", {"Type": "Pass", "End": True}), second]
    ]
    states: dict[str, Any] = {"Both": {"Type": "Parallel", "Branches": branches, **leaving}}
    if "Next" in leaving:
        states[leaving["Next"]] = {"Type": "Succeed"}
    return {"StartAt": "Both", "States": states}


def test_parallel_branches_are_attributed_by_the_definition() -> None:
    definition = _parallel_both(("B", {"Type": "Wait", "Seconds": 5, "End": True}), End=True)
    entered = {"stateEnteredEventDetails": {"name": "Both", "input": "{}"}}
    events = [
        _event(1, 0, "ExecutionStarted", executionStartedEventDetails={"input": "{}"}),
        _event(2, 1, "ParallelStateEntered", **entered),
        _event(3, 2, "ParallelStateStarted"),
        _event(4, 3, "PassStateEntered", stateEnteredEventDetails={"name": "A", "input": "{}"}),
        _event(5, 3, "WaitStateEntered", stateEnteredEventDetails={"name": "B", "input": "{}"}),
        _event(6, 4, "PassStateExited", stateExitedEventDetails={"name": "A", "output": '{"a": 1}'}),
    ]
    runs = state_runs(definition, events)
    assert [r.name for r in runs] == ["Both"]
    both = runs[0]
    assert both.status == "running" and both.branches is not None
    assert [(b.index, b.status, [s.name for s in b.states]) for b in both.branches] == [
        (0, "succeeded", ["A"]),
        (1, "running", ["B"]),
    ]
    assert both.branches[0].states[0].output == {"a": 1}
    aborted = [*events, _event(7, 0, "ExecutionAborted", executionAbortedEventDetails={})]
    both = state_runs(definition, aborted)[0]
    assert both.status == "cancelled" and both.branches is not None
    assert both.branches[1].status == "cancelled"


def test_a_parallel_failure_and_exit_naming_a_branch_event_belong_to_the_parallel() -> None:
    # As moto writes them: ParallelStateFailed names the failing branch's last event, ParallelStateExited the
    # event before it; the Catch's next state is at the top level.
    catch = [{"ErrorEquals": ["States.ALL"], "Next": "After"}]
    definition = _parallel_both(("Bad", {"Type": "Fail", "Error": "E", "Cause": "c"}), Catch=catch, Next="After")
    events = [
        _event(1, 0, "ExecutionStarted", executionStartedEventDetails={"input": "{}"}),
        _event(2, 1, "ParallelStateEntered", stateEnteredEventDetails={"name": "Both", "input": "{}"}),
        _event(3, 2, "ParallelStateStarted"),
        _event(4, 3, "PassStateEntered", stateEnteredEventDetails={"name": "A", "input": "{}"}),
        _event(5, 3, "FailStateEntered", stateEnteredEventDetails={"name": "Bad", "input": "{}"}),
        _event(6, 4, "PassStateExited", stateExitedEventDetails={"name": "A", "output": "{}"}),
        _event(7, 5, "ParallelStateFailed", parallelStateFailedEventDetails={"error": "E", "cause": "c"}),
        _event(8, 7, "ParallelStateExited", stateExitedEventDetails={"name": "Both", "output": "{}"}),
        _event(9, 8, "SucceedStateEntered", stateEnteredEventDetails={"name": "After", "input": "{}"}),
        _event(10, 9, "SucceedStateExited", stateExitedEventDetails={"name": "After", "output": "{}"}),
        _event(11, 10, "ExecutionSucceeded", executionSucceededEventDetails={"output": "{}"}),
    ]
    runs = state_runs(definition, events)
    assert [(r.name, r.status, r.error) for r in runs] == [("Both", "caught", "E"), ("After", "succeeded", None)]
    assert runs[0].branches is not None
    assert [[(s.name, s.status) for s in b.states] for b in runs[0].branches] == [
        [("A", "succeeded")],
        [("Bad", "failed")],
    ]
    assert (runs[0].branches[1].states[0].error, runs[0].branches[1].status) == ("E", "failed")
    assert runs[0].stopped_at == as_datetime(events[7]["timestamp"])


def test_a_task_failing_without_catch_fails_with_its_own_error() -> None:
    definition = {"StartAt": "T", "States": {"T": {"Type": "Task", "Resource": "arn:x", "End": True}}}
    events = [
        _event(1, 0, "ExecutionStarted", executionStartedEventDetails={"input": "{}"}),
        _event(2, 1, "TaskStateEntered", stateEnteredEventDetails={"name": "T", "input": "{}"}),
        _event(3, 2, "LambdaFunctionScheduled", lambdaFunctionScheduledEventDetails={"resource": "arn:x"}),
        _event(4, 3, "LambdaFunctionStarted"),
        _event(5, 4, "LambdaFunctionFailed", lambdaFunctionFailedEventDetails={"error": "Boom", "cause": "why"}),
        _event(6, 5, "ExecutionFailed", executionFailedEventDetails={"error": "Boom", "cause": "why"}),
    ]
    (task,) = state_runs(definition, events)
    assert (task.status, task.error, task.cause, task.attempts) == ("failed", "Boom", "why", 1)
    assert task.stopped_at == as_datetime(events[-1]["timestamp"])


def test_no_history_means_every_state_not_reached_and_no_definition_means_only_what_ran() -> None:
    rec = load("echo_succeeded")
    assert {r.status for r in state_runs(rec["definition"], [])} == {"not_reached"}
    assert [r.name for r in state_runs(None, rec["events"])] == ["Echo", "NotifyResult", "Succeeded"]


def test_helpers() -> None:
    assert parse_json('{"a": 1}') == {"a": 1}
    assert parse_json("not json") == "not json"
    assert parse_json(None) is None
    assert as_datetime(None) is None
    naive = as_datetime("2026-01-01T00:00:00")
    assert naive is not None and naive.tzinfo is not None
    assert as_datetime(0) == as_datetime("1970-01-01T00:00:00+00:00")
    names = definition_states(load("textstats_map")["definition"])
    assert {"Split", "Count", "CountChunk", "Merge"} <= set(names)


@pytest.mark.parametrize(
    "name",
    [
        "echo_succeeded",
        "echo_failed",
        "echo_retried",
        "echo_cancelled",
        "textstats_map",
        "textstats_map100",
        "map_failures",
        "map_in_parallel",
    ],
)
def test_every_recorded_history_is_json_round_trippable(name: str) -> None:
    rec = load(name)
    runs = state_runs(rec["definition"], rec["events"], expand=True)
    again = [StateRun.model_validate(r.model_dump(mode="json")) for r in runs]
    assert again == runs
