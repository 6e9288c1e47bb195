"""The real state machines (statemachines/*.asl.json) executed by moto's ASL interpreter.

The step runner and a notify function run as Lambda functions behind ``streamer.local.lambda_endpoint``
(the Lambda Invoke API on 127.0.0.1); moto's Tasks reach it through ``AWS_ENDPOINT_URL_LAMBDA``. The notify
function records what it gets; ``WorkflowRun.client_status``/``client_error`` apply the platform's own
mapping (``streamer.aws.executions.failure_of``) to it.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from streamer_textstats.reference import reference_stats
from streamer_textstats.text import split_text

from streamer.testing import LocalWorkflows, WorkflowRun

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def local(streamer_workflows: LocalWorkflows) -> LocalWorkflows:
    return streamer_workflows


def failed_tasks(run: WorkflowRun) -> list[str]:
    return [e["lambdaFunctionFailedEventDetails"]["error"] for e in run.events("LambdaFunctionFailed")]


def test_the_deployed_definitions_are_the_project_files(local: LocalWorkflows) -> None:
    arn = local.deploy("echo")
    definition = json.loads(local.sfn.describe_state_machine(stateMachineArn=arn)["definition"])
    expected = json.loads((ROOT / "statemachines" / "echo.asl.json").read_text())
    expected["States"]["Echo"]["Resource"] = local.substitutions["StepRunnerFunctionArn"]
    for name in ("NotifyResult", "NotifyFailure"):
        expected["States"][name]["Resource"] = local.substitutions["NotifyFunctionArn"]
    assert definition == expected


def test_echo_succeeds_and_notifies_the_result(local: LocalWorkflows) -> None:
    run = local.run("echo", {"message": "héllo", "steps": 3})
    assert run.status == "SUCCEEDED"
    assert run.output == {"message": "héllo"}
    assert run.notifications == [
        {"kind": "result", "request": run.request.model_dump(), "output": {"message": "héllo"}}
    ]
    assert [(e.step, e.percent, e.message) for e in run.progress] == [
        ("echo", 33, "step 1 of 3"),
        ("echo", 67, "step 2 of 3"),
        ("echo", 100, "step 3 of 3"),
    ]
    assert run.client_status == "SUCCEEDED"
    assert failed_tasks(run) == []


def test_a_transient_failure_is_retried_and_the_step_sees_the_attempt(local: LocalWorkflows) -> None:
    run = local.run("echo", {"message": "again", "fail_times": 1, "steps": 1})
    assert run.status == "SUCCEEDED" and run.output == {"message": "again"}
    # The history shows the failed first attempt and the successful retry of the same Task.
    assert failed_tasks(run) == ["RetryableStepError"]
    scheduled = [
        json.loads(e["lambdaFunctionScheduledEventDetails"]["input"])
        for e in run.events("LambdaFunctionScheduled")
    ]
    assert [s["attempt"] for s in scheduled if s.get("step") == "echo"] == [0, 1]  # $$.State.RetryCount
    assert [n["kind"] for n in run.notifications] == ["result"]


def test_retries_are_bounded_and_then_the_client_is_told(local: LocalWorkflows) -> None:
    definition = local.definition("echo")
    for retrier in definition["States"]["Echo"]["Retry"]:
        retrier["BackoffRate"] = 1.0  # same attempts as the real machine, 3 s instead of 7 s
    local.deploy("echo", definition)
    run = local.run("echo", {"message": "m", "fail_times": 10})
    assert run.status == "FAILED"
    assert failed_tasks(run) == ["RetryableStepError"] * 4  # the try and MaxAttempts = 3 retries
    assert run.terminal is not None and run.terminal["error"]["Error"] == "RetryableStepError"
    assert run.client_status == "FAILED"
    assert run.client_error == (
        "STEP_FAILED",
        "echo attempt 4 failed because the payload asked it to (fail_times: 10)",
    )


def test_a_permanent_failure_ends_failed_with_step_failed(local: LocalWorkflows) -> None:
    run = local.run("echo", {"message": "m", "fail": True})
    assert run.status == "FAILED"
    assert run.error == "RequestFailed"
    assert run.cause is not None and run.cause.startswith("StepFailedError: ")
    assert failed_tasks(run) == ["StepFailedError"]  # not retried
    (failure,) = run.notifications
    assert failure["kind"] == "failure" and failure["request"] == run.request.model_dump()
    assert failure["error"]["Error"] == "StepFailedError"
    assert json.loads(failure["error"]["Cause"])["errorMessage"] == (
        "echo failed because the payload asked it to (fail: true)"
    )
    assert run.client_status == "FAILED"
    assert run.client_error == ("STEP_FAILED", "echo failed because the payload asked it to (fail: true)")
    assert run.events("FailStateEntered")


def test_an_invalid_payload_fails_with_the_validation_message(local: LocalWorkflows) -> None:
    run = local.run("echo", {"message": "m", "steps": 0})
    assert run.status == "FAILED"
    assert run.client_error == (
        "STEP_FAILED",
        "invalid input for step 'echo': steps: Input should be greater than or equal to 1",
    )


def test_an_unexpected_error_reaches_the_client_without_details(local: LocalWorkflows) -> None:
    # The notify task itself is broken here: it is retried (States.TaskFailed), then its error is caught and
    # reported as a failure.
    def broken_notify(event: dict[str, Any], context: Any) -> Any:
        if event["kind"] == "result":
            raise RuntimeError("password=hunter2")
        return {}

    local.notify = broken_notify
    run = local.run("echo", {"message": "m", "steps": 1})
    assert run.status == "FAILED"
    assert [n["kind"] for n in run.notifications] == ["result"] * 4 + ["failure"]
    assert run.notifications[-1]["error"]["Error"] == "RuntimeError"
    assert run.client_error == ("STEP_FAILED", "step failed")


def test_a_step_running_past_its_timeout_ends_timed_out(local: LocalWorkflows) -> None:
    definition = local.definition("echo")
    definition["States"]["Echo"]["TimeoutSeconds"] = 1
    local.deploy("echo", definition)
    started = time.monotonic()
    run = local.run("echo", {"message": "slow", "steps": 1, "delay_ms": 1800})
    assert time.monotonic() - started < 1.7  # the machine did not wait for the step
    assert run.status == "FAILED"
    assert run.cause == "States.Timeout: "
    (failure,) = run.notifications
    assert failure["kind"] == "failure" and failure["error"]["Error"] == "States.Timeout"
    assert run.client_status == "TIMED_OUT"
    assert run.client_error is not None and run.client_error[0] == "TIMEOUT"
    # The Lambda invocation itself runs on (as on AWS); its late progress changes nothing.
    deadline = time.monotonic() + 5
    while not local.sink.for_request(run.request.request_id):
        assert time.monotonic() < deadline
        time.sleep(0.02)
    assert local.notifications(run.request.request_id) == run.notifications


def started_and_reporting(local: LocalWorkflows, payload: dict[str, Any]) -> tuple[str, Any]:
    """An ``echo`` execution whose step has reported its first progress (it is running)."""
    arn, request = local.start("echo", payload)
    deadline = time.monotonic() + 10
    while not local.sink.for_request(request.request_id):
        assert time.monotonic() < deadline, "the step never reported progress"
        time.sleep(0.01)
    return arn, request


def test_stop_execution_cancels_and_nothing_is_notified(local: LocalWorkflows) -> None:
    arn, request = started_and_reporting(local, {"message": "long", "steps": 5, "delay_ms": 200})
    local.sfn.stop_execution(executionArn=arn, error="CANCELLED", cause="cancelled by the client")
    run = local.wait(arn, request, timeout=10)
    assert run.status == "ABORTED"
    assert run.events("ExecutionAborted")
    assert not run.events("ExecutionSucceeded", "ExecutionFailed")
    # The Lambda call in flight runs on, unawaited, and the machine goes no further.
    assert run.notifications == []
    assert run.events("TaskStateEntered")[-1]["stateEnteredEventDetails"]["name"] == "Echo"


def test_stop_execution_returns_with_it_aborted_while_its_step_runs_on(local: LocalWorkflows) -> None:
    """As on AWS (API_StopExecution): the execution is ABORTED when StopExecution returns, though the Task's
    Lambda invocation runs on. moto records a stop only when that invocation returns; a step longer than the
    stop's wait (5 s) used to leave it RUNNING, and every local cancel of a running step waited 5 s."""
    arn, request = started_and_reporting(local, {"message": "long", "steps": 7, "delay_ms": 1000})
    local.sfn.stop_execution(executionArn=arn, error="CANCELLED", cause="cancelled by the client")
    stopped = local.sfn.describe_execution(executionArn=arn)
    reported = len(local.sink.for_request(request.request_id))
    assert stopped["status"] == "ABORTED" and stopped["stopDate"]
    history = local.sfn.get_execution_history(executionArn=arn)["events"]
    assert history[-1]["type"] == "ExecutionAborted"  # in the history too, as on AWS
    deadline = time.monotonic() + 30
    while len(local.sink.for_request(request.request_id)) < 7:  # the step runs on to its end
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert len(local.sink.for_request(request.request_id)) > reported
    time.sleep(0.3)  # its Lambda has returned to moto's worker, which ends the program
    run = local.wait(arn, request, timeout=5)
    assert run.status == "ABORTED"
    assert [e["type"] for e in run.history].count("ExecutionAborted") == 1  # the worker's own is left out
    assert [e["type"] for e in run.history] == [e["type"] for e in history]  # nothing after the abort
    assert run.notifications == []
    assert local.sfn.describe_execution(executionArn=arn)["stopDate"] == stopped["stopDate"]


