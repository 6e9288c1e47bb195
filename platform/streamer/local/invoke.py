"""Invoking a function through the Lambda Invoke API: the one invoker of ``streamer local``.

The gateway (asynchronously, :class:`HttpAsyncInvoker`), the stream poller and the EventBridge stand-in
(synchronously, in their threads, :class:`HttpLambdaInvoker`) all call the local Lambda endpoint the way AWS
services call Lambda — ``POST /2015-03-31/functions/{name}/invocations`` with ``X-Amz-Invocation-Type:
RequestResponse`` (https://docs.aws.amazon.com/lambda/latest/api/API_Invoke.html) — and all get one
:class:`InvokeResult`:

* ``ok``: the function returned ``payload`` (200 without ``X-Amz-Function-Error``);
* a function error: ``ok`` false, ``payload`` the Lambda error body (``{"errorType", "errorMessage", …}``),
  ``transport_error`` ``None``: the function ran and failed, a retry counts;
* a transport error: ``transport_error`` says why the function did not run or we cannot tell (connection
  refused while the endpoint restarts, an HTTP error status such as 404 for an unknown function, no answer
  within the timeout — then ``timed_out`` is set too). Pollers retry those without using up an attempt; the
  gateway answers API Gateway's "Internal server error" (or "Endpoint request timed out").
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

__all__ = [
    "AsyncInvoker",
    "HttpAsyncInvoker",
    "HttpLambdaInvoker",
    "InvokeResult",
    "Invoker",
    "error_summary",
    "invoke_url",
]

#: The answer a caller waits for by default: Lambda's maximum function timeout (900 s) and some slack.
DEFAULT_TIMEOUT = 960.0
_HEADERS = {"Content-Type": "application/json", "X-Amz-Invocation-Type": "RequestResponse"}


@dataclass(frozen=True)
class InvokeResult:
    """The outcome of one invocation (see the module docstring)."""

    ok: bool
    payload: Any = None
    transport_error: str | None = None
    timed_out: bool = False

    @property
    def error(self) -> str | None:
        """``None`` when ok; else the transport error, or ``function error <errorType>``."""
        if self.ok:
            return None
        if self.transport_error is not None:
            return self.transport_error
        kind = self.payload.get("errorType") if isinstance(self.payload, Mapping) else self.payload
        return f"function error {kind}"


Invoker = Callable[[str, dict[str, Any]], InvokeResult]
AsyncInvoker = Callable[[str, dict[str, Any]], Awaitable[InvokeResult]]


def invoke_url(endpoint_url: str, function_name: str) -> str:
    return f"{endpoint_url.rstrip('/')}/2015-03-31/functions/{function_name}/invocations"


def _result(status: int, function_error: str | None, body: bytes) -> InvokeResult:
    """One HTTP answer of the Lambda Invoke API → :class:`InvokeResult`."""
    if status != 200:
        return InvokeResult(ok=False, transport_error=f"HTTP {status}: {body[:200].decode(errors='replace')}")
    try:
        payload = json.loads(body) if body else None
    except ValueError:
        payload = body.decode(errors="replace")
    return InvokeResult(ok=function_error is None, payload=payload)


def _timed_out(timeout: float) -> InvokeResult:
    return InvokeResult(ok=False, transport_error=f"no answer within {timeout:g}s", timed_out=True)


class HttpLambdaInvoker:
    """Synchronous invoker (urllib) for the pollers' threads."""

    def __init__(self, endpoint_url: str, timeout: float = DEFAULT_TIMEOUT) -> None:
        self.endpoint_url = endpoint_url.rstrip("/")
        self.timeout = timeout

    def __call__(self, function_name: str, event: dict[str, Any]) -> InvokeResult:
        req = urllib.request.Request(  # noqa: S310 - URL built from our own endpoint
            invoke_url(self.endpoint_url, function_name),
            data=json.dumps(event).encode(),
            method="POST",
            headers=_HEADERS,
        )
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:  # noqa: S310
                return _result(resp.status, resp.headers.get("X-Amz-Function-Error"), resp.read())
        except urllib.error.HTTPError as exc:
            body = exc.read()
            exc.close()
            return _result(exc.code, None, body)
        except TimeoutError:
            return _timed_out(self.timeout)
        except (OSError, ValueError) as exc:
            return InvokeResult(ok=False, transport_error=f"{type(exc).__name__}: {exc}")


class HttpAsyncInvoker:
    """Asynchronous invoker (aiohttp) for the gateway; create and close it inside the event loop."""

    def __init__(self, endpoint_url: str, timeout: float = DEFAULT_TIMEOUT) -> None:
        self.endpoint_url = endpoint_url.rstrip("/")
        self.timeout = timeout
        self._session: Any = None

    def _get_session(self) -> Any:
        import aiohttp

        if self._session is None or self._session.closed:
            from streamer.local.serving import CLIENT_IDLE_SECONDS

            # Bounded, under the Lambda endpoint's pool, and never reusing a connection it may close for
            # idling (streamer.local.serving): aiohttp does not retry a POST on a closed connection.
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=32, keepalive_timeout=CLIENT_IDLE_SECONDS),
                timeout=aiohttp.ClientTimeout(total=self.timeout),
            )
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def __call__(self, function_name: str, event: dict[str, Any]) -> InvokeResult:
        import aiohttp

        url = invoke_url(self.endpoint_url, function_name)
        try:
            async with self._get_session().post(url, data=json.dumps(event).encode(), headers=_HEADERS) as resp:
                return _result(resp.status, resp.headers.get("X-Amz-Function-Error"), await resp.read())
        except TimeoutError:
            return _timed_out(self.timeout)
        except (aiohttp.ClientError, OSError, ValueError) as exc:
            return InvokeResult(ok=False, transport_error=f"{type(exc).__name__}: {exc}")


def error_summary(payload: Any) -> str:
    """One line for a function's answer: ``ErrorType: message`` for a Lambda error body, else its JSON."""
    if isinstance(payload, Mapping) and "errorType" in payload:
        return f"{payload['errorType']}: {payload.get('errorMessage', '')}"[:300]
    return json.dumps(payload, default=str)[:300]
