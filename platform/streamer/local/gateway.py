"""API Gateway WebSocket APIs on one machine: the WebSocket side and the Management API, one host and port.

WebSocket side (``ws://HOST:PORT/`` or ``ws://HOST:PORT/{stage}``):

* the ``$connect`` route's function is invoked *before* the handshake completes, with an API-Gateway-shaped
  event; a 2xx ``statusCode`` accepts (selecting the subprotocol the function returns in its
  ``Sec-WebSocket-Protocol`` header), anything else refuses the handshake with that status and
  ``$disconnect`` is never called;
* each message is routed by the route selection expression (``$request.body.action``) to a named route or
  ``$default``; invocations run concurrently with the socket (reading never waits for a function);
  binary frames reach the function base64-encoded (``isBase64Encoded: true``) as on AWS;
* a handshake whose ``Origin`` is not in ``allowed_origins`` (when set; ``streamer.origins``: exact matches,
  no ``Origin`` allowed) is refused with 403 before any function runs, storing nothing;
* ``$disconnect`` runs after the socket closes, with ``disconnectStatusCode`` and ``disconnectReason``;
* limits as on AWS: a message over 128 KiB closes the connection with 1009; the idle timeout (600 s) and
  the maximum connection duration (2 h) close it with 1001 "Going away" — both configurable.

Management API (``/@connections/{id}`` and ``/{stage}/@connections/{id}``): ``POST`` sends data to the
connection (200; 410 ``GoneException`` when it is gone; 413 ``PayloadTooLargeException`` over 128 KiB),
``GET`` describes it, ``DELETE`` closes it (204). Errors use the restJson shape botocore's
``apigatewaymanagementapi`` client parses: status code, ``x-amzn-ErrorType`` header, ``{"message": …}``.

Functions are invoked through any :data:`~streamer.local.invoke.AsyncInvoker`: ``streamer local`` runs the
route functions in this process (``streamer.local.inprocess``, whose functions' Management API calls reach
:meth:`Gateway.manage` without HTTP), or through the Lambda Invoke API of our local endpoint, another process
(``STREAMER_LOCAL_INVOKE=http``). Either way an invocation never blocks the event loop.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime as dt
import json
import logging
import secrets
import socket
import time
from collections.abc import Awaitable, Mapping
from dataclasses import dataclass, field
from typing import Any

from aiohttp import WSCloseCode, WSMsgType, web

__all__ = [
    "DEFAULT_IDLE_TIMEOUT",
    "DEFAULT_MAX_DURATION",
    "MAX_MESSAGE_BYTES",
    "Gateway",
    "GatewayConfig",
    "new_connection_id",
    "select_route",
]

from streamer.config import LOCAL_REGION
from streamer.limits import MAX_CONNECTION_SECONDS, MAX_MESSAGE_BYTES
from streamer.local.invoke import AsyncInvoker
from streamer.local.serving import unique_bytes, unique_uuid
from streamer.origins import ORIGIN_REFUSED_STATUS, origin_allowed

log = logging.getLogger("streamer.local.gateway")

DEFAULT_IDLE_TIMEOUT = 600.0
DEFAULT_MAX_DURATION = float(MAX_CONNECTION_SECONDS)
#: API Gateway waits at most 29 s for an integration.
INTEGRATION_TIMEOUT = 29.0
GOING_AWAY = "Going away"


@dataclass(frozen=True)
class GatewayConfig:
    """What the gateway serves: routes (route key → function name) and the API Gateway limits."""

    routes: Mapping[str, str]
    route_selection_expression: str = "$request.body.action"
    #: Route keys with a route response: the integration response's ``body`` (a string) goes to the client.
    route_responses: frozenset[str] = frozenset()
    stage: str = "local"
    api_id: str = "local"
    region: str = LOCAL_REGION
    idle_timeout: float = DEFAULT_IDLE_TIMEOUT
    max_duration: float = DEFAULT_MAX_DURATION
    max_message_bytes: int = MAX_MESSAGE_BYTES
    integration_timeout: float = INTEGRATION_TIMEOUT
    #: Browser origins allowed to connect (exact matches); None: no check here (``$connect`` still checks).
    allowed_origins: tuple[str, ...] | None = None


def new_connection_id() -> str:
    """16 characters of base64 like AWS's (``L0SM9cOFvHcCIhw=``), without ``+``/``/`` so it is URL-safe."""
    return base64.b64encode(secrets.token_bytes(11)).decode().replace("+", "A").replace("/", "B")


