"""Bounded HTTP serving for ``streamer local``'s children (the Lambda endpoint, moto).

Python's ``ThreadingMixIn`` starts one thread per connection, without limit: a 2,000-message burst once made
514 threads in the Lambda endpoint and 255 in moto (docs/performance.md, "local stack"). :class:`PooledMixIn`
hands each accepted connection to a fixed pool of ``pool_size`` threads instead; connections beyond it wait
in the pool's queue (and, before ``accept``, in the listen backlog), the way a Lambda function at its
concurrency limit makes callers wait rather than growing without bound.

A kept-alive (HTTP/1.1) connection holds its thread between requests. So that kept-alive connections can
never starve the ones waiting for a thread, request handlers with :class:`YieldingHandlerMixIn` close their
connection after a request whenever another connection is waiting, and after :data:`IDLE_SECONDS` without a
request (``StreamRequestHandler.timeout``); our own clients stop reusing a connection before that
(:data:`CLIENT_IDLE_SECONDS`), so they never send on a connection the server is about to close for idling.
A closed kept-alive connection costs the client a new TCP connection on loopback, nothing more.

:class:`DaemonPool` is the bounded executor behind both: like ``ThreadPoolExecutor`` (threads started on
demand up to ``size``, then work queues), but its threads are daemons, so a handler stuck past its timeout
never keeps the process from exiting (``ThreadPoolExecutor`` joins its threads at exit). Work submitted with a
key (:meth:`DaemonPool.submit_keyed`; the gateway's route functions use the WebSocket connection id) waits in
a queue per key, and a free thread takes the next call from the keys in turn: a client that floods the local
stack queues behind itself, not in front of everybody else (on AWS each message is its own Lambda invocation;
one process with a few threads can only share them fairly).
"""

from __future__ import annotations

import queue
import random
import threading
import uuid
from collections import deque
from collections.abc import Callable, Hashable
from concurrent.futures import Executor, Future
from typing import Any, Generic, ParamSpec, TypeVar

__all__ = [
    "CLIENT_IDLE_SECONDS",
    "IDLE_SECONDS",
    "DaemonPool",
    "FairQueue",
    "PooledMixIn",
    "YieldingHandlerMixIn",
    "unique_bytes",
    "unique_uuid",
]

_P = ParamSpec("_P")
_T = TypeVar("_T")

#: Per-message and per-invocation ids (API Gateway's ``requestId``, a Lambda ``aws_request_id``) must be unique,
#: not secret: drawn from one generator seeded from ``os.urandom`` instead of a system call each (three per local
#: ping were 6 % of the gateway's CPU). Connection ids, which name a socket, stay ``secrets``'.
_IDS = random.Random()


def unique_uuid() -> str:
    """A random (version 4) UUID, as a string."""
    return str(uuid.UUID(int=_IDS.getrandbits(128), version=4))


def unique_bytes(n: int) -> bytes:
    return _IDS.getrandbits(8 * n).to_bytes(n, "big")


#: A server closes a kept-alive connection idle this long (the handler's socket timeout).
IDLE_SECONDS = 5.0
#: Our clients open a new connection rather than reuse one idle this long (well under IDLE_SECONDS).
CLIENT_IDLE_SECONDS = 2.0


