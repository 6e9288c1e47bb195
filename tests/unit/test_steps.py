"""The step runner: validation, error normalisation, progress throttling, the Lambda adapter."""

from __future__ import annotations

import io
import itertools
import json
import logging
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pluggy
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, Field

import streamer
from streamer.config import Settings
from streamer.errors import RetryableStepError, StepError, StepFailedError
from streamer.models import RequestRef
from streamer.plugins import Registry, create_plugin_manager
from streamer.runner import MAX_OUTPUT_BYTES, ProgressThrottle, run_step
from streamer.step import Step, StepContext
from streamer.testing import RecordingSink, StepHarness, make_request

REF = RequestRef.of("user-1", "req-1", "wf")


def event(step: str, input: Any = None, attempt: int = 0, **extra: Any) -> dict[str, Any]:
    return {"step": step, "request": REF.model_dump(), "input": input or {}, "attempt": attempt, **extra}


class In(BaseModel):
    n: int = Field(ge=0, le=10)
    password: str = ""


class Out(BaseModel):
    doubled: int


def double(data: In, ctx: StepContext) -> Out:
    ctx.progress(50, "half way")
    return Out(doubled=data.n * 2)


DOUBLE = Step(name="double", func=double, input_model=In, output_model=Out)


def step_of(func: Callable[[Any, StepContext], Any], **kwargs: Any) -> Step:
    return Step(name="s", func=func, **kwargs)


def raising(exc: BaseException) -> Step:
    def boom(data: Any, ctx: StepContext) -> Any:
        raise exc

    return step_of(boom)


# --------------------------------------------------------------------------------------- run_step


def test_input_is_validated_and_output_dumped() -> None:
    sink = RecordingSink()
    assert run_step(DOUBLE, event("double", {"n": 4}), sink, interval_ms=0) == {"doubled": 8}
    assert [(e.request_id, e.step, e.percent, e.message) for e in sink.events] == [
        ("req-1", "double", 50, "half way")
    ]


def test_invalid_input_is_a_permanent_failure_that_never_echoes_the_input() -> None:
    with pytest.raises(StepFailedError) as exc:
        run_step(DOUBLE, event("double", {"n": 11, "password": 123456789}), RecordingSink(), interval_ms=0)
    assert type(exc.value) is StepFailedError
    assert "invalid input for step 'double'" in str(exc.value)
    assert "n: Input should be less than or equal to 10" in str(exc.value)
    assert "123456789" not in str(exc.value)


@pytest.mark.parametrize(
    ("returned", "expected"),
    [
        ({"a": (1, 2)}, {"a": [1, 2]}),
        (None, {}),
        (Out(doubled=3), {"doubled": 3}),
    ],
)
def test_outputs_without_a_model(returned: Any, expected: dict[str, Any]) -> None:
    assert run_step(step_of(lambda d, c: returned), event("s"), RecordingSink(), interval_ms=0) == expected


@pytest.mark.parametrize(
    "returned",
    [{"a": {1, 2}}, {"a": float("nan")}, ["not", "a", "dict"], "text"],
    ids=["a set", "NaN", "a list", "a string"],
)
def test_an_output_that_is_not_a_json_object_fails_the_step(returned: Any) -> None:
    with pytest.raises(StepFailedError, match="returned an invalid output"):
        run_step(step_of(lambda d, c: returned), event("s"), RecordingSink(), interval_ms=0)


def test_the_output_model_is_enforced() -> None:
    bad = step_of(lambda d, c: {"doubled": "many"}, output_model=Out)
    with pytest.raises(StepFailedError, match="returned an invalid output"):
        run_step(bad, event("s"), RecordingSink(), interval_ms=0)
    other_model = step_of(lambda d, c: In(n=1), output_model=Out)
    with pytest.raises(StepFailedError):
        run_step(other_model, event("s"), RecordingSink(), interval_ms=0)


def test_an_output_too_big_for_step_functions_fails_with_a_message() -> None:
    big = step_of(lambda d, c: {"x": "a" * MAX_OUTPUT_BYTES})
    with pytest.raises(StepFailedError, match=r"returned \d+ bytes; Step Functions allows 262144"):
        run_step(big, event("s"), RecordingSink(), interval_ms=0)


