"""Step runner Lambda: runs the plugin step a state machine Task names; the logic is ``streamer.runner``.

Event (the Task's ``Parameters``)::

    {"step": "echo", "request.$": "$.request", "input.$": "$.payload", "attempt.$": "$$.State.RetryCount"}

Returns the step's output. Raises only ``RetryableStepError`` (the Task's ``Retry`` absorbs it) or
``StepFailedError`` (the ``Catch`` sends it to the failure notification); an unknown step or a broken
plugin set is a ``StepFailedError`` too.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from streamer.errors import PluginError, StepFailedError
from streamer.handlers._runtime import Handler, correlate, get_logger, get_service, lambda_handler
from streamer.plugins import Registry, UnknownStepError, get_registry, plugin_errors
from streamer.runner import ProgressSink, run_step

if TYPE_CHECKING:
    import pluggy

__all__ = ["handle", "handler", "make_handler"]

logger = get_logger()

_reported_plugin_errors = False


def _log_plugin_errors(pm: pluggy.PluginManager | None) -> None:
    global _reported_plugin_errors
    if pm is None and _reported_plugin_errors:
        return
    for err in plugin_errors(pm):
        logger.error("plugin not loaded: %s", err)
    if pm is None:
        _reported_plugin_errors = True


def handle(
    event: dict[str, Any],
    context: Any,
    *,
    sink: ProgressSink | None = None,
    registry: Registry | None = None,
    interval_ms: int | None = None,
) -> dict[str, Any]:
    """Run the event's step. ``sink``/``registry`` default to the container's service and plugins, and
    ``interval_ms`` (when neither it nor ``sink`` is given) to that service's settings."""
    fields = event if isinstance(event, dict) else {}
    request = fields.get("request")
    request = request if isinstance(request, dict) else {}
    step_name = fields.get("step")
    # Identifiers only: neither the input (it may hold secrets) nor the user id is logged.
    rid, workflow = request.get("request_id"), request.get("workflow")
    correlate(
        request_id=rid if isinstance(rid, str) else None,
        workflow=workflow if isinstance(workflow, str) else None,
        step=step_name if isinstance(step_name, str) else None,
    )
    if fields.get("attempt") is not None:
        # Thread-local: the local Lambda endpoint runs concurrent invocations in one process.
        logger.thread_safe_append_keys(attempt=fields.get("attempt"))
    reg = registry if registry is not None else get_registry()
    _log_plugin_errors(reg.pm if registry is not None else None)
    if not isinstance(step_name, str):
        raise StepFailedError("the step runner event has no step name")
    try:
        step = reg.get_step(step_name)
    except UnknownStepError as exc:
        logger.error("unknown step", extra={"known_steps": sorted(reg.steps())})
        raise StepFailedError(str(exc)) from None
    except PluginError as exc:
        logger.error("plugin set unusable: %s", exc)
        raise StepFailedError("the step runner's plugins are misconfigured") from None
    if sink is None:
        # The container's RequestService, built on first use; its settings are read once per container.
        service = get_service()
        sink = service.step_progress()  # this invocation's events share one read of the user's connections
        if interval_ms is None:
            interval_ms = service.settings.progress_interval_ms
    return run_step(step, event, sink, interval_ms=interval_ms)


def make_handler(
    *,
    sink: ProgressSink | None = None,
    registry: Registry | None = None,
    interval_ms: int | None = None,
) -> Handler:
    """A Lambda handler bound to a sink and a registry (tests and ``streamer.testing`` use this)."""

    def step_runner(event: dict[str, Any], context: Any) -> dict[str, Any]:
        return handle(event, context, sink=sink, registry=registry, interval_ms=interval_ms)

    return lambda_handler(step_runner)


#: The Lambda entry point (``Handler: streamer.handlers.step_runner.handler``).
handler: Handler = make_handler()
