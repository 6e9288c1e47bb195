"""The console's aiohttp application: pages, JSON API, Server-Sent Events, token and host checks.

Routes (relative to ``/console``)::

    GET  /                               the single page (index.html); pages are URL fragments (#/executions …)
    GET  /static/{path}                  app.js, app.css, vendor/ (cytoscape, elkjs, cytoscape-elk)
    GET  /api/executions                 ExecutionPage   ?workflow&status&user&since&until&q&limit&cursor
    GET  /api/executions/{id}            ExecutionDetail ?user&expand=1
    GET  /api/executions/{id}/history    the raw Step Functions events
    POST /api/executions/{id}/cancel     {"cancelled": bool}
    POST /api/executions/{id}/rerun      {"request_id": new id}
    GET  /api/connections                [UserConnections]
    GET  /api/overview                   Overview ?window=seconds
    GET  /api/live/executions            SSE: the list's first page (same filters) whenever it changes
    GET  /api/live/executions/{id}       SSE: the execution detail whenever it changes; ``end`` once terminal

Errors are JSON ``{"error": code, "message": …}``: 400 bad parameter, 401 no/wrong token, 403 foreign Host,
404 ``observe.NotFoundError``, 409 ``observe.AmbiguousError`` (pass ``user``), 502 when the sources fail.

``streamer.observe`` does blocking boto3 calls; they run in worker threads (``asyncio.to_thread``) so the
event loop — in ``streamer local`` the WebSocket gateway's own — never waits on them.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import hashlib
import hmac
import html
import ipaddress
import json
import logging
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from aiohttp import web

from streamer.config import Env

if TYPE_CHECKING:
    from streamer.observe import Sources

__all__ = ["CONSOLE_PREFIX", "TOKEN_ENV", "ConsoleConfig", "create_app", "mount", "token_required"]

log = logging.getLogger("streamer.console")

CONSOLE_PREFIX = "/console"
TOKEN_ENV = Env.CONSOLE_TOKEN
COOKIE = "streamer_console"
ACTION_HEADER = "X-Streamer-Console"
STATIC = Path(__file__).parent / "static"
TERMINAL = frozenset({"SUCCEEDED", "FAILED", "TIMED_OUT", "ABORTED", "CANCELLED"})
MAX_LIMIT = 200
LOOPBACK_NAMES = frozenset({"localhost", "localhost.localdomain", "ip6-localhost"})

T = TypeVar("T")


@dataclass(frozen=True)
class ConsoleConfig:
    """How the console reaches its sources and who may use it.

    ``sources`` is a :class:`streamer.observe.Sources` or a zero-argument factory of one (called once, on the
    first request that needs it — ``streamer local`` mounts the console before its own endpoints exist).
    ``token``: required on every request when set. ``poll_interval``: seconds between two reads of the
    sources for a live view (Step Functions allows 15 ``GetExecutionHistory`` per second per account with a
    burst of 250 — https://docs.aws.amazon.com/step-functions/latest/dg/service-quotas.html — so against AWS
    one second per open page is well inside it).
    """

    sources: Any
    token: str | None = None
    poll_interval: float = 1.0
    title: str = "streamer"


def token_required(host: str) -> bool:
    """True when ``host`` is not a loopback interface: serving there requires a token."""
    if host in LOOPBACK_NAMES:
        return False
    try:
        return not ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return True


def _host_is_loopback(host_header: str) -> bool:
    host = host_header.rsplit(":", 1)[0] if host_header.count(":") == 1 else host_header
    if host.startswith("["):
        host = host[1 : host.index("]")] if "]" in host else host
    return not token_required(host)


def _error(status: int, code: str, message: str) -> web.Response:
    return web.json_response({"error": code, "message": message}, status=status)


def _json(data: Any) -> web.Response:
    return web.Response(text=json.dumps(data, separators=(",", ":")), content_type="application/json")


def _parse_time(value: str | None, name: str) -> dt.datetime | None:
    """ISO 8601 (``2026-01-01T10:00``, ``…Z``, ``…+02:00``; naive means UTC) or a duration back from now
    (``15m``, ``2h``, ``7d``)."""
    if not value:
        return None
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    if value[-1] in units and value[:-1].isdigit():
        return dt.datetime.now(dt.UTC) - dt.timedelta(seconds=int(value[:-1]) * units[value[-1]])
    try:
        when = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError as exc:
        raise _bad(f"{name}: not a time or duration: {value!r}") from exc
    return when if when.tzinfo else when.replace(tzinfo=dt.UTC)


E = TypeVar("E", bound=web.HTTPException)


def _http(kind: type[E], code: str, message: str) -> E:
    """An HTTP error with the console's JSON body (raise it)."""
    return kind(text=json.dumps({"error": code, "message": message}), content_type="application/json")