class Throttled(RetryableStepError):
    pass


class QuotaExceeded(StepFailedError):
    pass


@pytest.mark.parametrize(
    ("raised", "expected_type", "expected_message"),
    [
        (RetryableStepError("try later"), RetryableStepError, "try later"),
        (Throttled("rate limited"), RetryableStepError, "rate limited"),
        (StepFailedError("bad input file"), StepFailedError, "bad input file"),
        (QuotaExceeded("quota exceeded"), StepFailedError, "quota exceeded"),
        (StepError("plain step error"), StepFailedError, "plain step error"),
    ],
)
def test_step_errors_become_exactly_two_lambda_error_types(
    raised: Exception, expected_type: type[Exception], expected_message: str
) -> None:
    with pytest.raises(expected_type) as exc:
        run_step(raising(raised), event("s"), RecordingSink(), interval_ms=0)
    # Lambda's errorType is the class name; the state machine's Retry/Catch match on it.
    assert type(exc.value).__name__ == expected_type.__name__
    assert type(exc.value) is expected_type
    assert str(exc.value) == expected_message


def test_an_unexpected_exception_becomes_a_generic_step_failure(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    with pytest.raises(StepFailedError) as exc:
        run_step(raising(KeyError("db_password=hunter2")), event("s"), RecordingSink(), interval_ms=0)
    message = str(exc.value)
    assert type(exc.value) is StepFailedError
    assert message.startswith("step 's' failed with an unexpected error (incident ")
    assert "hunter2" not in message and "Traceback" not in message and "KeyError" not in message
    assert exc.value.__suppress_context__  # the original is not chained into Lambda's stack trace
    incident = message.rsplit(" ", 1)[1].rstrip(")")
    logged = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert logged and incident in logged[0].getMessage() and logged[0].exc_info is not None
    assert logged[0].request_id == "req-1"  # type: ignore[attr-defined]


def test_base_exceptions_are_not_swallowed() -> None:
    with pytest.raises(KeyboardInterrupt):
        run_step(raising(KeyboardInterrupt()), event("s"), RecordingSink(), interval_ms=0)


@pytest.mark.parametrize(
    ("bad_event", "match"),
    [
        ({"step": "s", "input": {}}, "request: Field required"),
        ({"step": "s", "request": REF.model_dump(), "attempt": -1}, "attempt"),
        ({"step": "other", "request": REF.model_dump()}, "event is for step 'other'"),
    ],
)
def test_a_malformed_event_is_a_permanent_failure(bad_event: dict[str, Any], match: str) -> None:
    with pytest.raises(StepFailedError, match=match):
        run_step(step_of(lambda d, c: {}), bad_event, RecordingSink(), interval_ms=0)


def test_the_context_describes_the_request_and_attempt() -> None:
    seen: list[StepContext] = []

    def capture(data: Any, ctx: StepContext) -> dict[str, Any]:
        seen.append(ctx)
        return {"input": data}

    out = run_step(step_of(capture), event("s", {"k": "v"}, attempt=2), RecordingSink(), interval_ms=0)
    assert out == {"input": {"k": "v"}}
    (ctx,) = seen
    assert (ctx.request_id, ctx.user_id, ctx.workflow, ctx.step) == ("req-1", "user-1", "wf", "s")
    assert ctx.attempt == 3  # $$.State.RetryCount 2 = the third try
    assert ctx.request == REF
    assert isinstance(ctx.logger, logging.LoggerAdapter)


@pytest.mark.parametrize(
    ("reported", "sent"),
    [(-5, 0), (150, 100), (33.6, 34), (99.4, 99), (0, 0), (100, 100)],
)
def test_percent_is_rounded_and_clamped(reported: float, sent: int) -> None:
    sink = RecordingSink()
    run_step(step_of(lambda d, c: c.progress(reported)), event("s"), sink, interval_ms=0)
    assert [e.percent for e in sink.events] == [sent]


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), True, "50"])
def test_a_percent_that_is_not_a_number_is_a_bug_in_the_step(bad: Any) -> None:
    sink = RecordingSink()
    with pytest.raises(StepFailedError, match="unexpected error"):
        run_step(step_of(lambda d, c: c.progress(bad)), event("s"), sink, interval_ms=0)
    assert sink.events == []