def _request_id() -> str:
    return base64.b64encode(unique_bytes(11)).decode().replace("+", "C").replace("/", "D")


def select_route(expression: str, body: str | None, routes: Mapping[str, str]) -> str | None:
    """The route key for a message: ``$request.body.<path>`` evaluated on the JSON body, else ``$default``.

    ``None`` when nothing matches and there is no ``$default`` route.
    """
    key: str | None = None
    prefix = "$request.body."
    if body is not None and expression.startswith(prefix):
        try:
            value: Any = json.loads(body)
        except ValueError:
            value = None
        for part in expression[len(prefix) :].split("."):
            value = value.get(part) if isinstance(value, dict) else None
        if isinstance(value, str | int | float) and not isinstance(value, bool):
            key = str(value)
    if key is not None and key in routes and not key.startswith("$"):
        return key
    return "$default" if "$default" in routes else None


def _iso(ts: float) -> str:
    when = dt.datetime.fromtimestamp(ts, dt.UTC)
    return when.strftime("%Y-%m-%dT%H:%M:%S.") + f"{int(ts * 1000) % 1000:03d}Z"


_SECOND: tuple[int, str] = (-1, "")


def _request_time(ts: float) -> str:
    """API Gateway's ``requestTime`` (``01/Dec/2026:16:45:26 +0000``): made once a second, not per message."""
    global _SECOND
    second, text = _SECOND
    if int(ts) != second:
        second = int(ts)
        text = dt.datetime.fromtimestamp(second, dt.UTC).strftime("%d/%b/%Y:%H:%M:%S +0000")
        _SECOND = (second, text)
    return text


@dataclass
class _Connection:
    connection_id: str
    ws: web.WebSocketResponse
    stage: str
    connected_at: float
    source_ip: str
    user_agent: str
    last_active: float = field(default_factory=time.time)
    last_active_mono: float = field(default_factory=time.monotonic)
    connected_mono: float = field(default_factory=time.monotonic)
    close_code: int | None = None
    close_reason: str = ""
    tasks: set[asyncio.Task[None]] = field(default_factory=set)

    def touch(self) -> None:
        self.last_active = time.time()
        self.last_active_mono = time.monotonic()


