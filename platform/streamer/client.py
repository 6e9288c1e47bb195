"""A small asyncio client for wire protocol v1 (used by ``streamer submit``, the demo and the tests).

:class:`StreamerClient` offers the ``streamer.v1`` subprotocol with the token as ``bearer.<jwt>``, orders and
de-duplicates a request's events by ``seq``, and never hangs on a lost event or a dropped connection:
:meth:`StreamerClient.events` asks the server to ``resume`` after its last seq whenever nothing arrives for
``resume_after`` seconds (a gap in the seqs, or a lost last event, which no later event would reveal), and
reconnects with exponential backoff and jitter when the connection drops, then resumes from its last seq
(the server stores every event, so nothing is lost; duplicates are dropped by seq).
:func:`submit_and_watch` is the whole round trip (connect, submit, every event through the terminal one) as
one plain call.

Errors: an error frame answering a call raises :class:`StreamerClientError` (a
:class:`~streamer.errors.StreamerError`); a refused or failed connection raises what ``websockets`` raises
(``OSError`` when nothing listens, ``websockets.exceptions.InvalidStatus`` for a refused handshake); no
terminal event within the timeout raises ``TimeoutError``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
from collections.abc import AsyncIterator, Callable
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.typing import Subprotocol

from streamer.errors import StreamerError
from streamer.limits import SUBPROTOCOL
from streamer.protocol import TERMINAL_EVENT_TYPES

__all__ = ["StreamerClient", "StreamerClientError", "submit_and_watch"]


class StreamerClientError(StreamerError):
    """The server answered with an error frame not tied to a request (``frame``; its ``code``)."""

    def __init__(self, frame: dict[str, Any]) -> None:
        super().__init__(f"{frame.get('code')}: {frame.get('message')}")
        self.frame = frame
        self.code: str = frame.get("code", "")


#: What :meth:`StreamerClient.events` finds in a request's queue when the connection dropped.
_CLOSED: dict[str, Any] = {"type": "_closed"}
#: Resumes that must leave a gap before a terminal event unfilled before :meth:`StreamerClient.events` skips it
#: (one answered by an error frame must not make it skip an event that is stored).
_GAP_RESUMES = 2


class StreamerClient:
    def __init__(
        self,
        ws: ClientConnection,
        *,
        reopen: Callable[[], Any] | None = None,
        max_reconnects: int = 8,
        backoff: float = 0.2,
        max_backoff: float = 5.0,
    ) -> None:
        self.ws = ws
        self._reopen = reopen
        self.max_reconnects = max_reconnects
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.reconnects = 0  # how many times this client reconnected (tests and diagnostics)
        self.resumes = 0  # how many resumes events() asked for
        self.gaps_skipped = 0  # how many never-filled gaps before a terminal event events() skipped
        self._closing = False
        self._replies: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._events: dict[str, asyncio.Queue[dict[str, Any]]] = {}
        self._reader = asyncio.create_task(self._read(ws))

    @classmethod
    async def connect(cls, url: str, token: str, *, via: str = "header", **kwargs: Any) -> StreamerClient:
        """Connect; ``events()`` reconnects the same way (``max_reconnects``/``backoff`` go to the client)."""
        opts = {k: kwargs.pop(k) for k in ("max_reconnects", "backoff", "max_backoff") if k in kwargs}

        async def open_() -> ClientConnection:
            if via == "header":
                subprotocols = [Subprotocol(SUBPROTOCOL), Subprotocol(f"bearer.{token}")]
                return await connect(url, subprotocols=subprotocols, **kwargs)
            sep = "&" if "?" in url else "?"
            return await connect(f"{url}{sep}token={token}", **kwargs)

        return cls(await open_(), reopen=open_, **opts)

    async def _read(self, ws: ClientConnection) -> None:
        try:
            async for raw in ws:
                try:
                    frame = json.loads(raw)
                except ValueError:
                    continue  # not ours to understand (e.g. a gateway's plain-text notice)
                if not isinstance(frame, dict):
                    continue
                rid = frame.get("request_id")
                if rid is not None and "seq" in frame:
                    self._queue(rid).put_nowait(frame)
                else:
                    self._replies.put_nowait(frame)
        except Exception:  # noqa: S110 - connection closed; events() reconnects, reply() sees "closed"
            pass
        finally:
            self._replies.put_nowait({"type": "closed"})
            for q in self._events.values():
                q.put_nowait(_CLOSED)

    async def reconnect(self) -> None:
        """Open a new connection (exponential backoff with full jitter), or raise the last error."""
        if self._reopen is None:
            raise ConnectionError("this client cannot reconnect (it was not made by StreamerClient.connect)")
        error: BaseException | None = None
        for attempt in range(self.max_reconnects):
            await asyncio.sleep(random.uniform(0, min(self.max_backoff, self.backoff * 2**attempt)))
            try:
                ws = await self._reopen()
            except Exception as exc:  # refused, not listening, handshake failed: try again
                error = exc
                continue
            self.ws = ws
            self.reconnects += 1
            self._reader = asyncio.create_task(self._read(ws))
            return
        raise ConnectionError(f"could not reconnect after {self.max_reconnects} attempts: {error}") from error

    def _queue(self, request_id: str) -> asyncio.Queue[dict[str, Any]]:
        return self._events.setdefault(request_id, asyncio.Queue())

    async def send(self, message: dict[str, Any]) -> None:
        await self.ws.send(json.dumps(message))

    async def reply(self, timeout: float = 30) -> dict[str, Any]:
        """The next frame not tied to a request's event stream (ack, pong, status, error …)."""
        return await asyncio.wait_for(self._replies.get(), timeout)

    async def call(self, message: dict[str, Any], timeout: float = 30) -> dict[str, Any]:
        await self.send(message)
        frame = await self.reply(timeout)
        if frame.get("type") == "error":
            raise StreamerClientError(frame)
        return frame

    async def submit(self, workflow: str, payload: dict[str, Any], request_id: str | None = None) -> str:
        msg: dict[str, Any] = {"action": "submit", "workflow": workflow, "payload": payload}
        if request_id:
            msg["request_id"] = request_id
        ack = await self.call(msg)
        return str(ack["request_id"])

    async def events(
        self, request_id: str, *, after_seq: int = 0, timeout: float = 120, resume_after: float = 5.0
    ) -> AsyncIterator[dict[str, Any]]:
        """The request's events in seq order, without duplicates, through the terminal one.

        Nothing for ``resume_after`` seconds → ``resume`` from the last seq seen; the connection dropped →
        reconnect (backoff) and resume. A gap that two resumes did not fill while the terminal event waits
        behind it is skipped (``gaps_skipped``): the terminal event is stored, so a seq still missing before it
        is one whose writer died between its seq claim and its put (docs/reliability.md) and will never come.
        ``TimeoutError`` when the terminal event is not seen within ``timeout``; ``ConnectionError`` when
        reconnecting failed ``max_reconnects`` times.
        """
        q = self._queue(request_id)
        last = after_seq
        pending: dict[int, dict[str, Any]] = {}
        resumes_behind_gap = 0  # resumes asked while the terminal event waited behind a gap
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            left = deadline - loop.time()
            if left <= 0:
                raise TimeoutError(f"no terminal event for {request_id} within {timeout}s")
            try:
                frame = await asyncio.wait_for(q.get(), min(left, resume_after))
            except TimeoutError:
                if loop.time() >= deadline:
                    raise
                if self._reader.done() and not self._closing:  # dropped before this wait began
                    await self.reconnect()
                behind_gap = any(f["type"] in TERMINAL_EVENT_TYPES for f in pending.values())
                resumes_behind_gap = resumes_behind_gap + 1 if behind_gap else 0
                if resumes_behind_gap <= _GAP_RESUMES:
                    await self._resume_from(request_id, last)  # a gap, or a lost last event
                    continue
                self.gaps_skipped += 1
                last = min(pending) - 1  # the resumes did not fill it: it never will
            else:
                if frame is _CLOSED:
                    if self._closing:
                        raise ConnectionError("the client was closed")
                    await self.reconnect()
                    await self._resume_from(request_id, last)
                    continue
                seq = int(frame["seq"])
                if seq <= last:
                    continue
                pending[seq] = frame
            while last + 1 in pending:
                last += 1
                ev = pending.pop(last)
                yield ev
                if ev["type"] in TERMINAL_EVENT_TYPES:
                    return

    async def resume(self, request_id: str, after_seq: int) -> None:
        await self.send({"action": "resume", "request_id": request_id, "after_seq": after_seq})

    async def _resume_from(self, request_id: str, after_seq: int) -> None:
        self.resumes += 1
        # A send failing means the connection just dropped: the next wait sees it and reconnects.
        with contextlib.suppress(Exception):
            await self.resume(request_id, after_seq)

    async def close(self) -> None:
        self._closing = True
        await self.ws.close()
        self._reader.cancel()

    async def __aenter__(self) -> StreamerClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


async def submit_and_watch(
    url: str,
    token: str,
    workflow: str,
    payload: dict[str, Any],
    *,
    request_id: str | None = None,
    timeout: float = 300,
    on_accepted: Callable[[str], None] | None = None,
    on_event: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Connect to ``url`` with ``token``, submit one request, and return its terminal event.

    ``on_accepted(request_id)`` is called once the server acknowledged the request; ``on_event(event)`` for
    each of its events in ``seq`` order, the terminal one (``result`` or ``error``) included. Raises
    :class:`StreamerClientError` when the submit is refused (``UNKNOWN_WORKFLOW``, ``VALIDATION_ERROR`` …),
    ``TimeoutError`` when no terminal event arrives within ``timeout`` seconds, and the connection errors
    listed in the module's docstring.
    """
    client = await StreamerClient.connect(url, token)
    async with client:
        rid = await client.submit(workflow, payload, request_id)
        if on_accepted is not None:
            on_accepted(rid)
        final: dict[str, Any] = {}
        async for event in client.events(rid, timeout=timeout):
            if on_event is not None:
                on_event(event)
            final = event
        return final
