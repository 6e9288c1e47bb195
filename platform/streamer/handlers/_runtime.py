"""What the handlers of one Lambda container share: settings, the service, the logger, the tracer, metrics.

``lambda_handler`` is the one decorator every handler wears. Per invocation it:

* clears the logger's thread-local keys before and after (Powertools' plain ``append_keys`` would carry one
  request's keys into the next invocation of a warm container and, locally, into other functions the same
  process serves concurrently), then sets what Powertools' ``inject_lambda_context`` sets — ``cold_start``,
  ``function_name``, ``function_memory_size``, ``function_arn``, ``function_request_id``;
* opens the invocation's metrics buffer (``streamer.metrics.invocation``) and flushes it once at the end,
  however the invocation ends, with a ``ColdStart`` metric on a container's first invocation of a function;
* runs the handler inside the Powertools Tracer's ``## handler`` subsegment (boto3/botocore patched, so every
  AWS call is a subsegment); the tracer is off outside Lambda and when ``POWERTOOLS_TRACE_DISABLED=true``
  (``streamer local`` sets it), and then never looks for an X-Ray daemon.

``correlate(request_id=…, workflow=…, step=…)`` puts a request's identifiers on every later log line of the
invocation and, as X-Ray annotations, on its trace: one ``request_id`` search finds a request's whole life.
"""

from __future__ import annotations

import functools
import os
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, TypeVar

from aws_lambda_powertools import Logger

from streamer import metrics
from streamer.config import Settings
from streamer.events import WebSocketEvent
from streamer.redact import RedactTokensFilter
from streamer.service import RequestService

if TYPE_CHECKING:
    from aws_lambda_powertools import Tracer

__all__ = [
    "correlate",
    "get_logger",
    "get_service",
    "get_tracer",
    "lambda_handler",
    "request_scope",
    "reset",
    "set_service",
    "traced",
    "tracing_enabled",
]

#: The keys ``correlate`` sets: on log lines, and as X-Ray annotations (indexed, searchable in X-Ray).
CORRELATION_KEYS = ("request_id", "workflow", "step")


@functools.cache
def get_logger() -> Logger:
    logger = Logger(service=os.environ.get("POWERTOOLS_SERVICE_NAME", "streamer"))
    # Defence in depth: nothing that looks like a JWT ever reaches a log line.
    for h in logger.handlers:
        h.addFilter(RedactTokensFilter())
    return logger


def tracing_enabled(environ: Mapping[str, str] | None = None) -> bool:
    """Powertools' own rule (``Tracer._is_tracer_disabled``): off when ``POWERTOOLS_TRACE_DISABLED`` is true,
    outside Lambda (no ``LAMBDA_TASK_ROOT``) and under SAM CLI or Chalice local."""
    env = os.environ if environ is None else environ
    if env.get("POWERTOOLS_TRACE_DISABLED", "false").strip().lower() in ("1", "y", "yes", "t", "true", "on"):
        return False
    return bool(env.get("LAMBDA_TASK_ROOT")) and not env.get("AWS_SAM_LOCAL") and not env.get("AWS_CHALICE_CLI_MODE")


@functools.cache
def get_tracer() -> Tracer | None:
    """The Powertools Tracer, or None when tracing is off: then not even built, since building one imports
    the X-Ray SDK (about half a second of cold start on a small function) only to switch it off."""
    if not tracing_enabled():
        return None
    from aws_lambda_powertools import Tracer

    # boto3 and botocore patched: every DynamoDB, Step Functions and Management API call is a subsegment.
    return Tracer(service=os.environ.get("POWERTOOLS_SERVICE_NAME", "streamer"), patch_modules=("boto3", "botocore"))


F = TypeVar("F", bound=Callable[..., Any])


def traced(fn: F) -> F:
    """``tracer.capture_method`` (a subsegment per call, response not recorded) when tracing is on."""
    tracer = get_tracer()
    if tracer is None:
        return fn
    return tracer.capture_method(capture_response=False)(fn)


Handler = Callable[[dict[str, Any], Any], dict[str, Any]]

_warm: set[str] = set()
_warm_lock = threading.Lock()


def _cold_start(function_name: str) -> bool:
    """True on the first invocation of ``function_name`` in this process (a container runs one function on
    AWS; the local endpoint runs them all in one process, hence per name)."""
    with _warm_lock:
        if function_name in _warm:
            return False
        _warm.add(function_name)
        return True


def _context_keys(context: Any, cold: bool) -> dict[str, Any]:
    keys = {
        "cold_start": cold,
        "function_name": getattr(context, "function_name", None),
        "function_memory_size": getattr(context, "memory_limit_in_mb", None),
        "function_arn": getattr(context, "invoked_function_arn", None),
        "function_request_id": getattr(context, "aws_request_id", None),
    }
    return {k: v for k, v in keys.items() if isinstance(v, str | int | bool)}


def lambda_handler(fn: Handler) -> Handler:
    """Per-invocation log keys, metrics and trace (see the module docstring)."""
    logger = get_logger()
    tracer = get_tracer()
    # Responses may hold step outputs (user data): not recorded in the trace.
    run = fn if tracer is None else tracer.capture_lambda_handler(fn, capture_response=False)

    @functools.wraps(fn)
    def wrapper(event: dict[str, Any], context: Any) -> dict[str, Any]:
        logger.thread_safe_clear_keys()
        name = getattr(context, "function_name", None)
        cold = _cold_start(name) if isinstance(name, str) else False
        logger.thread_safe_append_keys(**_context_keys(context, cold))
        try:
            with metrics.invocation():
                if cold and isinstance(name, str):
                    metrics.add(metrics.COLD_START, function_name=name)
                result: dict[str, Any] = run(event, context)
                return result
        finally:
            logger.thread_safe_clear_keys()

    return wrapper


def correlate(*, request_id: str | None = None, workflow: str | None = None, step: str | None = None) -> None:
    """Put a request's identifiers on the invocation's later log lines and on its trace (annotations)."""
    keys = {k: v for k, v in (("request_id", request_id), ("workflow", workflow), ("step", step)) if v}
    if not keys:
        return
    get_logger().thread_safe_append_keys(**keys)
    tracer = get_tracer()
    if tracer is not None:
        for k, v in keys.items():
            tracer.put_annotation(key=k, value=v)


@contextmanager
def request_scope(*, request_id: str | None, workflow: str | None = None) -> Iterator[None]:
    """``correlate`` for one part of an invocation (a stream record of a batch), removed afterwards."""
    correlate(request_id=request_id, workflow=workflow)
    try:
        yield
    finally:
        get_logger().thread_safe_remove_keys(["request_id", "workflow"])


_SERVICE: RequestService | None = None


def get_service(event: WebSocketEvent | None = None) -> RequestService:
    """One RequestService per container; the Management API endpoint comes from the settings or the event."""
    global _SERVICE
    if _SERVICE is None:
        settings = Settings.from_env()
        endpoint = settings.apigw_endpoint
        if endpoint is None and event is not None:
            endpoint = event.management_endpoint
        _SERVICE = RequestService.from_env(settings, endpoint_url=endpoint)
    return _SERVICE


def set_service(service: RequestService | None) -> None:
    """Inject a service (tests), or ``None`` to rebuild from the environment on next use."""
    global _SERVICE
    _SERVICE = service


def reset() -> None:
    set_service(None)
