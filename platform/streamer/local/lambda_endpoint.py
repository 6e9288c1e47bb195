"""The Lambda Invoke API on one machine: the same contract as ``sam local start-lambda``.

``POST /2015-03-31/functions/{name}/invocations`` with the JSON event as body runs the function's handler in a
thread of this process (a bounded pool, :class:`LambdaEndpoint`) and answers like AWS Lambda:

* success → ``200`` with the handler's JSON result;
* the handler raised → ``200`` with header ``X-Amz-Function-Error: Unhandled`` and body
  ``{"errorType": type(exc).__name__, "errorMessage": str(exc), "stackTrace": [...]}`` (Step Functions turns
  ``errorType`` into the ASL error name, so ``Retry``/``Catch`` on custom error classes behave as on AWS);
* the handler ran past its ``Timeout`` → ``200``, ``Unhandled``, ``errorType`` ``Sandbox.Timedout``;
* unknown function → ``404`` with ``x-amzn-ErrorType: ResourceNotFoundException``;
* ``X-Amz-Invocation-Type: Event`` → ``202`` at once, the handler runs in the background;
  ``DryRun`` → ``204``;
* a declared ``Content-Length`` over the 6 MB payload limit → ``413 RequestTooLargeException``, decided
  before any of the body is read (a body up to 4x the limit is then discarded in 64 KiB chunks, a larger one
  left unread and the connection closed); a malformed or negative one → ``400``.

Test-only: ``STREAMER_TEST_FAULTS`` (``streamer.faults.LambdaFaults``) kills this process or crashes a
handler on the n-th invocation of a function, mid-request; its ``aws:`` rule (``streamer.faults.AwsFaults``)
makes a share of the handlers' AWS calls fail.

``{name}`` may be a function name, a full ARN (``arn:aws:lambda:region:acct:function:NAME[:qualifier]``) or a
partial ARN (``acct:function:NAME``), percent-encoded or not.

Run it as its own process (``python -m streamer.local.lambda_endpoint``) so a slow or crashing step never
blocks or kills the gateway; ``streamer local`` supervises that process and restarts it if it dies.
"""

from __future__ import annotations

import argparse
import base64
import importlib
import json
import logging
import os
import re
import socket
import sys
import threading
import time
import traceback
import uuid
from collections.abc import Callable, Mapping
from concurrent.futures import TimeoutError as FutureTimeout
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any
from urllib.parse import unquote, urlsplit

from streamer.config import LOCAL_ACCOUNT, LOCAL_REGION, Env
from streamer.deploy.template import FunctionSpec
from streamer.local.heap import settle_heap, warm_clients
from streamer.local.serving import DaemonPool, PooledMixIn, YieldingHandlerMixIn

__all__ = [
    "FunctionSpec",
    "HandlerFn",
    "LambdaContext",
    "LambdaEndpoint",
    "function_arn",
    "function_name_from_path",
    "function_specs_from_template",
    "resolve_handler",
    "serve_in_thread",
]

log = logging.getLogger("streamer.local.lambda")

#: Python's http.server listens with a backlog of 5, which dropped concurrent invocations from Step Functions.
LISTEN_BACKLOG = 1024
#: The Lambda service caps a synchronous invocation payload at 6 MB.
MAX_PAYLOAD_BYTES = 6 * 1024 * 1024

HandlerFn = Callable[[Any, Any], Any]
#: What a test's plain handler gets as its context's timeout: Lambda's maximum (not enforced).
_UNENFORCED_TIMEOUT = 900.0
#: Threads serving connections, and as many running handlers. Local callers (moto's Tasks, the pollers, the
#: gateway on its HTTP path) never need more at once; boto3 clients here get connection pools this large.
POOL_SIZE = 64

_INVOKE_PATH = re.compile(r"^/2015-03-31/functions/(?P<name>[^/]+)/invocations/?$")
_ARN = re.compile(
    r"^(?:arn:aws[a-zA-Z-]*:lambda:[a-z0-9-]+:)?(?:\d{12}:)?function:(?P<name>[A-Za-z0-9_-]+)(?::[^:]+)?$"
)
_NAME_WITH_QUALIFIER = re.compile(r"^(?P<name>[A-Za-z0-9_-]+)(?::[^:]+)?$")


