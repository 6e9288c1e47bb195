"""Group commit: concurrent callers' writes to one table, sent together as ``BatchWriteItem`` calls.

Each caller of :meth:`GroupCommit.write` waits until its own item is written (or raises what the write
raised: its own copy, chained to it), as with ``PutItem``/``DeleteItem``; while one batch is on its way, the
writes that arrive queue up and go in the next one. No thread of its own: the first caller to find no batch
on its way sends one, and hands over to the oldest queued caller when it is done. A batch holds at most 25
items (https://docs.aws.amazon.com/amazondynamodb/latest/APIReference/API_BatchWriteItem.html) and never two
for the same key (DynamoDB refuses that request; a later write of a key goes in the next batch, so one
key's writes land in their order). Unprocessed items (throttling) are sent again with a growing pause,
:attr:`GroupCommit.ATTEMPTS` times at most; then their callers get :class:`UnprocessedWriteError`.

A batch write has no condition expression: use it only where the items' conditions hold by construction
(``streamer.admission``).
"""

from __future__ import annotations

import copy
import threading
import time
from collections import deque
from collections.abc import Callable, Hashable
from typing import TYPE_CHECKING, Any

from streamer.errors import StoreError

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

__all__ = ["GroupCommit", "UnprocessedWriteError"]

#: BatchWriteItem's limit on items per call.
BATCH_MAX = 25


class UnprocessedWriteError(StoreError):
    """DynamoDB left the item unprocessed through every attempt (throttling)."""


def _own_copy(error: BaseException) -> BaseException:
    """The error of a batch, for one of its callers: each caller raises its own copy (same type, arguments and
    attributes — botocore's errors copy with their response), chained to the error itself. A raise extends the
    raised object's traceback in place, so one object raised in several threads at once would carry frames of
    all of them. An error that cannot be copied is raised as it is."""
    try:
        return copy.copy(error)
    except Exception:
        return error


class _Pending:
    __slots__ = ("done", "error", "key", "lead", "request")

    def __init__(self, request: dict[str, Any], key: Hashable) -> None:
        self.request = request
        self.key = key
        self.done = threading.Event()
        self.lead = False
        self.error: BaseException | None = None


class GroupCommit:
    """Batched writes to ``table`` through ``client()`` (the DynamoDB client, created lazily); thread-safe.
    ``write`` takes a ``BatchWriteItem`` write request
    (``{"PutRequest": {"Item": ...}}`` or ``{"DeleteRequest": {"Key": ...}}``) and the item's key."""

    ATTEMPTS = 8
    FIRST_PAUSE = 0.01

    def __init__(
        self, table: str, client: Callable[[], DynamoDBClient], *, sleep: Callable[[float], None] = time.sleep
    ) -> None:
        self.table = table
        self._client = client
        self._sleep = sleep
        self._lock = threading.Lock()
        self._queue: deque[_Pending] = deque()
        self._busy = False
        #: Batches sent and items written (tests, diagnostics).
        self.batches = 0
        self.items = 0

    def put(self, item: dict[str, Any], key: Hashable) -> None:
        self.write({"PutRequest": {"Item": item}}, key)

    def delete(self, key_attrs: dict[str, Any], key: Hashable) -> None:
        self.write({"DeleteRequest": {"Key": key_attrs}}, key)

    def write(self, request: dict[str, Any], key: Hashable) -> None:
        mine = _Pending(request, key)
        with self._lock:
            self._queue.append(mine)
            lead = not self._busy
            self._busy = True
        if not lead:
            mine.done.wait()
            if not mine.lead:
                self._result(mine)
                return
        self._lead(mine)
        self._result(mine)

    @staticmethod
    def _result(pending: _Pending) -> None:
        error = pending.error
        if error is not None:
            own = _own_copy(error)
            if own is error:
                raise error
            raise own from error

    def _lead(self, mine: _Pending) -> None:
        """Send one batch (``mine`` is the queue's oldest, so it is in it), then hand over or stand down."""
        with self._lock:
            batch: list[_Pending] = []
            keys: set[Hashable] = set()
            kept: deque[_Pending] = deque()
            while self._queue and len(batch) < BATCH_MAX:
                p = self._queue.popleft()
                if p.key in keys:
                    kept.append(p)
                else:
                    keys.add(p.key)
                    batch.append(p)
            kept.extend(self._queue)
            self._queue = kept
        try:
            self._send(batch)
        except BaseException as exc:  # every caller of the batch gets the write's error
            for p in batch:
                if p.error is None:
                    p.error = exc
        with self._lock:
            self.batches += 1
            self.items += sum(p.error is None for p in batch)
            if self._queue:
                nxt = self._queue[0]
                nxt.lead = True
                nxt.done.set()
            else:
                self._busy = False
        for p in batch:
            if p is not mine:
                p.done.set()

    def _send(self, batch: list[_Pending]) -> None:
        todo = [p.request for p in batch]
        pause = self.FIRST_PAUSE
        for attempt in range(self.ATTEMPTS):
            resp = self._client().batch_write_item(RequestItems={self.table: todo})  # type: ignore[dict-item]
            todo = list((resp.get("UnprocessedItems") or {}).get(self.table, []))  # type: ignore[arg-type]
            if not todo:
                return
            if attempt + 1 < self.ATTEMPTS:
                self._sleep(pause)
                pause *= 2
        # DynamoDB returns the unprocessed write requests themselves: matched by value.
        for p in batch:
            if p.request in todo:
                p.error = UnprocessedWriteError(f"{self.table}: item left unprocessed after {self.ATTEMPTS} attempts")
