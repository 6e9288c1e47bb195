"""The WebSocket route functions run inside the gateway's process: ``streamer local``'s fast path.

On AWS, API Gateway invokes a route's Lambda integration and the function answers the client through the
Management API (``PostToConnection``). Locally, doing that over HTTP — gateway → Lambda endpoint (another
process) → Management API → gateway — costs more than the function itself (docs/performance.md, "local
stack"). :class:`InProcessInvoker` is an :data:`~streamer.local.invoke.AsyncInvoker` that gives the same
functions the same event and the same Lambda context, in this process:

* the functions' environment (``streamer.local.plan.function_environment``, what the Lambda endpoint's
  process gets) is applied to ``os.environ`` before any handler is imported (restored by :meth:`close`), and
  boto3's default session is rebuilt under it; each handler module is imported once (:meth:`preload`);
* invocations run in a bounded thread pool (``max_workers``): a burst queues instead of creating threads,
  in one queue per WebSocket connection, the connections taking turns (one flooding client waits behind
  itself, not in front of the others);
  boto3 clients made here get a connection pool as large as that (no "connection pool is full");
* results are the Lambda endpoint's, as one :class:`~streamer.local.invoke.InvokeResult`: the return value
  (after a JSON round trip, as the Invoke API would serialise it; a value JSON cannot hold is
  ``Runtime.MarshalError``), an exception's Lambda error body, ``Sandbox.Timedout`` past the function's
  ``Timeout``, and a timed-out result (API Gateway's "Endpoint request timed out") past the 29 s
  integration timeout when that comes first
  (https://docs.aws.amazon.com/apigateway/latest/developerguide/limits.html). A thread past its timeout
  cannot be killed: it keeps its pool slot until it returns, and its result is dropped;
* after :meth:`bind`, a Management API call (``POST``/``GET``/``DELETE @connections/{id}``) that a boto3
  client of this process sends to the gateway's own URL is answered by :meth:`Gateway.manage
  <streamer.local.gateway.Gateway.manage>` on the gateway's event loop — the frame is written straight to
  the asking connection's socket, as API Gateway's route response would — without HTTP or SigV4 signing
  (botocore's ``before-send`` / ``choose-signer`` events:
  https://boto3.amazonaws.com/v1/documentation/api/latest/guide/events.html); any other request goes
  out as usual. Answers (200, 410 ``GoneException``, 413, 204) are the gateway's own, so the
  ``ConnectionManager`` sees exactly what it sees over HTTP.

* after a route function's successful write to a table that has a stream poller (the router's submit and
  cancel on the requests table), the poller is woken (:meth:`InProcessInvoker.on_writes`, botocore's
  ``after-call``): the record is read at once instead of at the next poll, up to 0.1 s later.

``streamer local`` uses this path unless ``STREAMER_LOCAL_INVOKE=http`` (the parity path through the Lambda
endpoint) or the test-only ``STREAMER_TEST_FAULTS`` is set (those faults live in the Lambda endpoint).
Step functions, the stream router and EventBridge targets still run in the Lambda endpoint's process.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import os
import re
import sys
import threading
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit

from streamer.config import LOCAL_ACCOUNT, LOCAL_REGION, Env, restore_environ
from streamer.faults import RawBody
from streamer.local.invoke import InvokeResult
from streamer.local.lambda_endpoint import (
    FunctionHost,
    LambdaContext,
    _error_body,
    function_arn,
    size_client_pools,
)
from streamer.local.serving import DaemonPool, unique_uuid

if TYPE_CHECKING:
    from streamer.deploy.template import FunctionSpec
    from streamer.local.gateway import Gateway

__all__ = [
    "DEFAULT_WORKERS",
    "INVOKE_MODE_ENV",
    "InProcessInvoker",
    "invoke_mode",
    "written_tables",
]

log = logging.getLogger("streamer.local.inprocess")

#: Selects the gateway's invocation path: ``inprocess`` (default) or ``http``.
INVOKE_MODE_ENV = Env.LOCAL_INVOKE
#: Threads running route functions. They mostly wait on moto; more would only add GIL contention.
DEFAULT_WORKERS = 16
_SERVICE_ID = "apigatewaymanagementapi"
_CONNECTIONS_PATH = re.compile(r"^(?:/[^/]+)?/@connections/(?P<id>[^/]+)/?$")
#: What a worker waits for the gateway's loop to write a frame; the HTTP path's read timeout is 10 s.
_MANAGE_TIMEOUT = 10.0


#: DynamoDB's write operations (what :meth:`InProcessInvoker.on_writes` watches).
_WRITES = frozenset({"PutItem", "UpdateItem", "DeleteItem", "BatchWriteItem", "TransactWriteItems"})


def written_tables(operation: str, params: Mapping[str, Any]) -> list[str]:
    """The tables a DynamoDB write operation writes to, from its parameters (a condition check writes none)."""
    if operation in ("PutItem", "UpdateItem", "DeleteItem"):
        name = params.get("TableName")
        return [name] if isinstance(name, str) else []
    if operation == "BatchWriteItem":
        items = params.get("RequestItems")
        return [t for t in items if isinstance(t, str)] if isinstance(items, Mapping) else []
    if operation == "TransactWriteItems":
        tables: list[str] = []
        for item in params.get("TransactItems") or ():
            for kind in ("Put", "Update", "Delete"):
                action = item.get(kind) if isinstance(item, Mapping) else None
                name = action.get("TableName") if isinstance(action, Mapping) else None
                if isinstance(name, str) and name not in tables:
                    tables.append(name)
        return tables
    return []


def invoke_mode(environ: Mapping[str, str] | None = None) -> str:
    """``inprocess`` or ``http`` (``STREAMER_LOCAL_INVOKE``; ``http`` whenever test faults are injected)."""
    env = os.environ if environ is None else environ
    mode = (env.get(INVOKE_MODE_ENV) or "inprocess").strip().lower()
    if mode not in ("inprocess", "http"):
        raise ValueError(f"{INVOKE_MODE_ENV} must be 'inprocess' or 'http', not {mode!r}")
    if env.get(Env.TEST_FAULTS):
        return "http"
    return mode


def _functions_log_to_stderr() -> None:
    """Keep the functions' logs and the stack's apart, as they are when the functions run in a child.

    Powertools' ``Logger`` (the handlers' logger, named after the service: ``streamer``) writes JSON lines to
    stdout, and filters the root logger's handlers so that nothing under its name reaches them — which
    silences ``streamer.local.*``, the stack's own loggers. In this process stdout carries the ready line
    only. So: the functions' JSON lines go to stderr, and the root handlers drop the functions' records
    only (the stack's keep reaching them, in the stack's format)."""
    name = os.environ.get("POWERTOOLS_SERVICE_NAME", "streamer")
    functions_logger = logging.getLogger(name)

    def functions_only(record: logging.LogRecord) -> bool:
        return record.name == name

    def not_functions(record: logging.LogRecord) -> bool:
        return record.name != name

    for h in functions_logger.handlers:
        if isinstance(h, logging.StreamHandler) and h.stream is sys.stdout:
            h.setStream(sys.stderr)
            h.addFilter(functions_only)
    for h in logging.getLogger().handlers:
        for f in list(h.filters):
            if type(f).__name__ == "SuppressFilter":  # aws_lambda_powertools.logging.filters
                h.removeFilter(f)
        h.addFilter(not_functions)


class InProcessInvoker(FunctionHost):
    """Run ``functions`` in this process (see the module docstring). ``await close()`` when done."""

    def __init__(
        self,
        functions: Mapping[str, FunctionSpec],
        *,
        environment: Mapping[str, str] | None = None,
        max_workers: int = DEFAULT_WORKERS,
        integration_timeout: float = 29.0,
        region: str = LOCAL_REGION,
        account: str = LOCAL_ACCOUNT,
    ) -> None:
        super().__init__(functions, region, account)
        self.integration_timeout = integration_timeout
        self.max_workers = max_workers
        self._pool = DaemonPool(max_workers, name="route-fn")
        self._saved_env: dict[str, str | None] = {}
        self._gateway: Gateway | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: int | None = None
        self._gateway_base: str | None = None
        #: Table name → what to call after a function of this process wrote to it (:meth:`on_writes`).
        self._write_watch: dict[str, tuple[Callable[[], None], ...]] = {}
        if environment is not None:
            self._apply_environment(environment)

    # -- environment and handlers -----------------------------------------------------------------------

    def _apply_environment(self, environment: Mapping[str, str]) -> None:
        # What the Lambda endpoint's process gets (streamer.local.supervise.child_base_env + the functions'
        # variables): no profile or config file that could point a client at a real account.
        wanted: dict[str, str | None] = {
            "AWS_PROFILE": None,
            "AWS_DEFAULT_PROFILE": None,
            "AWS_CONFIG_FILE": os.devnull,
            "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
            **environment,
        }
        for key, value in wanted.items():
            self._saved_env.setdefault(key, os.environ.get(key))
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        size_client_pools(self.max_workers)  # a new default session, under this environment

    def preload(self) -> None:
        """:meth:`FunctionHost.preload`, then the functions' log lines to stderr."""
        super().preload()
        _functions_log_to_stderr()

    # -- invoking ---------------------------------------------------------------------------------------

    def _run(
        self, name: str, spec: FunctionSpec, event: dict[str, Any], started: Callable[[], None]
    ) -> tuple[bool, Any]:
        """One invocation in a worker thread: ``(ok, result or Lambda error body)``; never raises."""
        started()
        request_id = unique_uuid()
        context = LambdaContext(name, spec, request_id, self.region, self.account)
        try:
            fn = self.handler_for(name)
        except Exception as exc:  # Runtime.ImportModuleError on AWS
            log.exception("cannot import handler of %s", name)
            return False, _error_body(exc, error_type="Runtime.ImportModuleError")
        try:
            result = fn(event, context)
        except Exception as exc:
            log.info("%s %s raised %s: %s", name, request_id, type(exc).__name__, exc)
            return False, _error_body(exc)
        try:
            # What the Invoke API would return: the JSON of the result (tuples become lists, and so on).
            return True, json.loads(json.dumps(result))
        except (TypeError, ValueError) as exc:
            return False, {"errorType": "Runtime.MarshalError", "errorMessage": f"Unable to marshal response: {exc}"}

    async def __call__(self, function_name: str, event: dict[str, Any]) -> InvokeResult:
        spec = self.functions.get(function_name)
        if spec is None:  # what the Lambda endpoint answers: 404, a transport error for the caller
            arn = function_arn(function_name, self.region, self.account)
            return InvokeResult(ok=False, transport_error=f"HTTP 404: Function not found: {arn}")
        loop = asyncio.get_running_loop()
        # The integration timeout counts from now, queueing for a worker included (API Gateway's 29 s covers
        # the whole call); the function's Timeout from its start, as Lambda's does. The worker notes when it
        # starts; the loop looks at that only when a deadline may have come (no wake-up per invocation).
        now = time.monotonic()
        integration_end = now + self.integration_timeout
        timeout = float(spec.timeout)
        started_at: list[float] = []

        def on_start() -> None:
            started_at.append(time.monotonic())

        # Queued per connection, connections taking turns (streamer.local.serving.DaemonPool.submit_keyed).
        key = (event.get("requestContext") or {}).get("connectionId")
        future = asyncio.wrap_future(
            self._pool.submit_keyed(key, self._run, function_name, spec, event, on_start), loop=loop
        )
        while True:
            # Not started yet: it ends no earlier than ``timeout`` from now, so look again then at the latest.
            function_end = started_at[0] + timeout if started_at else math.inf
            end = min(integration_end, function_end, now + timeout)
            if end <= now:
                break
            await asyncio.wait({future}, timeout=end - now)
            if future.done():
                break
            now = time.monotonic()
        function_end = started_at[0] + timeout if started_at else math.inf
        if not future.done():
            # The thread cannot be stopped; its late result is dropped (its exception too).
            future.add_done_callback(lambda f: f.cancelled() or f.exception())
            if function_end <= integration_end:
                log.error("%s timed out after %.2f s", function_name, spec.timeout)
                return InvokeResult(
                    ok=False,
                    payload={
                        "errorType": "Sandbox.Timedout",
                        "errorMessage": f"Task timed out after {float(spec.timeout):.2f} seconds",
                    },
                )
            return InvokeResult(
                ok=False, transport_error=f"no answer within {self.integration_timeout:g}s", timed_out=True
            )
        ok, payload = future.result()
        return InvokeResult(ok=ok, payload=payload)

    # -- Management API without HTTP --------------------------------------------------------------------

    def bind(self, gateway: Gateway, loop: asyncio.AbstractEventLoop, gateway_url: str) -> None:
        """Answer this process's Management API calls to ``gateway_url`` with ``gateway.manage`` on ``loop``.

        Affects boto3 clients created from the default session after this call (the handlers' clients are
        created on their first use)."""
        import boto3

        self._gateway = gateway
        self._loop = loop
        self._loop_thread = threading.get_ident()
        parts = urlsplit(gateway_url)
        self._gateway_base = f"{parts.scheme}://{parts.netloc}"
        session = boto3._get_default_session()
        session.events.register(f"before-send.{_SERVICE_ID}", self._before_send, unique_id=f"inprocess-{id(self)}")
        session.events.register(f"choose-signer.{_SERVICE_ID}", self._choose_signer, unique_id=f"signer-{id(self)}")
        session.events.register("before-parameter-build.dynamodb", self._note_writes, unique_id=f"tables-{id(self)}")
        session.events.register("after-call.dynamodb", self._after_write, unique_id=f"written-{id(self)}")

    def on_writes(self, table: str, callback: Callable[[], None]) -> None:
        """Call ``callback`` after each successful DynamoDB write to ``table`` by a function of this process
        (``PutItem``, ``UpdateItem``, ``DeleteItem``, ``BatchWriteItem``, ``TransactWriteItems``), in the
        writing thread: keep it short. ``streamer local`` wakes the table's stream poller with it
        (:meth:`streamer.local.stream_poller.StreamPoller.wake`). Needs :meth:`bind` first (its hooks are on the
        session the functions' clients come from); calls after :meth:`close` are ignored."""
        watch = self._write_watch
        self._write_watch = {**watch, table: (*watch.get(table, ()), callback)}

    def _note_writes(self, params: Mapping[str, Any], model: Any, context: dict[str, Any], **kwargs: Any) -> None:
        # botocore's before-parameter-build: the caller's parameters, before serialising. The call's
        # ``context`` travels with it to after-call.
        watch = self._write_watch
        if watch and model.name in _WRITES:
            tables = [t for t in written_tables(model.name, params) if t in watch]
            if tables:
                context["streamer_written_tables"] = tables

    def _after_write(self, http_response: Any, context: dict[str, Any], **kwargs: Any) -> None:
        tables = context.get("streamer_written_tables")
        if not tables or http_response is None or http_response.status_code != 200:
            return
        watch = self._write_watch
        for table in tables:
            for callback in watch.get(table, ()):
                try:
                    callback()
                except Exception:  # a watcher's failure is not the function's
                    log.exception("write watcher of %s failed", table)

    def _ours(self, url: str) -> str | None:
        """The connection id of a Management API URL on our gateway, else None."""
        parts = urlsplit(url)
        if self._gateway_base is None or f"{parts.scheme}://{parts.netloc}" != self._gateway_base:
            return None
        m = _CONNECTIONS_PATH.match(parts.path)
        return unquote(m.group("id")) if m else None

    def _choose_signer(self, **kwargs: Any) -> Any:
        # The local gateway checks no signature (docs/local.md); signing would be CPU spent for nothing.
        # Only when every client of the session talks to our gateway, which is the case in this process.
        from botocore import UNSIGNED

        return UNSIGNED if self._gateway_base is not None else None

    def _before_send(self, request: Any, **kwargs: Any) -> Any:
        from botocore.awsrequest import AWSResponse, HTTPHeaders

        connection_id = self._ours(request.url)
        gateway, loop = self._gateway, self._loop
        if connection_id is None or gateway is None or loop is None or threading.get_ident() == self._loop_thread:
            return None  # not ours (or on the loop itself, which must not wait for itself): plain HTTP
        body = request.body
        if hasattr(body, "read"):
            body = body.read()
        data = body.encode() if isinstance(body, str) else bytes(body or b"")
        done = asyncio.run_coroutine_threadsafe(gateway.manage(request.method, connection_id, data), loop)
        response = done.result(timeout=_MANAGE_TIMEOUT)
        headers = HTTPHeaders()
        for key, value in response.headers.items():
            headers[key] = value
        payload = response.body if isinstance(response.body, bytes) else b""
        return AWSResponse(request.url, response.status, headers, RawBody(payload))

    # -- stop ---------------------------------------------------------------------------------------------

    async def close(self) -> None:
        """Stop the pool (queued invocations are dropped, a stuck one is not waited for); restore the
        environment."""
        import boto3

        if self._gateway_base is not None:
            session = boto3._get_default_session()
            session.events.unregister(f"before-send.{_SERVICE_ID}", unique_id=f"inprocess-{id(self)}")
            session.events.unregister(f"choose-signer.{_SERVICE_ID}", unique_id=f"signer-{id(self)}")
            session.events.unregister("before-parameter-build.dynamodb", unique_id=f"tables-{id(self)}")
            session.events.unregister("after-call.dynamodb", unique_id=f"written-{id(self)}")
            self._write_watch = {}
            self._gateway_base = None
        self._pool.shutdown(wait=False, cancel_futures=True)
        restore_environ(self._saved_env)