def test_long_messages_are_cut() -> None:
    sink = RecordingSink()
    run_step(step_of(lambda d, c: c.progress(1, "x" * 5000)), event("s"), sink, interval_ms=0)
    assert len(sink.events[0].message) == 1000


def test_a_failing_sink_does_not_fail_the_step(caplog: pytest.LogCaptureFixture) -> None:
    class Broken:
        def progress(self, ref: RequestRef, step: str, percent: int, message: str) -> None:
            raise ConnectionError("dynamodb unreachable")

    assert run_step(DOUBLE, event("double", {"n": 1}), Broken(), interval_ms=0) == {"doubled": 2}
    assert "progress event dropped: ConnectionError" in caplog.text


def test_the_interval_comes_from_the_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    def burst(data: Any, ctx: StepContext) -> None:
        for i in range(50):
            ctx.progress(i)

    monkeypatch.setenv("STREAMER_PROGRESS_INTERVAL_MS", "0")
    sink = RecordingSink()
    run_step(step_of(burst), event("s"), sink)
    assert len(sink.events) == 50
    monkeypatch.setenv("STREAMER_PROGRESS_INTERVAL_MS", "60000")
    sink = RecordingSink()
    run_step(step_of(burst), event("s"), sink)
    assert [e.percent for e in sink.events] == [0, 49]  # the first at once, the last at the step's end


def test_pending_progress_is_delivered_even_when_the_step_fails() -> None:
    def fail_after_progress(data: Any, ctx: StepContext) -> None:
        ctx.progress(10)
        ctx.progress(20)
        raise StepFailedError("nope")

    sink = RecordingSink()
    with pytest.raises(StepFailedError):
        run_step(step_of(fail_after_progress), event("s"), sink, interval_ms=60_000)
    assert [e.percent for e in sink.events] == [10, 20]


# --------------------------------------------------------------------------------------- the throttle


class ManualTime:
    """A clock and a scheduler driven by the test: ``advance`` fires the timers that fall due."""

    def __init__(self) -> None:
        self.now = 0.0
        self.timers: list[list[Any]] = []  # [due, fn, cancelled]

    def __call__(self) -> float:
        return self.now

    def schedule(self, delay: float, fn: Callable[[], None]) -> Any:
        timer = [self.now + delay, fn, False]
        self.timers.append(timer)

        class Handle:
            def cancel(self) -> None:
                timer[2] = True

        return Handle()

    def advance(self, seconds: float) -> None:
        target = self.now + seconds
        while True:
            due = sorted((t for t in self.timers if not t[2] and t[0] <= target), key=lambda t: t[0])
            if not due:
                break
            timer = due[0]
            self.timers.remove(timer)
            self.now = max(self.now, timer[0])
            timer[1]()
        self.now = target


def make_throttle(interval_ms: int = 100) -> tuple[ProgressThrottle, ManualTime, list[tuple[float, int, str]]]:
    t = ManualTime()
    sent: list[tuple[float, int, str]] = []
    throttle = ProgressThrottle(
        lambda p, m: sent.append((t.now, p, m)), interval_ms=interval_ms, clock=t, scheduler=t.schedule
    )
    return throttle, t, sent


def test_first_report_goes_out_at_once_and_the_latest_pending_one_when_the_window_opens() -> None:
    throttle, t, sent = make_throttle(100)
    throttle.report(1, "a")
    t.advance(0.010)
    throttle.report(2, "b")
    t.advance(0.010)
    throttle.report(3, "c")  # replaces 2
    assert sent == [(0.0, 1, "a")]
    t.advance(0.079)
    assert len(sent) == 1
    t.advance(0.002)  # the window opens at 0.100
    assert sent == [(0.0, 1, "a"), (pytest.approx(0.1), 3, "c")]
    throttle.close()
    assert len(sent) == 2  # nothing pending: close sends nothing


