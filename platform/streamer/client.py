"""A small asyncio client for wire protocol v1 (used by ``streamer submit``, the demo and the tests).

:class:`StreamerClient` offers the ``streamer.v1`` subprotocol with the token as ``bearer.<jwt>``, orders and
de-duplicates a request's events by ``seq``, and can resume after a reconnect. :func:`submit_and_watch` is
the whole round trip (connect, submit, every event through the terminal one) as one plain call.

Errors: an error frame answering a call raises :class:`StreamerClientError` (a
:class:`~streamer.errors.StreamerError`); a refused or failed connection raises what ``websockets`` raises
(``OSError`` when nothing listens, ``websockets.exceptions.InvalidStatus`` for a refused handshake); no
terminal event within the timeout raises ``TimeoutError``.
"""

from __future__ import annotations

import asyncio
import json
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


class StreamerClient:
    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self._replies: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._events: dict[str, asyncio.Queue[dict[str, Any]]] = {}
        self._reader = asyncio.create_task(self._read())

    @classmethod
    async def connect(cls, url: str, token: str, *, via: str = "header", **kwargs: Any) -> StreamerClient:
        if via == "header":
            ws = await connect(url, subprotocols=[Subprotocol(SUBPROTOCOL), Subprotocol(f"bearer.{token}")], **kwargs)
        else:
            sep = "&" if "?" in url else "?"
            ws = await connect(f"{url}{sep}token={token}", **kwargs)
        return cls(ws)

    async def _read(self) -> None:
        try:
            async for raw in self.ws:
                frame = json.loads(raw)
                rid = frame.get("request_id")
                if rid is not None and "seq" in frame:
                    self._queue(rid).put_nowait(frame)
                else:
                    self._replies.put_nowait(frame)
        except Exception:  # noqa: S110 - connection closed; waiters see it through ws state
            pass
        finally:
            self._replies.put_nowait({"type": "closed"})

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
        self, request_id: str, *, after_seq: int = 0, timeout: float = 120
    ) -> AsyncIterator[dict[str, Any]]:
        """The request's events in seq order, without duplicates, through the terminal one."""
        q = self._queue(request_id)
        last = after_seq
        pending: dict[int, dict[str, Any]] = {}
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            frame = await asyncio.wait_for(q.get(), max(0.01, deadline - loop.time()))
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

    async def close(self) -> None:
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