def test_concurrent_executions(local: LocalWorkflows) -> None:
    local.deploy("echo")
    started = [local.start("echo", {"message": f"m{i}", "steps": 2, "delay_ms": 50}) for i in range(12)]
    runs = [local.wait(arn, ref) for arn, ref in started]
    assert [r.status for r in runs] == ["SUCCEEDED"] * 12
    assert [r.output for r in runs] == [{"message": f"m{i}"} for i in range(12)]
    assert all([e.percent for e in r.progress] == [50, 100] for r in runs)


def mixed_text(size_bytes: int) -> str:
    rng = random.Random(2024)
    words = ["Ünïcödé", "ünïcödé", "ÜNÏCÖDÉ", "it's", "ΟΔΥΣΣΕΥΣ", "οδυσσευς", "東京", "Ⅻ", "٣٤", "x_y", "ﬂow"]
    parts: list[str] = []
    size = 0
    while size < size_bytes:
        w = rng.choice(words) if rng.random() < 0.7 else "".join(rng.choices("abcdeé", k=rng.randint(1, 6)))
        s = rng.choice([" ", "\n", ", ", "—", "🙂", "\u00a0"])
        parts.append(w + s)
        size += len((w + s).encode())
    return "".join(parts)


def test_textstats_through_the_map_matches_an_independent_count(local: LocalWorkflows) -> None:
    text = mixed_text(110 * 1024)
    run = local.run("textstats", {"text": text, "top": 15}, timeout=120)
    assert run.status == "SUCCEEDED", (run.error, run.cause)
    assert run.output == reference_stats(text, 15)
    assert run.terminal == {"kind": "result", "request": run.request.model_dump(), "output": run.output}

    split_events = [e for e in run.progress if e.step == "textstats.split"]
    (split,) = split_events
    chunks = len(split_text(text))
    assert chunks >= 5
    assert split.message == f"split into {chunks} chunks" and split.source == "notify"
    counted = sorted(e.percent for e in run.progress if e.step == "textstats.count")
    assert counted == sorted(round(100 * (i + 1) / chunks) for i in range(chunks))
    assert [(e.step, e.message) for e in run.progress if e.step == "textstats.merge"] == [
        ("textstats.merge", "merging counts")
    ]
    assert len(run.events("MapIterationSucceeded")) == chunks
    kinds = [n["kind"] for n in run.notifications]
    assert kinds == ["progress", "progress", "result"]