def test_close_flushes_what_is_pending_and_later_reports_are_ignored() -> None:
    throttle, t, sent = make_throttle(100)
    throttle.report(1, "")
    throttle.report(2, "last")
    throttle.close()
    assert [p for _, p, _ in sent] == [1, 2]
    t.advance(1)
    throttle.report(3, "")
    assert [p for _, p, _ in sent] == [1, 2]


def test_a_negative_interval_is_refused() -> None:
    with pytest.raises(ValueError, match="interval_ms must be >= 0"):
        ProgressThrottle(lambda p, m: None, interval_ms=-1)


def test_a_report_after_a_quiet_window_goes_out_at_once() -> None:
    throttle, t, sent = make_throttle(100)
    throttle.report(1, "")
    t.advance(0.5)
    throttle.report(2, "")
    assert [(round(ts, 3), p) for ts, p, _ in sent] == [(0.0, 1), (0.5, 2)]


@settings(max_examples=200, deadline=None)
@given(
    interval_ms=st.integers(min_value=1, max_value=500),
    steps=st.lists(
        st.tuples(st.floats(min_value=0, max_value=0.3), st.integers(min_value=0, max_value=100)),
        min_size=1,
        max_size=60,
    ),
)
def test_throttle_properties(interval_ms: int, steps: list[tuple[float, int]]) -> None:
    throttle, t, sent = make_throttle(interval_ms)
    reported: list[int] = []
    for gap, pct in steps:
        t.advance(gap)
        throttle.report(pct, str(len(reported)))
        reported.append(pct)
    t.advance(0.001)
    throttle.close()
    times = [ts for ts, _, _ in sent]
    # Never two events closer than the interval, except the final flush at the step's end.
    for a, b in itertools.pairwise(times[:-1]):
        assert b - a >= interval_ms / 1000 - 1e-9
    # The last value reported is always delivered, and it is the last one sent.
    assert sent[-1][2] == str(len(reported) - 1)
    # Events are a subsequence of the reports, in order (the message carries the report's index).
    indices = [int(m) for _, _, m in sent]
    assert indices == sorted(set(indices))
    assert [reported[i] for i in indices] == [p for _, p, _ in sent]


def test_with_real_timers_a_pending_value_is_sent_when_the_window_opens() -> None:
    sent: list[tuple[float, int]] = []
    done = threading.Event()

    def send(p: int, m: str) -> None:
        sent.append((time.monotonic(), p))
        if p == 2:
            done.set()

    throttle = ProgressThrottle(send, interval_ms=50)
    start = time.monotonic()
    throttle.report(1, "")
    throttle.report(2, "")
    assert done.wait(2), "the pending value was not sent by the timer"
    assert sent[1][0] - start >= 0.045
    throttle.close()
    assert [p for _, p in sent] == [1, 2]


# --------------------------------------------------------------------------------------- the Lambda adapter


class FakeContext:
    function_name = "StepRunnerFunction"
    memory_limit_in_mb = 1024
    invoked_function_arn = "arn:aws:lambda:us-east-1:123456789012:function:StepRunnerFunction"
    aws_request_id = "lambda-req-1"


class SecretPlugin:
    @streamer.hookimpl
    def streamer_steps(self) -> list[Step]:
        return [DOUBLE, Step(name="explode", func=lambda d, c: 1 / 0)]


@pytest.fixture
def registry() -> Registry:
    pm = create_plugin_manager(autoload=False)
    pm.register(SecretPlugin(), name="secret")
    return Registry(pm)


@pytest.fixture
def lambda_log() -> Iterator[io.StringIO]:
    """What the step runner's Powertools logger writes (its handler's stream, swapped for the test)."""
    from streamer.handlers.step_runner import logger

    (handler,) = [h for h in logger.handlers if isinstance(h, logging.StreamHandler)]
    buffer = io.StringIO()
    # Assigned, not setStream(): that flushes the old stream, which may be an earlier test's closed capture.
    previous, handler.stream = handler.stream, buffer
    yield buffer
    handler.stream = previous