def function_arn(name: str, region: str = LOCAL_REGION, account: str = LOCAL_ACCOUNT) -> str:
    return f"arn:aws:lambda:{region}:{account}:function:{name}"


def function_name_from_path(raw: str) -> str | None:
    """The function name in any form Lambda accepts (name, name:qualifier, partial or full ARN)."""
    value = unquote(raw)
    m = _ARN.match(value) or _NAME_WITH_QUALIFIER.match(value)
    return m.group("name") if m else None


def resolve_handler(dotted: str) -> HandlerFn:
    """Import ``package.module.func`` (the template's ``Handler`` property) and return the callable."""
    module_name, _, attr = dotted.rpartition(".")
    if not module_name or not attr:
        raise ValueError(f"handler {dotted!r} is not of the form module.function")
    module = importlib.import_module(module_name)
    fn = getattr(module, attr, None)
    if not callable(fn):
        raise ValueError(f"handler {dotted!r}: {module_name} has no callable {attr!r}")
    return fn  # type: ignore[no-any-return]


def function_specs_from_template(template: dict[str, Any]) -> dict[str, FunctionSpec]:
    """``{function name: FunctionSpec}`` of the template (``streamer.deploy.template.functions``).

    The function name is the logical id. Handlers stay dotted strings; the endpoint imports them at start-up
    (:meth:`LambdaEndpoint.preload`) or on first use.
    """
    from streamer.deploy.template import functions

    return functions(template)


class HandlerTable:
    """``table(name)``: function ``name``'s handler, a dotted name imported once, on first use (thread-safe)."""

    def __init__(self, functions: Mapping[str, FunctionSpec]) -> None:
        self.functions = functions
        self._resolved: dict[str, HandlerFn] = {}
        self._lock = threading.Lock()

    def __call__(self, name: str) -> HandlerFn:
        handler = self.functions[name].handler
        if callable(handler):
            return handler
        with self._lock:
            fn = self._resolved.get(name)
            if fn is None:
                fn = resolve_handler(handler)
                self._resolved[name] = fn
            return fn


_STREAMS: dict[str, str] = {}


def _log_stream(function_name: str) -> str:
    """The function's log stream: one per execution environment on AWS (``2026/12/01/[$LATEST]<32 hex>``,
    named on the day it starts), so one per function in this process; not made per invocation."""
    stream = _STREAMS.get(function_name)
    if stream is None:
        stream = _STREAMS.setdefault(function_name, time.strftime("%Y/%m/%d/[$LATEST]") + uuid.uuid4().hex)
    return stream


class LambdaContext:
    """The subset of the Lambda Python runtime's context object that handlers and Powertools use."""

    def __init__(self, name: str, spec: FunctionSpec, request_id: str, region: str, account: str) -> None:
        self.function_name = name
        self.function_version = "$LATEST"
        self.invoked_function_arn = function_arn(name, region, account)
        self.memory_limit_in_mb = spec.memory
        self.aws_request_id = request_id
        self.log_group_name = f"/aws/lambda/{name}"
        self.log_stream_name = _log_stream(name)
        self.identity: Any = None
        self.client_context: Any = None
        self._deadline = time.monotonic() + spec.timeout

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._deadline - time.monotonic()) * 1000))


class FunctionHost:
    """What runs a fixed set of functions, here or in the gateway's process (``streamer.local.inprocess``): the
    functions, the account they run in, their handlers imported once on first use."""

    def __init__(self, functions: Mapping[str, FunctionSpec], region: str, account: str) -> None:
        self.functions = dict(functions)
        self.region = region
        self.account = account
        self._handlers = HandlerTable(self.functions)

    def handler_for(self, name: str) -> HandlerFn:
        return self._handlers(name)

    def preload(self) -> None:
        """Import every handler now, so a broken one fails at start-up rather than on first use, and load the
        service models of their boto3 clients (``streamer.local.heap``: frozen with the rest of start-up)."""
        for name in self.functions:
            self.handler_for(name)
        warm_clients()