def test_textstats_of_an_empty_text(local: LocalWorkflows) -> None:
    run = local.run("textstats", {"text": ""})
    assert run.status == "SUCCEEDED"
    assert run.output == {"words": 0, "unique": 0, "top": []}


def test_an_invalid_textstats_payload_fails_at_split(local: LocalWorkflows) -> None:
    run = local.run("textstats", {"text": "a b c", "top": 0})
    assert run.status == "FAILED"
    assert [n["kind"] for n in run.notifications] == ["failure"]
    assert run.client_error is not None and run.client_error[0] == "STEP_FAILED"
    assert "top: Input should be greater than or equal to 1" in run.client_error[1]


def test_a_failing_chunk_is_caught_by_the_map(local: LocalWorkflows) -> None:
    definition = local.definition("textstats")
    inner = definition["States"]["Count"]["ItemProcessor"]["States"]["CountChunk"]
    inner["Parameters"]["step"] = "echo"  # echo's input model rejects a chunk: fails inside the Map
    local.deploy("textstats", definition)
    run = local.run("textstats", {"text": "a b c"})
    assert run.status == "FAILED"
    assert [n["kind"] for n in run.notifications] == ["progress", "failure"]
    assert run.notifications[-1]["error"]["Error"] == "StepFailedError"


# --------------------------------------------------------------------------------------- with the real platform