def test_handler_runs_the_named_step_and_logs_no_input(registry: Registry, lambda_log: io.StringIO) -> None:
    from streamer.handlers.step_runner import make_handler

    sink = RecordingSink()
    handler = make_handler(sink=sink, registry=registry, interval_ms=0)
    out = handler(event("double", {"n": 3, "password": "s3cr3t-value"}, attempt=1), FakeContext())
    assert out == {"doubled": 6}
    assert [e.percent for e in sink.events] == [50]
    logs = lambda_log.getvalue()
    assert "s3cr3t-value" not in logs
    lines = [json.loads(line) for line in logs.splitlines() if line.startswith("{")]
    finished = [line for line in lines if line.get("message") == "step finished"]
    assert finished, lines
    assert finished[0]["request_id"] == "req-1" and finished[0]["step"] == "double"
    assert "user-1" not in json.dumps(finished[0])


def test_handler_errors_are_the_two_lambda_error_types(registry: Registry) -> None:
    from streamer.handlers.step_runner import make_handler

    handler = make_handler(sink=RecordingSink(), registry=registry, interval_ms=0)
    with pytest.raises(StepFailedError, match="no installed plugin declares a step named 'missing'"):
        handler(event("missing"), FakeContext())
    with pytest.raises(StepFailedError, match="unexpected error"):
        handler(event("explode"), FakeContext())
    with pytest.raises(StepFailedError, match="no step name"):
        handler({"request": REF.model_dump()}, FakeContext())
    with pytest.raises(StepFailedError, match="no step name"):
        handler([], FakeContext())  # type: ignore[arg-type]  # not an object at all


def test_handler_reports_a_broken_plugin_set_without_details(registry: Registry) -> None:
    from streamer.handlers.step_runner import handle

    class Clash:
        @streamer.hookimpl
        def streamer_steps(self) -> list[Step]:
            return [Step(name="double", func=double)]

    registry.pm.register(Clash(), name="clash")
    with pytest.raises(StepFailedError, match=r"^the step runner's plugins are misconfigured$"):
        handle(event("double", {"n": 1}), FakeContext(), sink=RecordingSink(), registry=Registry(registry.pm))


def test_the_default_handler_uses_the_container_service_and_its_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    from streamer.handlers import step_runner

    class Service(RecordingSink):
        settings = Settings(progress_interval_ms=60_000)

        def step_progress(self) -> Service:  # RequestService.step_progress: the invocation's sink
            return self

    built: list[Service] = []

    def fake_get_service() -> Service:
        built.append(Service())
        return built[-1]

    monkeypatch.setattr(step_runner, "get_service", fake_get_service)
    monkeypatch.setenv("STREAMER_PROGRESS_INTERVAL_MS", "0")  # not read per invocation: the service's settings are
    out = step_runner.handler(event("echo", {"message": "hi", "steps": 3}), FakeContext())
    assert out == {"message": "hi"}
    # One service; its 60 s interval throttles: the first event at once, the last one at the step's end.
    assert len(built) == 1 and [e.percent for e in built[0].events] == [33, 100]


# --------------------------------------------------------------------------------------- the test harness


def test_harness_runs_steps_of_a_fresh_manager() -> None:
    pm: pluggy.PluginManager = create_plugin_manager(autoload=False)
    harness = StepHarness(pm)
    pm.register(SecretPlugin(), name="late")  # registered after the harness: still seen
    ok = harness.run("double", {"n": 2})
    assert ok.ok and ok.output == {"doubled": 4} and ok.percents == [50] and ok.error is None
    failed = harness.run("double", {"n": 99})
    assert not failed.ok and failed.output is None and failed.error_type == "StepFailedError"
    assert harness.event("double", {"n": 1}, attempt=3)["attempt"] == 2
    with pytest.raises(ValueError):
        harness.event("double", attempt=0)
    assert make_request("wf", user_id="u", request_id="r") == RequestRef.of("u", "r", "wf")
    assert make_request().request_id != make_request().request_id


def test_module_level_run_step_uses_the_installed_plugins() -> None:
    from streamer.testing import run_step as run_installed

    result = run_installed("echo", {"message": "hi", "steps": 2})
    assert result.output == {"message": "hi"}
    assert [(e.step, e.percent) for e in result.progress] == [("echo", 50), ("echo", 100)]