def _bad(message: str) -> web.HTTPBadRequest:
    return _http(web.HTTPBadRequest, "bad_parameter", message)


def _sources_failed(exc: BaseException) -> web.HTTPBadGateway:
    return _http(web.HTTPBadGateway, "sources_failed", f"{type(exc).__name__}: {exc}")


def _list_params(q: Mapping[str, str]) -> dict[str, Any]:
    try:
        limit = int(q.get("limit", "50"))
    except ValueError as exc:
        raise _bad(f"limit: not an integer: {q.get('limit')!r}") from exc
    if not 1 <= limit <= MAX_LIMIT:
        raise _bad(f"limit: between 1 and {MAX_LIMIT}")
    return {
        "workflow": q.get("workflow") or None,
        "status": (q.get("status") or "").upper() or None,
        "user": q.get("user") or None,
        "since": _parse_time(q.get("since"), "since"),
        "until": _parse_time(q.get("until"), "until"),
        "query": q.get("q") or None,
        "limit": limit,
        "cursor": q.get("cursor") or None,
    }


class Console:
    """Request handlers bound to one :class:`ConsoleConfig`."""

    def __init__(self, config: ConsoleConfig) -> None:
        self.config = config
        self._sources: Sources | None = None
        self._lock = asyncio.Lock()

    async def sources(self) -> Sources:
        if self._sources is None:
            async with self._lock:
                if self._sources is None:
                    src = self.config.sources
                    self._sources = await asyncio.to_thread(src) if callable(src) else src
        assert self._sources is not None
        return self._sources

    async def call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run an ``observe`` function in a worker thread, mapping its errors to HTTP answers."""
        from streamer import observe
        from streamer.errors import StreamerError

        try:
            src = await self.sources()
        except Exception as exc:  # the deployment cannot be reached at all (no stack, no outputs)
            log.warning("console: the sources cannot be reached: %s", exc)
            raise _sources_failed(exc) from exc
        try:
            return await asyncio.to_thread(fn, src, *args, **kwargs)
        except observe.NotFoundError as exc:
            raise _http(web.HTTPNotFound, "not_found", str(exc)) from exc
        except observe.AmbiguousError as exc:
            raise _http(web.HTTPConflict, "ambiguous", str(exc)) from exc
        except StreamerError as exc:
            raise _bad(str(exc)) from exc
        except (web.HTTPException, asyncio.CancelledError):
            raise
        except Exception as exc:
            # The sources failed (an AWS error, `streamer local` gone): say so; the page shows it and retries.
            log.warning("console: %s failed: %s", getattr(fn, "__name__", fn), exc)
            raise _sources_failed(exc) from exc

    # -- pages ------------------------------------------------------------------------------------------

    async def index(self, request: web.Request) -> web.StreamResponse:
        page = (STATIC / "index.html").read_text(encoding="utf-8")
        return web.Response(
            text=page.replace("{{title}}", html.escape(self.config.title)),
            content_type="text/html",
            headers={"Cache-Control": "no-store"},
        )

    # -- API ----------------------------------------------------------------------------------------------

    async def executions(self, request: web.Request) -> web.Response:
        from streamer import observe

        page = await self.call(observe.list_executions, **_list_params(request.query))
        return _json(page.model_dump(mode="json"))

    async def execution(self, request: web.Request) -> web.Response:
        from streamer import observe

        detail = await self.call(
            observe.show_execution,
            request.match_info["id"],
            user=request.query.get("user") or None,
            expand=request.query.get("expand", "1") not in ("0", "false", ""),
        )
        return _json(detail.model_dump(mode="json"))

    async def history(self, request: web.Request) -> web.Response:
        from streamer import observe

        events = await self.call(
            observe.execution_history, request.match_info["id"], user=request.query.get("user") or None
        )
        return _json(events)

    async def cancel(self, request: web.Request) -> web.Response:
        from streamer import observe

        done = await self.call(observe.cancel, request.match_info["id"], user=request.query.get("user") or None)
        return _json({"cancelled": done})

    async def rerun(self, request: web.Request) -> web.Response:
        from streamer import observe

        rid = await self.call(observe.rerun, request.match_info["id"], user=request.query.get("user") or None)
        return _json({"request_id": rid})

    async def connections(self, request: web.Request) -> web.Response:
        from streamer import observe

        users = await self.call(observe.connections)
        return _json([u.model_dump(mode="json") for u in users])

    async def overview(self, request: web.Request) -> web.Response:
        from streamer import observe

        try:
            window = int(request.query.get("window", "3600"))
        except ValueError as exc:
            raise _bad("window: seconds, an integer") from exc
        if not 60 <= window <= 7 * 86400:
            raise _bad("window: between 60 and 604800 seconds")
        result = await self.call(observe.overview, window_seconds=window)
        return _json(result.model_dump(mode="json"))

    # -- live (Server-Sent Events) ----------------------------------------------------------------------

    async def _sse(
        self,
        request: web.Request,
        read: Callable[[], Awaitable[tuple[Any, bool]]],
    ) -> web.StreamResponse:
        """Send ``read()``'s document whenever it changes; ``event: end`` once it says it is final.

        A read that fails is sent as ``event: problem`` and retried: the page keeps its last data and shows
        the problem. A comment line every 15 s keeps proxies from closing an idle stream.
        """
        resp = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "Cache-Control": "no-store", "X-Accel-Buffering": "no"}
        )
        await resp.prepare(request)
        last_digest = ""
        last_write = time.monotonic()
        try:
            while True:
                started = time.monotonic()
                try:
                    data, final = await read()
                except web.HTTPException as exc:
                    await resp.write(f"event: problem\ndata: {exc.text}\n\n".encode())
                    if exc.status == 404 or exc.status == 409:
                        break
                    final = False
                else:
                    body = json.dumps(data, separators=(",", ":"))
                    digest = hashlib.sha256(body.encode()).hexdigest()
                    if digest != last_digest:
                        await resp.write(f"data: {body}\n\n".encode())
                        last_digest = digest
                        last_write = time.monotonic()
                    if final:
                        await resp.write(b"event: end\ndata: {}\n\n")
                        break
                if time.monotonic() - last_write > 15:
                    await resp.write(b": keep-alive\n\n")
                    last_write = time.monotonic()
                # A slow read (a long history) is not repeated back to back: wait at least as long as it took.
                await asyncio.sleep(max(self.config.poll_interval, time.monotonic() - started))
        except ConnectionResetError:
            pass  # the page went away (a write to a closed stream); a cancellation (shutdown) propagates
        return resp

    async def live_executions(self, request: web.Request) -> web.StreamResponse:
        from streamer import observe

        params = _list_params(request.query)

        async def read() -> tuple[Any, bool]:
            page = await self.call(observe.list_executions, **params)
            return page.model_dump(mode="json"), False

        return await self._sse(request, read)

    async def live_execution(self, request: web.Request) -> web.StreamResponse:
        from streamer import observe

        ident, user = request.match_info["id"], request.query.get("user") or None

        async def read() -> tuple[Any, bool]:
            detail = await self.call(observe.show_execution, ident, user=user, expand=True)
            data = detail.model_dump(mode="json")
            return data, _is_final(data)

        return await self._sse(request, read)


def _is_final(detail: Mapping[str, Any]) -> bool:
    """Both the execution and the request have ended (the request's terminal event may land a moment after
    the execution stops, or before — e.g. a cancel ends the request first)."""
    execution = detail.get("execution") or {}
    request = detail.get("request") or {}
    ex_done = not execution or str(execution.get("status", "")).upper() in TERMINAL
    req_done = not request or str(request.get("status", "")).upper() in TERMINAL
    return ex_done and req_done


def _security(config: ConsoleConfig) -> Callable[..., Awaitable[web.StreamResponse]]:
    token = config.token

    @web.middleware
    async def middleware(
        request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        set_cookie = False
        if token is None:
            # Loopback only: refuse a foreign Host so a web page cannot reach this by DNS rebinding.
            if not _host_is_loopback(request.host):
                return _error(403, "forbidden_host", f"Host {request.host!r} is not a loopback name")
        else:
            given = request.cookies.get(COOKIE, "")
            auth = request.headers.get("Authorization", "")
            if auth.startswith("Bearer "):
                given = auth[len("Bearer ") :]
            if "token" in request.query:
                given, set_cookie = request.query["token"], True
            if not hmac.compare_digest(given.encode(), token.encode()):
                return _error(401, "unauthorized", "this console requires its token (?token=… once, or Bearer)")
        if request.method == "POST" and request.headers.get(ACTION_HEADER) != "1":
            return _error(403, "forbidden", f"actions require the {ACTION_HEADER}: 1 header")
        if set_cookie:
            # Drop the token from the address bar once it is in an HttpOnly cookie.
            query = {k: v for k, v in request.query.items() if k != "token"}
            target = request.rel_url.with_query(query) if query else request.rel_url.with_query(None)
            resp = web.HTTPFound(str(target))
            resp.set_cookie(COOKIE, token or "", httponly=True, samesite="Strict", path=CONSOLE_PREFIX)
            return resp
        response = await handler(request)
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("Referrer-Policy", "no-referrer")
        response.headers.setdefault(
            "Content-Security-Policy",
            "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; frame-ancestors 'none'",
        )
        return response

    return middleware


def create_app(config: ConsoleConfig) -> web.Application:
    """The console as an aiohttp application rooted at ``/`` (mount it at ``/console`` with :func:`mount`)."""
    console = Console(config)
    app = web.Application(middlewares=[_security(config)])
    r = app.router
    r.add_get("/", console.index)
    r.add_static("/static", STATIC, follow_symlinks=False)
    r.add_get("/api/executions", console.executions)
    r.add_get("/api/executions/{id}", console.execution)
    r.add_get("/api/executions/{id}/history", console.history)
    r.add_post("/api/executions/{id}/cancel", console.cancel)
    r.add_post("/api/executions/{id}/rerun", console.rerun)
    r.add_get("/api/connections", console.connections)
    r.add_get("/api/overview", console.overview)
    r.add_get("/api/live/executions", console.live_executions)
    r.add_get("/api/live/executions/{id}", console.live_execution)
    return app


def mount(parent: web.Application, config: ConsoleConfig) -> web.Application:
    """Serve the console at ``/console/`` of ``parent`` (``/console`` redirects there); returns the sub-app."""
    app = create_app(config)

    async def redirect(request: web.Request) -> web.StreamResponse:
        raise web.HTTPFound(CONSOLE_PREFIX + "/" + (f"?{request.query_string}" if request.query_string else ""))

    # Before the parent's own routes could claim "/console" (the gateway's "/{stage}" would).
    parent.router.add_get(CONSOLE_PREFIX, redirect)
    parent.add_subapp(CONSOLE_PREFIX + "/", app)
    return app


def env_token() -> str | None:
    """The console token from ``$STREAMER_CONSOLE_TOKEN`` (empty means none)."""
    return os.environ.get(TOKEN_ENV) or None


@contextlib.asynccontextmanager
async def serve(config: ConsoleConfig, host: str, port: int) -> AsyncIterator[str]:
    """Serve the console alone on ``host:port`` (``/`` redirects to ``/console/``); yields its URL."""
    root = web.Application()

    async def home(request: web.Request) -> web.StreamResponse:
        raise web.HTTPFound(CONSOLE_PREFIX + "/")

    root.router.add_get("/", home)
    mount(root, config)
    runner = web.AppRunner(root, handle_signals=False, access_log=None, shutdown_timeout=2.0)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    bound = int(runner.addresses[0][1]) if runner.addresses else port
    shown = f"[{host}]" if ":" in host else host
    try:
        yield f"http://{shown}:{bound}{CONSOLE_PREFIX}/"
    finally:
        await runner.cleanup()