class LambdaEndpoint(PooledMixIn, HTTPServer, FunctionHost):
    """An HTTP server speaking the Lambda Invoke API for a fixed set of functions.

    Bounded (``streamer.local.serving``): connections are served by ``pool_size`` threads and handlers run
    in ``pool_size`` more (a handler thread past its timeout cannot be killed, so it runs apart from the
    connection that waits for it); a burst queues instead of creating threads.
    """

    request_queue_size = LISTEN_BACKLOG
    allow_reuse_address = True
    pool_size = POOL_SIZE

    def __init__(
        self,
        address: tuple[str, int],
        functions: Mapping[str, FunctionSpec],
        *,
        region: str = LOCAL_REGION,
        account: str = LOCAL_ACCOUNT,
        sock: socket.socket | None = None,
        enforce_timeouts: bool = True,
    ) -> None:
        FunctionHost.__init__(self, functions, region, account)
        self.enforce_timeouts = enforce_timeouts
        from streamer.faults import LambdaFaults  # test-only fault injection (docs/reliability.md)

        self.faults = LambdaFaults.from_env()
        self._runners = DaemonPool(self.pool_size, name="lambda-fn")
        if sock is None:
            super().__init__(address, _InvokeHandler)
        else:
            super().__init__(address, _InvokeHandler, bind_and_activate=False)
            self.socket.close()
            self.socket = sock
            self.server_address = sock.getsockname()[:2]

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host!s}:{port}"

    def invoke(self, name: str, event: Any) -> tuple[bool, Any]:
        """Run one invocation of function ``name``: ``(ok, result_or_error_body)``. Never raises."""
        spec = self.functions[name]
        request_id = str(uuid.uuid4())
        context = LambdaContext(name, spec, request_id, self.region, self.account)
        started = time.monotonic()
        try:
            fn = self.handler_for(name)
        except Exception as exc:  # an import error is Runtime.ImportModuleError on AWS
            log.exception("cannot import handler of %s", name)
            return False, _error_body(exc, error_type="Runtime.ImportModuleError")
        try:
            if self.faults is not None:
                self.faults.before_invoke(name)
            if self.enforce_timeouts:
                finished, result = self._call_with_timeout(fn, event, context, spec.timeout)
            else:
                finished, result = True, fn(event, context)
        except Exception as exc:
            log.info("%s %s raised %s: %s", name, request_id, type(exc).__name__, exc)
            return False, _error_body(exc)
        if not finished:
            log.error("%s %s timed out after %.2f s", name, request_id, spec.timeout)
            return False, {
                "errorType": "Sandbox.Timedout",
                "errorMessage": f"{request_id} Task timed out after {spec.timeout:.2f} seconds",
            }
        log.debug("%s %s ok in %.1f ms", name, request_id, (time.monotonic() - started) * 1000)
        return True, result

    def invoke_in_background(self, name: str, event: Any) -> None:
        self._runners.submit(self.invoke, name, event)

    def _call_with_timeout(self, fn: HandlerFn, event: Any, context: LambdaContext, timeout: float) -> tuple[bool, Any]:
        """Run ``fn`` on the handler pool and stop waiting after ``timeout`` (the thread cannot be killed; it
        keeps its slot until it returns): ``(True, result)``, or ``(False, None)`` when it did not finish in
        time; its exception is raised."""
        future = self._runners.submit(fn, event, context)
        try:
            return True, future.result(timeout)
        except FutureTimeout:
            return False, None

    def server_close(self) -> None:
        super().server_close()
        self._runners.shutdown(wait=False, cancel_futures=True)


def _error_body(exc: BaseException, error_type: str | None = None) -> dict[str, Any]:
    return {
        "errorType": error_type or type(exc).__name__,
        "errorMessage": str(exc),
        "stackTrace": [line.rstrip("\n") for line in traceback.format_tb(exc.__traceback__)],
    }


#: The largest refused body still read (and discarded, 64 KiB at a time) to answer its 413 cleanly.
_DRAIN_LIMIT = 4 * MAX_PAYLOAD_BYTES


