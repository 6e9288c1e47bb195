"""Running one step: its context (progress, logger, attempt) and the step runner's logic.

Sans-I/O: :func:`run_step` gets the :class:`~streamer.step.Step`, the Task's event and a
:class:`ProgressSink`; the Lambda adapter (``streamer.handlers.step_runner``) supplies the real sink
(``streamer.service.RequestService``) and tests supply a recording one (``streamer.testing``).

The event a step Task sends (the ASL ``Parameters``)::

    {"step": "echo",
     "request": {"user_id": "...", "request_id": "...", "workflow": "echo", "request_key": "..."},
     "input": {...},           # validated with the step's input_model
     "attempt": 0}             # $$.State.RetryCount: 0 on the first try

The result is the step's output (a JSON object). Failures leave as exactly two error types, the names
Step Functions matches ``Retry``/``Catch`` on (Lambda's ``errorType`` is the exception's class name):

* :class:`~streamer.errors.RetryableStepError` — the step raised it (or a subclass): transient, retried;
* :class:`~streamer.errors.StepFailedError` — the step raised it (or a subclass, or ``StepError``) with a
  message for the client; or the input/output did not validate; or the step raised anything else, in
  which case the message is generic (the details go to the log, never to the client).
"""

from __future__ import annotations

import contextvars
import json
import logging
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from pydantic import BaseModel, ValidationError

from streamer import metrics
from streamer.config import Settings
from streamer.errors import RetryableStepError, StepError, StepFailedError
from streamer.events import StepEvent
from streamer.limits import MAX_ERROR_MESSAGE_CHARS, MAX_STEP_OUTPUT_BYTES
from streamer.models import RequestRef
from streamer.step import Step, StepContext

__all__ = [
    "MAX_MESSAGE_CHARS",
    "MAX_OUTPUT_BYTES",
    "Cancellable",
    "Clock",
    "ProgressSink",
    "ProgressThrottle",
    "Scheduler",
    "StepContext",
    "StepEvent",
    "run_step",
    "threading_scheduler",
]

log = logging.getLogger("streamer.steps")

#: A step output over Step Functions' state limit would end the execution with the uncatchable
#: ``States.DataLimitExceeded``, so the runner turns it into a ``StepFailedError`` the Catch sees.
MAX_OUTPUT_BYTES = MAX_STEP_OUTPUT_BYTES
#: A progress message longer than this is cut (it travels in every progress frame).
MAX_MESSAGE_CHARS = MAX_ERROR_MESSAGE_CHARS

Clock = Callable[[], float]
"""Seconds on a monotonic clock (``time.monotonic``)."""


class Cancellable(Protocol):
    def cancel(self) -> None: ...


Scheduler = Callable[[float, Callable[[], None]], Cancellable]
"""``scheduler(delay_seconds, fn)`` runs ``fn`` once after the delay unless cancelled."""


def threading_scheduler(delay: float, fn: Callable[[], None]) -> Cancellable:
    """The default :data:`Scheduler`: a daemon ``threading.Timer``, running ``fn`` in the caller's context
    (its invocation's metrics buffer; a thread does not inherit context variables by itself)."""
    timer = threading.Timer(delay, contextvars.copy_context().run, args=(fn,))
    timer.daemon = True
    timer.start()
    return timer


class ProgressSink(Protocol):
    """Where progress goes: ``streamer.service.RequestService`` stores the event, then pushes it."""

    def progress(self, ref: RequestRef, step: str, percent: int, message: str) -> object: ...


