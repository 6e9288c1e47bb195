"""Read a ``streamer local`` metrics file (EMF JSON lines) incrementally, for an overview refreshed every few seconds.

``streamer.metrics.read_local`` parses the whole file (and its rotated ``.1``, up to 16 MiB together) on every
call: over a busy stack's file that is seconds of CPU per refresh of the console's overview. A
:class:`MetricsTail` keeps what it parsed and, on the next :meth:`~MetricsTail.read`, parses only the lines
appended since (complete lines: a line being written is read next time). When the file was rotated
(``streamer.metrics.JsonLinesFile`` renames it to ``<file>.1`` and starts a new one: another inode) or
truncated, it reads both files again. Series older than :data:`KEEP_SECONDS` (the console's longest window)
are dropped, so memory stays bounded by what the window can show.

:func:`read` uses one shared tail per path (thread-safe: the console reads from worker threads).
"""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path

from streamer.metrics import Series, parse_emf

__all__ = ["KEEP_SECONDS", "MetricsTail", "read"]

#: The console's longest overview window (7 days): older series are never shown.
KEEP_SECONDS = 7 * 86400


def _parse(data: bytes) -> list[Series]:
    out: list[Series] = []
    for line in data.splitlines():
        try:
            out.extend(parse_emf(json.loads(line)))
        except (ValueError, TypeError, KeyError):  # not EMF, or not JSON: skipped, as read_local does
            continue
    return out


class MetricsTail:
    """The series of one metrics file, parsed once and then followed as it grows."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._inode: int | None = None
        self._offset = 0
        self._series: list[Series] = []
        self._lock = threading.Lock()

    def read(self, *, since: float | None = None, until: float | None = None) -> list[Series]:
        """The series with ``since <= timestamp < until`` (epoch seconds), oldest first as written."""
        with self._lock:
            self._follow()
            return [
                s
                for s in self._series
                if (since is None or s.timestamp >= since) and (until is None or s.timestamp < until)
            ]

    def _follow(self) -> None:
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            st = None
        if st is None or st.st_ino != self._inode or st.st_size < self._offset:
            # First read, rotated (a new inode) or truncated: the rotated file and the new one, from the start.
            rotated = self.path.with_name(self.path.name + ".1")
            self._series = _parse(rotated.read_bytes()) if rotated.exists() else []
            self._inode, self._offset = (st.st_ino if st is not None else None), 0
        if st is not None and st.st_size > self._offset:
            with self.path.open("rb") as f:
                f.seek(self._offset)
                data = f.read()
            complete = data[: data.rfind(b"\n") + 1]  # a line still being written waits for the next read
            self._series.extend(_parse(complete))
            self._offset += len(complete)
        horizon = time.time() - KEEP_SECONDS
        if self._series and self._series[0].timestamp < horizon:
            self._series = [s for s in self._series if s.timestamp >= horizon]


_tails: dict[Path, MetricsTail] = {}
_tails_lock = threading.Lock()


def read(path: Path, *, since: float | None = None, until: float | None = None) -> list[Series]:
    """:meth:`MetricsTail.read` of the shared tail of ``path``."""
    with _tails_lock:
        tail = _tails.get(path)
        if tail is None:
            tail = _tails[path] = MetricsTail(path)
    return tail.read(since=since, until=until)