class _InvokeHandler(YieldingHandlerMixIn, BaseHTTPRequestHandler):
    # YieldingHandlerMixIn: a kept-alive connection gives its pool thread back (streamer.local.serving).
    server: LambdaEndpoint
    protocol_version = "HTTP/1.1"
    server_version = "streamer-local-lambda"

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s " + format, self.address_string(), *args)

    def _send(self, status: int, body: bytes, headers: Mapping[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("x-amzn-RequestId", str(uuid.uuid4()))
        if self.close_connection:
            self.send_header("Connection", "close")
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if body:
            self.wfile.write(body)

    def _error(self, status: int, error_type: str, message: str) -> None:
        body = json.dumps({"Type": "User", "message": message}).encode()
        self._send(status, body, {"x-amzn-ErrorType": error_type})

    def _read_body(self) -> bytes | None:
        raw = self.headers.get("Content-Length")
        try:
            length = int(raw) if raw is not None else 0
        except ValueError:
            length = -1
        if length < 0 or (raw is None and self.headers.get("Transfer-Encoding")):
            self.close_connection = True  # the body's end is unknown: never read it
            self._error(HTTPStatus.BAD_REQUEST, "InvalidRequestContentException", "invalid Content-Length")
            return None
        if length > MAX_PAYLOAD_BYTES:
            # Checked on the declared length, before reading: a huge declared length allocates nothing. A body
            # up to a few times the limit is discarded in small chunks (so a client still writing it reads the
            # 413 instead of a broken pipe); a larger one is left unread and the connection closed.
            if length <= _DRAIN_LIMIT:
                left = length
                while left > 0:
                    chunk = self.rfile.read(min(left, 64 * 1024))
                    if not chunk:
                        break
                    left -= len(chunk)
            else:
                self.close_connection = True
            self._error(
                HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                "RequestTooLargeException",
                f"Request must be smaller than {MAX_PAYLOAD_BYTES} bytes for the InvokeFunction operation",
            )
            return None
        return self.rfile.read(length) if length else b""

    def do_GET(self) -> None:
        path = urlsplit(self.path).path
        if path in ("/", "/health", "/2015-03-31/functions", "/2015-03-31/functions/"):
            body = json.dumps({"Functions": [{"FunctionName": n} for n in sorted(self.server.functions)]})
            self._send(HTTPStatus.OK, body.encode())
            return
        self._error(HTTPStatus.NOT_FOUND, "ResourceNotFoundException", f"no route for GET {path}")

    def do_POST(self) -> None:
        path = urlsplit(self.path).path
        body = self._read_body()
        if body is None:
            return
        m = _INVOKE_PATH.match(path)
        if not m:
            self._error(HTTPStatus.NOT_FOUND, "ResourceNotFoundException", f"no route for POST {path}")
            return
        name = function_name_from_path(m.group("name"))
        if name is None or name not in self.server.functions:
            arn = function_arn(name or unquote(m.group("name")), self.server.region, self.server.account)
            self._error(HTTPStatus.NOT_FOUND, "ResourceNotFoundException", f"Function not found: {arn}")
            return
        try:
            event = json.loads(body) if body.strip() else {}
        except ValueError:
            self._error(
                HTTPStatus.BAD_REQUEST,
                "InvalidRequestContentException",
                "Could not parse request body into json",
            )
            return
        invocation_type = self.headers.get("X-Amz-Invocation-Type", "RequestResponse")
        if invocation_type == "DryRun":
            self._send(HTTPStatus.NO_CONTENT, b"")
            return
        if invocation_type == "Event":
            self.server.invoke_in_background(name, event)
            self._send(HTTPStatus.ACCEPTED, b"")
            return
        ok, result = self.server.invoke(name, event)
        headers = {"X-Amz-Executed-Version": "$LATEST"}
        if self.headers.get("X-Amz-Log-Type") == "Tail":
            headers["X-Amz-Log-Result"] = base64.b64encode(b"").decode()
        if not ok:
            headers["X-Amz-Function-Error"] = "Unhandled"
            self._send(HTTPStatus.OK, json.dumps(result).encode(), headers)
            return
        try:
            payload = json.dumps(result).encode()
        except (TypeError, ValueError) as exc:
            headers["X-Amz-Function-Error"] = "Unhandled"
            err = {
                "errorType": "Runtime.MarshalError",
                "errorMessage": f"Unable to marshal response: {exc}",
            }
            self._send(HTTPStatus.OK, json.dumps(err).encode(), headers)
            return
        self._send(HTTPStatus.OK, payload, headers)


def serve_in_thread(
    handlers: Mapping[str, HandlerFn | FunctionSpec],
    host: str = "127.0.0.1",
    port: int = 0,
) -> tuple[LambdaEndpoint, str]:
    """Start an endpoint for ``{function name: handler}`` on a daemon thread; return it and its URL.

    Stop it with ``server.shutdown(); server.server_close()``. Timeouts are not enforced here (a test's
    handler may be slow on purpose); pass :class:`FunctionSpec` values (``FunctionSpec(handler,
    timeout=…)``) to set one per function.
    """
    specs: dict[str, FunctionSpec] = {}
    enforce = False
    for name, value in handlers.items():
        if isinstance(value, FunctionSpec):
            specs[name] = value
            enforce = True
        else:
            specs[name] = FunctionSpec(handler=value, timeout=_UNENFORCED_TIMEOUT)
    server = LambdaEndpoint((host, port), specs, enforce_timeouts=enforce)
    thread = threading.Thread(target=server.serve_forever, name="lambda-endpoint", daemon=True)
    thread.start()
    return server, server.url


def size_client_pools(size: int) -> None:
    """boto3 clients of this process's default session get ``size`` pooled connections (botocore's default
    of 10 made "connection pool is full" warnings and a new connection per call past it), unless created
    with their own ``max_pool_connections``."""
    import boto3
    from botocore.config import Config

    boto3.setup_default_session()
    assert boto3.DEFAULT_SESSION is not None
    boto3.DEFAULT_SESSION._session.set_default_client_config(Config(max_pool_connections=size))


def watch_stdin(on_eof: Callable[[], None]) -> threading.Thread:
    """Call ``on_eof`` when stdin reaches end of file: the supervisor holds the other end of that pipe, so
    this fires when it exits, even by SIGKILL (no orphaned child keeps a port)."""

    def run() -> None:
        # os.read on the raw descriptor: a daemon thread blocked in a buffered read would abort the
        # interpreter at exit ("could not acquire lock for <stdin>").
        try:
            while os.read(0, 4096):
                pass
        except OSError:
            pass
        on_eof()

    t = threading.Thread(target=run, name="watch-stdin", daemon=True)
    t.start()
    return t


def main(argv: list[str] | None = None) -> int:
    """``python -m streamer.local.lambda_endpoint``: serve the template's functions until SIGINT/SIGTERM."""
    import signal

    from streamer.deploy.template import load_template

    parser = argparse.ArgumentParser(prog="python -m streamer.local.lambda_endpoint")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--fd", type=int, default=None, help="serve on this inherited listening socket")
    parser.add_argument("--template", default=None, help="default: infra/template.yaml")
    parser.add_argument("--no-preload", action="store_true", help="import handlers on first use")
    parser.add_argument("--log-level", default=os.environ.get(Env.LOG_LEVEL, "INFO"))
    parser.add_argument("--log-format", choices=("text", "json"), default="text")
    parser.add_argument("--watch-stdin", action="store_true", help="exit when stdin closes (parent gone)")
    args = parser.parse_args(argv)
    from streamer.local._logging import configure_logging

    configure_logging("lambda", args.log_level, args.log_format)

    # The environment (tables, endpoints, secrets) is set by the supervisor, resolved from the template.
    specs = function_specs_from_template(load_template(args.template))
    size_client_pools(POOL_SIZE)
    from streamer.faults import AwsFaults  # test-only: an aws: rule fails a share of the handlers' AWS calls

    aws_faults = AwsFaults.from_env()
    if aws_faults is not None:
        aws_faults.install()  # before any handler creates a client
    sock = socket.socket(fileno=args.fd) if args.fd is not None else None
    server = LambdaEndpoint((args.host, args.port), specs, sock=sock)
    if not args.no_preload:
        try:
            server.preload()
        except Exception as exc:
            server.server_close()
            print(f"lambda endpoint: cannot import a handler: {type(exc).__name__}: {exc}", file=sys.stderr)
            return 3
        settle_heap()  # start-up frozen out of the collector's way (streamer.local.heap)

    def stop(signum: int, frame: Any) -> None:
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    if args.watch_stdin:
        watch_stdin(lambda: stop(0, None))
    print(f"lambda endpoint ready {server.url} functions={','.join(sorted(specs))}", flush=True)
    try:
        server.serve_forever(poll_interval=0.2)
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