class FairQueue(Generic[_T]):
    """A blocking queue with one FIFO per key; :meth:`get` serves the keys round-robin (thread-safe).

    The round is a ``queue.SimpleQueue`` of keys, one entry per key with items waiting: a getter blocks in C
    on it (a ``threading.Condition`` wakes its waiter from Python, under the lock every putter also takes:
    8 % of the local gateway's CPU per ping), takes the key's oldest item and, if the key has more, puts the
    key back at the end of the round."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._queues: dict[Hashable, deque[_T]] = {}
        self._round: queue.SimpleQueue[Hashable] = queue.SimpleQueue()
        self._size = 0

    def put(self, item: _T, key: Hashable = None) -> None:
        with self._lock:
            self._size += 1
            items = self._queues.get(key)
            if items is not None:  # the key is in the round already
                items.append(item)
                return
            self._queues[key] = deque((item,))
        self._round.put(key)

    def get(self) -> _T:
        return self._take(self._round.get())

    def get_nowait(self) -> _T:
        return self._take(self._round.get_nowait())  # queue.Empty when no key waits

    def _take(self, key: Hashable) -> _T:
        with self._lock:
            items = self._queues[key]
            item = items.popleft()
            self._size -= 1
            if not items:
                del self._queues[key]
                return item
        self._round.put(key)  # the key goes to the back of the round
        return item

    def qsize(self) -> int:
        return self._size


_Work = tuple[Future[Any], Callable[..., Any], tuple[Any, ...], dict[str, Any]]


class DaemonPool(Executor):
    """At most ``size`` daemon threads run the submitted calls; the rest wait in order (see the module)."""

    def __init__(self, size: int, name: str = "pool") -> None:
        if size < 1:
            raise ValueError("a pool needs at least one thread")
        self.size = size
        self.name = name
        self._queue: FairQueue[_Work | None] = FairQueue()
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._idle = 0
        self._shutdown = False

    def waiting(self) -> int:
        """Calls submitted and not started yet (approximately: other threads may be taking them)."""
        return self._queue.qsize()

    @property
    def threads(self) -> int:
        """Threads started so far (never more than ``size``)."""
        return len(self._threads)

    def submit(self, fn: Callable[_P, _T], /, *args: _P.args, **kwargs: _P.kwargs) -> Future[_T]:
        return self.submit_keyed(None, fn, *args, **kwargs)

    def submit_keyed(self, key: Hashable, fn: Callable[_P, _T], /, *args: _P.args, **kwargs: _P.kwargs) -> Future[_T]:
        """:meth:`submit`, queued behind the earlier calls of the same ``key`` only (keys take turns)."""
        future: Future[_T] = Future()
        with self._lock:
            if self._shutdown:
                raise RuntimeError("cannot schedule new calls after shutdown")
            self._queue.put((future, fn, args, kwargs), key)
            if self._idle == 0 and len(self._threads) < self.size:
                t = threading.Thread(target=self._work, name=f"{self.name}-{len(self._threads)}", daemon=True)
                self._threads.append(t)
                t.start()
            else:
                self._idle = max(0, self._idle - 1)
        return future

    def _work(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            future, fn, args, kwargs = item
            if future.set_running_or_notify_cancel():
                try:
                    future.set_result(fn(*args, **kwargs))
                except BaseException as exc:
                    future.set_exception(exc)
            del item, future, fn, args, kwargs  # drop references before waiting
            with self._lock:
                self._idle += 1

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        with self._lock:
            self._shutdown = True
            threads = list(self._threads)
        if cancel_futures:
            while True:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is not None:
                    item[0].cancel()
        for _ in threads:
            self._queue.put(None)
        if wait:
            for t in threads:
                t.join()


class PooledMixIn:
    """``socketserver`` mix-in (before the server class): connections served by a pool of threads."""

    pool_size = 64
    _pool: DaemonPool | None = None
    _pool_lock = threading.Lock()

    def _executor(self) -> DaemonPool:
        with self._pool_lock:
            if self._pool is None:
                self._pool = DaemonPool(self.pool_size, name=f"{type(self).__name__}-conn")
            return self._pool

    def process_request(self, request: Any, client_address: Any) -> None:
        self._executor().submit(self._serve_connection, request, client_address)

    def _serve_connection(self, request: Any, client_address: Any) -> None:
        server: Any = self  # finish_request & co. are the socketserver class's this is mixed into
        try:
            server.finish_request(request, client_address)
        except Exception:
            server.handle_error(request, client_address)
        finally:
            server.shutdown_request(request)

    def server_close(self) -> None:
        super().server_close()  # type: ignore[misc]
        if self._pool is not None:
            # Connections still queued are dropped; those being served finish on their own (daemon-like).
            self._pool.shutdown(wait=False, cancel_futures=True)


class YieldingHandlerMixIn:
    """``BaseHTTPRequestHandler`` mix-in (before the handler class) for a :class:`PooledMixIn` server: a
    kept-alive connection is closed after a request when another connection waits for a thread, and when
    idle for :data:`IDLE_SECONDS`."""

    timeout: float | None = IDLE_SECONDS

    def handle_one_request(self) -> None:
        handler: Any = self
        super().handle_one_request()  # type: ignore[misc]
        pool = getattr(handler.server, "_pool", None)
        if isinstance(pool, DaemonPool) and pool.waiting():
            handler.close_connection = True