@pytest.mark.parametrize(
    ("payload", "frames"),
    [
        (
            {"message": "hi", "steps": 2},
            [("progress", 50), ("progress", 100), ("result", "SUCCEEDED")],
        ),
        (
            {"message": "hi", "steps": 1, "fail": True},
            [("error", "FAILED")],
        ),
    ],
    ids=["success", "failure"],
)
def test_with_the_real_service_and_notify_handler_the_client_gets_every_event(
    service: Any, ddb: Any, mgmt_api: Any, settings: Any, payload: dict[str, Any], frames: list[Any]
) -> None:
    """Step runner progress into RequestService, the platform's notify handler for the terminal event."""
    from streamer.aws.store import ConnectionStore
    from streamer.handlers import _runtime, notify
    from streamer.models import Connection

    now = int(time.time())
    ConnectionStore(settings.connections_table, ddb).put(
        Connection(connection_id="conn-1", user_id="alice", connected_at=now, expires_at=now + 3600)
    )
    mgmt_api.open("conn-1")
    submitted = service.submit("alice", "echo", payload, "req-e2e").request
    _runtime.set_service(service)
    try:
        with LocalWorkflows(sink=service, notify=notify.handler) as local:
            run = local.run("echo", submitted.payload, request=submitted.ref)
    finally:
        _runtime.set_service(None)
    received = mgmt_api.received("conn-1")
    assert [(f["type"], f.get("percent", f.get("status"))) for f in received] == frames
    assert [f["seq"] for f in received] == list(range(1, len(frames) + 1))
    assert all(f["request_id"] == "req-e2e" for f in received)
    stored = service.requests.get("alice", "req-e2e")
    if payload.get("fail"):
        assert run.status == "FAILED"
        assert received[-1]["code"] == "STEP_FAILED"
        assert received[-1]["message"] == "echo failed because the payload asked it to (fail: true)"
        assert stored.status == "FAILED" and stored.error_code == "STEP_FAILED"
    else:
        assert run.status == "SUCCEEDED"
        assert received[-1]["output"] == {"message": "hi"}
        assert stored.status == "SUCCEEDED" and stored.output == {"message": "hi"}


# --------------------------------------------------------------------------------------- the guide's example


@pytest.fixture
def greeter(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    monkeypatch.syspath_prepend(str(ROOT / "docs" / "examples" / "greeter" / "src"))
    import streamer_greeter

    yield streamer_greeter


def test_the_guides_example_plugin_runs_in_moto(greeter: Any) -> None:
    from streamer.deploy import statemachines
    from streamer.plugins import Registry, create_plugin_manager

    pm = create_plugin_manager(autoload=False)
    pm.register(greeter, name="greeter")
    assert statemachines.validate(registry=Registry(pm), paths=[greeter.DEFINITION]) == []
    with LocalWorkflows(pm) as local:
        run = local.run("greet", {"name": "Ada", "times": 2})
    assert run.status == "SUCCEEDED"
    assert run.output == {"greeting": "Hello, Ada! Hello, Ada!"}
    assert [e.percent for e in run.progress] == [50, 100]


def test_the_guides_example_tests_pass_as_a_plugin_author_runs_them(tmp_path: Path) -> None:
    """pytest in the example's folder, with the example installed (an entry point, as pip leaves it)."""
    example = ROOT / "docs" / "examples" / "greeter"
    info = tmp_path / "streamer_greeter-0.1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: streamer-greeter\nVersion: 0.1.0\n")
    (info / "entry_points.txt").write_text("[streamer.plugins]\ngreeter = streamer_greeter\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("STREAMER_", "AWS_", "PYTEST_"))}
    env["PYTHONPATH"] = os.pathsep.join([str(tmp_path), str(example / "src")])
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-W", "error", "tests"],
        cwd=example,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "4 passed" in proc.stdout


def test_many_workflows_share_one_endpoint_safely(local: LocalWorkflows) -> None:
    # Runs from several threads at once: the recording sink and notify log are thread-safe.
    local.deploy("echo")
    results: list[WorkflowRun] = []
    lock = threading.Lock()

    def one(i: int) -> None:
        r = local.run("echo", {"message": str(i), "steps": 1})
        with lock:
            results.append(r)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert sorted(r.output["message"] for r in results) == [str(i) for i in range(6)]
    assert all(len(r.notifications) == 1 for r in results)
