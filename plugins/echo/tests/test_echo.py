"""echo, through the pytest plugin's fixtures (the way a plugin author tests a step)."""

from __future__ import annotations

import time

import pytest
from streamer_echo import EchoPayload

from streamer.testing import LocalWorkflows, StepHarness


def test_reports_steps_progress_events_and_returns_the_message(streamer_steps: StepHarness) -> None:
    result = streamer_steps.run("echo", {"message": "hello", "steps": 3})
    assert result.output == {"message": "hello"}
    assert [(e.step, e.percent, e.message) for e in result.progress] == [
        ("echo", 33, "step 1 of 3"),
        ("echo", 67, "step 2 of 3"),
        ("echo", 100, "step 3 of 3"),
    ]


def test_defaults() -> None:
    assert EchoPayload(message="m").model_dump() == {
        "message": "m", "steps": 3, "delay_ms": 0, "fail_times": 0, "fail": False,
    }


def test_sleeps_delay_ms_per_step(streamer_steps: StepHarness) -> None:
    started = time.monotonic()
    result = streamer_steps.run("echo", {"message": "m", "steps": 2, "delay_ms": 60})
    assert result.ok
    assert time.monotonic() - started >= 0.12


def test_fail_times_fails_the_first_attempts_with_a_retryable_error(streamer_steps: StepHarness) -> None:
    payload = {"message": "m", "fail_times": 2}
    first = streamer_steps.run("echo", payload, attempt=1)
    second = streamer_steps.run("echo", payload, attempt=2)
    third = streamer_steps.run("echo", payload, attempt=3)
    assert first.error_type == second.error_type == "RetryableStepError"
    assert "attempt 1 failed" in str(first.error) and first.progress == []
    assert third.ok and third.output == {"message": "m"}


def test_fail_is_a_permanent_step_failure(streamer_steps: StepHarness) -> None:
    result = streamer_steps.run("echo", {"message": "m", "fail": True})
    assert result.error_type == "StepFailedError"
    assert str(result.error) == "echo failed because the payload asked it to (fail: true)"


@pytest.mark.parametrize(
    "payload",
    [
        {"message": "m", "steps": 0},
        {"message": "m", "steps": 101},
        {"message": "m", "delay_ms": 10_001},
        {"message": "m", "delay_ms": -1},
        {"message": "m", "fail_times": -1},
        {"steps": 2},
        {"message": "m", "unknown": 1},
    ],
)
def test_payload_limits(streamer_steps: StepHarness, payload: dict[str, object]) -> None:
    result = streamer_steps.run("echo", payload)
    assert result.error_type == "StepFailedError"
    assert "invalid input for step 'echo'" in str(result.error)


def test_the_workflow_is_declared_with_its_payload_model(streamer_steps: StepHarness) -> None:
    workflow = streamer_steps.registry.get_workflow("echo")
    assert workflow.payload_model is EchoPayload
    assert workflow.definition is None  # the project's statemachines/echo.asl.json


def test_the_whole_workflow_in_moto(streamer_workflows: LocalWorkflows) -> None:
    run = streamer_workflows.run("echo", {"message": "hi", "steps": 2, "fail_times": 1})
    assert run.status == "SUCCEEDED" and run.output == {"message": "hi"}
    assert run.client_status == "SUCCEEDED"
    assert [e.percent for e in run.progress] == [50, 100]