class ProgressThrottle:
    """At most one progress event per ``interval_ms``; the latest value wins.

    The first report goes out at once. A report inside the window is kept as *pending* (replacing an older
    pending one) and sent when the window opens (a timer) or at :meth:`close`, whichever comes first, so
    the last value a step reports is never lost. ``send`` is called under a lock: events leave in order,
    one at a time. A failing ``send`` is logged and swallowed (progress is best effort; the result is not).
    """

    def __init__(
        self,
        send: Callable[[int, str], object],
        *,
        interval_ms: int,
        clock: Clock = time.monotonic,
        scheduler: Scheduler = threading_scheduler,
    ) -> None:
        if interval_ms < 0:
            raise ValueError("interval_ms must be >= 0")
        self._send = send
        self._interval = interval_ms / 1000.0
        self._clock = clock
        self._scheduler = scheduler
        self._lock = threading.Lock()
        self._last_sent: float | None = None
        self._pending: tuple[int, str] | None = None
        self._timer: Cancellable | None = None
        self._closed = False
        self.sent = 0

    def report(self, percent: int, message: str) -> None:
        with self._lock:
            if self._closed:
                return
            now = self._clock()
            if self._last_sent is None or now - self._last_sent >= self._interval:
                self._pending = None
                self._emit(percent, message, now)
                return
            self._pending = (percent, message)
            if self._timer is None:
                self._timer = self._scheduler(self._last_sent + self._interval - now, self._on_timer)

    def _on_timer(self) -> None:
        with self._lock:
            self._timer = None
            if self._closed or self._pending is None or self._last_sent is None:
                return
            now = self._clock()
            wait = self._last_sent + self._interval - now
            if wait > 0:  # woke early (clock granularity): come back when the window opens
                self._timer = self._scheduler(wait, self._on_timer)
                return
            percent, message = self._pending
            self._pending = None
            self._emit(percent, message, now)

    def _emit(self, percent: int, message: str, now: float) -> None:
        self._last_sent = now
        self.sent += 1
        try:
            self._send(percent, message)
        except Exception as exc:
            log.warning("progress event dropped: %s: %s", type(exc).__name__, exc)

    def close(self) -> None:
        """Send what is pending and stop: later reports are ignored."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            if self._pending is not None:
                percent, message = self._pending
                self._pending = None
                self._emit(percent, message, self._clock())


def _validation_summary(exc: ValidationError) -> str:
    """Where and why, never the offending values (they may be large or secret)."""
    parts = []
    for err in exc.errors(include_url=False, include_input=False, include_context=False)[:10]:
        loc = ".".join(str(p) for p in err["loc"]) or "(input)"
        parts.append(f"{loc}: {err['msg']}")
    more = exc.error_count() - len(parts)
    if more > 0:
        parts.append(f"and {more} more")
    return "; ".join(parts)


def _to_output(value: Any, step: Step) -> dict[str, Any]:
    if step.output_model is not None:
        if isinstance(value, BaseModel) and not isinstance(value, step.output_model):
            value = value.model_dump()
        value = step.output_model.model_validate(value)
    if value is None:
        return {}
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if not isinstance(value, Mapping):
        raise TypeError(f"a step returns a dict or a pydantic model, not {type(value).__name__}")
    # Round-trip through JSON: the output must survive the Lambda response and the state machine as is.
    out: dict[str, Any] = json.loads(json.dumps(dict(value), allow_nan=False))
    return out


def run_step(
    step: Step,
    event: Mapping[str, Any],
    sink: ProgressSink,
    *,
    interval_ms: int | None = None,
) -> dict[str, Any]:
    """Validate, run ``step`` for ``event``, validate its output; see the module docstring.

    ``interval_ms`` defaults to ``Settings.from_env().progress_interval_ms``. Raises only
    :class:`~streamer.errors.RetryableStepError` or :class:`~streamer.errors.StepFailedError` (exactly
    those classes, whatever the step raised).
    """
    try:
        ev = StepEvent.model_validate(event)
    except ValidationError as exc:
        raise StepFailedError(f"invalid step runner event: {_validation_summary(exc)}") from None
    if ev.step != step.name:
        raise StepFailedError(f"event is for step {ev.step!r}, not {step.name!r}")

    if step.input_model is not None:
        try:
            arg: Any = step.input_model.model_validate(ev.input)
        except ValidationError as exc:
            raise StepFailedError(f"invalid input for step {step.name!r}: {_validation_summary(exc)}") from None
    else:
        arg = ev.input

    ref = ev.request
    if interval_ms is None:
        interval_ms = Settings.from_env().progress_interval_ms
    throttle = ProgressThrottle(lambda pct, msg: sink.progress(ref, step.name, pct, msg), interval_ms=interval_ms)
    ctx = StepContext(request=ref, step=step.name, attempt=ev.attempt + 1, report=throttle.report)
    started = time.monotonic()
    metrics.add(metrics.STEP_ATTEMPTS, step=step.name)
    try:
        result = step.func(arg, ctx)
    except RetryableStepError as exc:
        metrics.add(metrics.STEP_ERRORS, step=step.name, error="RetryableStepError")
        ctx.logger.info("step asked for a retry: %s", exc)
        if type(exc) is RetryableStepError:
            raise
        raise RetryableStepError(str(exc)) from None
    except StepError as exc:  # StepFailedError, its subclasses, or the StepError base: permanent
        metrics.add(metrics.STEP_ERRORS, step=step.name, error="StepFailedError")
        ctx.logger.info("step failed: %s", exc)
        if type(exc) is StepFailedError:
            raise
        raise StepFailedError(str(exc)) from None
    except Exception:
        metrics.add(metrics.STEP_ERRORS, step=step.name, error="StepFailedError")
        incident = uuid.uuid4().hex[:12]
        ctx.logger.exception("step raised an unexpected error (incident %s)", incident)
        raise StepFailedError(f"step {step.name!r} failed with an unexpected error (incident {incident})") from None
    finally:
        throttle.close()
        metrics.add(metrics.STEP_DURATION, (time.monotonic() - started) * 1000, step=step.name)

    try:
        output = _to_output(result, step)
    except (ValidationError, TypeError, ValueError) as exc:
        detail = _validation_summary(exc) if isinstance(exc, ValidationError) else str(exc)
        metrics.add(metrics.STEP_ERRORS, step=step.name, error="StepFailedError")
        ctx.logger.error("step returned an invalid output: %s", detail)
        raise StepFailedError(f"step {step.name!r} returned an invalid output") from None
    size = len(json.dumps(output, ensure_ascii=False, separators=(",", ":")).encode())
    if size > MAX_OUTPUT_BYTES:
        metrics.add(metrics.STEP_ERRORS, step=step.name, error="StepFailedError")
        ctx.logger.error("step output too large: %d bytes", size)
        raise StepFailedError(f"step {step.name!r} returned {size} bytes; Step Functions allows {MAX_OUTPUT_BYTES}")
    ctx.logger.info(
        "step finished",
        extra={
            "duration_ms": round((time.monotonic() - started) * 1000, 1),
            "progress_events": throttle.sent,
        },
    )
    return output