class Gateway:
    """The aiohttp application. ``await start(host, port)`` / ``await stop()`` inside one event loop."""

    def __init__(self, config: GatewayConfig, invoke: AsyncInvoker) -> None:
        self.config = config
        self.invoke = invoke
        self.connections: dict[str, _Connection] = {}
        self._background: set[asyncio.Task[Any]] = set()
        self._runner: web.AppRunner | None = None
        self._closing = False
        self.app = web.Application(client_max_size=8 * 1024 * 1024)
        self.app.router.add_route("POST", "/@connections/{connection_id}", self._post)
        self.app.router.add_route("GET", "/@connections/{connection_id}", self._get)
        self.app.router.add_route("DELETE", "/@connections/{connection_id}", self._delete)
        self.app.router.add_route("POST", "/{stage}/@connections/{connection_id}", self._post)
        self.app.router.add_route("GET", "/{stage}/@connections/{connection_id}", self._get)
        self.app.router.add_route("DELETE", "/{stage}/@connections/{connection_id}", self._delete)
        self.app.router.add_route("GET", "/", self._websocket)
        self.app.router.add_route("GET", "/{stage}", self._websocket)
        self.url: str | None = None

    # -- life cycle -------------------------------------------------------------------------------------

    async def start(self, host: str = "127.0.0.1", port: int = 0, sock: socket.socket | None = None) -> str:
        """Serve on ``sock`` (already bound and listening) or on ``host:port``; return ``ws://host:port``."""
        self._runner = web.AppRunner(self.app, handle_signals=False, access_log=None, shutdown_timeout=2.0)
        await self._runner.setup()
        if sock is None:
            sock = socket.create_server((host, port), backlog=1024)
        site = web.SockSite(self._runner, sock)
        await site.start()
        bound_host, bound_port = sock.getsockname()[:2]
        self.url = f"ws://{bound_host}:{bound_port}"
        return self.url

    async def stop(self) -> None:
        """Close every connection with 1001 (``$disconnect`` runs for each), then stop serving."""
        self._closing = True
        await asyncio.gather(
            *(self._close(c, WSCloseCode.GOING_AWAY, GOING_AWAY) for c in list(self.connections.values())),
            return_exceptions=True,
        )
        deadline = time.monotonic() + 10
        while self._background and time.monotonic() < deadline:
            await asyncio.wait(set(self._background), timeout=max(0.0, deadline - time.monotonic()))
        for task in list(self._background):
            task.cancel()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def _spawn(self, coro: Awaitable[Any], owner: _Connection | None = None) -> asyncio.Task[Any]:
        task = asyncio.ensure_future(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        if owner is not None:
            owner.tasks.add(task)
            task.add_done_callback(owner.tasks.discard)
        return task

    # -- events -----------------------------------------------------------------------------------------

    def _context(
        self,
        conn_id: str,
        route_key: str,
        event_type: str,
        stage: str,
        connected_at: float,
        source_ip: str,
        user_agent: str | None,
        host: str,
    ) -> dict[str, Any]:
        now = time.time()
        identity: dict[str, Any] = {"sourceIp": source_ip}
        if user_agent is not None:
            identity["userAgent"] = user_agent
        request_id = _request_id()
        return {
            "routeKey": route_key,
            "eventType": event_type,
            "extendedRequestId": request_id,
            "requestTime": _request_time(now),
            "messageDirection": "IN",
            "stage": stage,
            "connectedAt": int(connected_at * 1000),
            "requestTimeEpoch": int(now * 1000),
            "identity": identity,
            "requestId": request_id,
            "domainName": host,
            "connectionId": conn_id,
            "apiId": self.config.api_id,
        }

    # -- WebSocket --------------------------------------------------------------------------------------

    def _stage_of(self, request: web.Request) -> str:
        return request.match_info.get("stage") or self.config.stage

    async def _websocket(self, request: web.Request) -> web.StreamResponse:
        if request.headers.get("Upgrade", "").lower() != "websocket":
            return web.json_response({"message": "Upgrade Required"}, status=426)
        if self._closing:
            return web.json_response({"message": "Service Unavailable"}, status=503)
        allowed = self.config.allowed_origins
        if allowed is not None and not origin_allowed(request.headers, allowed):
            log.info("handshake refused: origin %r not allowed", request.headers.get("Origin"))
            return web.json_response({"message": "Forbidden"}, status=ORIGIN_REFUSED_STATUS)
        conn_id = new_connection_id()
        stage = self._stage_of(request)
        source_ip = request.remote or "127.0.0.1"
        user_agent = request.headers.get("User-Agent", "")
        connected_at = time.time()
        host = request.host
        headers: dict[str, str] = {}
        multi_headers: dict[str, list[str]] = {}
        for k, v in request.headers.items():
            headers[k] = v
            multi_headers.setdefault(k, []).append(v)
        forwarded = {
            "X-Forwarded-For": source_ip,
            "X-Forwarded-Port": str(request.url.port or 80),
            "X-Forwarded-Proto": request.scheme,
        }
        for k, v in forwarded.items():
            headers.setdefault(k, v)
            multi_headers.setdefault(k, [v])
        event: dict[str, Any] = {
            "headers": headers,
            "multiValueHeaders": multi_headers,
            "requestContext": self._context(
                conn_id, "$connect", "CONNECT", stage, connected_at, source_ip, user_agent, host
            ),
            "isBase64Encoded": False,
        }
        if request.query:
            event["queryStringParameters"] = {k: v for k, v in request.query.items()}
            mq: dict[str, list[str]] = {}
            for k, v in request.query.items():
                mq.setdefault(k, []).append(v)
            event["multiValueQueryStringParameters"] = mq

        subprotocol: str | None = None
        function = self.config.routes.get("$connect")
        if function is not None:
            outcome = await self.invoke(function, event)
            if not outcome.ok:
                log.error("$connect %s: %s", conn_id, outcome.error)
                return web.json_response({"message": "Internal server error"}, status=500)
            response = outcome.payload if isinstance(outcome.payload, dict) else {}
            status = int(response.get("statusCode", 200))
            if not 200 <= status < 300:
                log.info("$connect %s refused with %d", conn_id, status)
                body = response.get("body")
                extra = {
                    k: str(v)
                    for k, v in (response.get("headers") or {}).items()
                    if k.lower() not in ("sec-websocket-protocol", "content-length")
                }
                return web.Response(status=status, text=body if isinstance(body, str) else None, headers=extra)
            for k, v in (response.get("headers") or {}).items():
                if k.lower() == "sec-websocket-protocol":
                    subprotocol = str(v)

        ws = web.WebSocketResponse(
            protocols=(subprotocol,) if subprotocol else (),
            max_msg_size=self.config.max_message_bytes,
            autoclose=True,
            autoping=True,
            compress=False,  # API Gateway does not negotiate permessage-deflate
        )
        await ws.prepare(request)
        conn = _Connection(
            connection_id=conn_id,
            ws=ws,
            stage=stage,
            connected_at=connected_at,
            source_ip=source_ip,
            user_agent=user_agent,
        )
        self.connections[conn_id] = conn
        log.info("connected %s (stage %s, subprotocol %s)", conn_id, stage, subprotocol)
        watchdog = self._spawn(self._watchdog(conn))
        try:
            await self._read_loop(conn, host)
        finally:
            watchdog.cancel()
            self.connections.pop(conn_id, None)
            code = conn.close_code if conn.close_code is not None else (ws.close_code or 1006)
            reason = conn.close_reason
            log.info("disconnected %s (%s %s)", conn_id, code, reason)
            self._spawn(self._disconnect(conn, host, code, reason))
        return ws

    async def _read_loop(self, conn: _Connection, host: str) -> None:
        ws = conn.ws
        while True:
            msg = await ws.receive()
            if msg.type == WSMsgType.TEXT:
                conn.touch()
                self._spawn(self._message(conn, host, msg.data, False), owner=conn)
            elif msg.type == WSMsgType.BINARY:
                conn.touch()
                body = base64.b64encode(msg.data).decode()
                self._spawn(self._message(conn, host, body, True), owner=conn)
            elif msg.type == WSMsgType.ERROR:
                exc = ws.exception()
                code = getattr(exc, "code", None)
                if conn.close_code is None:
                    conn.close_code = int(code) if isinstance(code, int) else (ws.close_code or 1006)
                    conn.close_reason = str(exc) if code == WSCloseCode.MESSAGE_TOO_BIG else conn.close_reason
                log.info("connection %s: %s", conn.connection_id, exc)
                if not ws.closed:
                    await ws.close(code=conn.close_code or WSCloseCode.INTERNAL_ERROR)
                return
            else:  # CLOSE, CLOSING, CLOSED
                if conn.close_code is None:
                    conn.close_code = ws.close_code or (int(msg.data) if isinstance(msg.data, int) else 1005)
                    conn.close_reason = msg.extra if isinstance(msg.extra, str) else ""
                return

    async def _watchdog(self, conn: _Connection) -> None:
        cfg = self.config
        while not conn.ws.closed:
            now = time.monotonic()
            idle_deadline = conn.last_active_mono + cfg.idle_timeout
            max_deadline = conn.connected_mono + cfg.max_duration
            if now >= min(idle_deadline, max_deadline):
                why = "idle timeout" if idle_deadline <= max_deadline else "maximum connection duration"
                log.info("closing %s: %s", conn.connection_id, why)
                await self._close(conn, WSCloseCode.GOING_AWAY, GOING_AWAY)
                return
            await asyncio.sleep(min(idle_deadline, max_deadline) - now + 0.01)

    async def _close(self, conn: _Connection, code: int, reason: str) -> None:
        if conn.close_code is None:
            conn.close_code = int(code)
            conn.close_reason = reason
        with contextlib.suppress(Exception):
            await conn.ws.close(code=code, message=reason.encode())

    async def _message(self, conn: _Connection, host: str, body: str, is_base64: bool) -> None:
        cfg = self.config
        route = select_route(cfg.route_selection_expression, None if is_base64 else body, cfg.routes)
        ctx = self._context(
            conn.connection_id,
            route or "$default",
            "MESSAGE",
            conn.stage,
            conn.connected_at,
            conn.source_ip,
            None,
            host,
        )
        ctx["messageId"] = _request_id()
        if route is None:
            await self._send_error(conn, "Forbidden", ctx)
            return
        event = {"requestContext": ctx, "body": body, "isBase64Encoded": is_base64}
        outcome = await self.invoke(self.config.routes[route], event)
        if not outcome.ok:
            log.error("route %s on %s: %s", route, conn.connection_id, outcome.error)
            message = "Endpoint request timed out" if outcome.timed_out else "Internal server error"
            await self._send_error(conn, message, ctx)
        elif route in cfg.route_responses and isinstance(outcome.payload, dict):
            # A two-way route: a Lambda proxy integration's response body is the message to the client.
            answer = outcome.payload.get("body")
            if isinstance(answer, str) and answer and not conn.ws.closed:
                with contextlib.suppress(Exception):
                    await conn.ws.send_str(answer)

    async def _send_error(self, conn: _Connection, message: str, ctx: Mapping[str, Any]) -> None:
        """What API Gateway sends the client when an integration fails."""
        frame = {"message": message, "connectionId": conn.connection_id, "requestId": ctx["requestId"]}
        with contextlib.suppress(Exception):
            await conn.ws.send_str(json.dumps(frame))

    async def _disconnect(self, conn: _Connection, host: str, code: int, reason: str) -> None:
        for task in list(conn.tasks):  # messages in flight first, as their replies may still be sent
            with contextlib.suppress(Exception):
                await asyncio.wait_for(asyncio.shield(task), timeout=self.config.integration_timeout)
        function = self.config.routes.get("$disconnect")
        if function is None:
            return
        ctx = self._context(
            conn.connection_id,
            "$disconnect",
            "DISCONNECT",
            conn.stage,
            conn.connected_at,
            conn.source_ip,
            conn.user_agent,
            host,
        )
        ctx["disconnectStatusCode"] = code
        ctx["disconnectReason"] = reason
        headers = {"Host": host, "X-Forwarded-For": conn.source_ip, "x-api-key": "", "x-restapi": ""}
        event = {
            "headers": headers,
            "multiValueHeaders": {k: [v] for k, v in headers.items()},
            "requestContext": ctx,
            "isBase64Encoded": False,
        }
        outcome = await self.invoke(function, event)
        if not outcome.ok:
            log.error("$disconnect %s: %s", conn.connection_id, outcome.error)

    # -- Management API ---------------------------------------------------------------------------------

    @staticmethod
    def _error(status: int, error_type: str, message: str | None) -> web.Response:
        headers = {"x-amzn-ErrorType": error_type}
        return web.json_response({"message": message}, status=status, headers=headers)

    def _live(self, connection_id: str) -> _Connection | None:
        conn = self.connections.get(connection_id)
        if conn is None or conn.ws.closed or conn.close_code is not None:
            return None
        return conn

    async def _post(self, request: web.Request) -> web.Response:
        return await self.manage("POST", request.match_info["connection_id"], await request.read())

    async def _get(self, request: web.Request) -> web.Response:
        return await self.manage("GET", request.match_info["connection_id"])

    async def _delete(self, request: web.Request) -> web.Response:
        return await self.manage("DELETE", request.match_info["connection_id"])

    async def manage(self, method: str, connection_id: str, data: bytes = b"") -> web.Response:
        """One Management API call on ``@connections/{connection_id}``: from HTTP, or straight from a function
        running in this process (``streamer.local.inprocess``) — the same answers either way."""
        conn = self._live(connection_id)
        if conn is None:
            return self._error(410, "GoneException", None)
        if method == "GET":
            return web.json_response(
                {
                    # restJson wire names (botocore maps them to ConnectedAt, Identity.SourceIp, …).
                    "connectedAt": _iso(conn.connected_at),
                    "identity": {"sourceIp": conn.source_ip, "userAgent": conn.user_agent},
                    "lastActiveAt": _iso(conn.last_active),
                }
            )
        if method == "DELETE":
            # Answer at once; the close handshake and $disconnect happen in the background, as on AWS.
            self._spawn(self._close(conn, WSCloseCode.OK, ""))
            return web.Response(status=204)
        if method != "POST":
            return self._error(405, "MethodNotAllowedException", f"{method} is not allowed on @connections")
        if len(data) > self.config.max_message_bytes:
            return self._error(
                413,
                "PayloadTooLargeException",
                f"Message size of {len(data)} exceeds the maximum of {self.config.max_message_bytes} bytes",
            )
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            text = None
        try:
            if text is not None:
                await conn.ws.send_str(text)
            else:
                await conn.ws.send_bytes(data)
        except (ConnectionError, RuntimeError) as exc:
            log.info("post to %s failed: %s", conn.connection_id, exc)
            return self._error(410, "GoneException", None)
        conn.touch()
        return web.Response(status=200, headers={"x-amzn-RequestId": unique_uuid()})
