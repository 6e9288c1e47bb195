"""Redaction of JWT-looking strings in text and log records — what every handler's log filter uses.

Kept apart from :mod:`streamer.auth` so that a handler that never verifies a token does not import PyJWT and
``cryptography`` at cold start (issue 11: ~30 ms of every handler's init; ``docs/performance.md``). No
dependency beyond the standard library; :mod:`streamer.auth` re-exports these names.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from typing import Any

__all__ = ["REDACTED", "RedactTokensFilter", "redact_tokens"]

# A JOSE header is a JSON object, so its base64url form starts with "ey" ('{"' or '{ ') or "ew" ('{\n').
# Matches JWS (three segments, possibly an empty signature as with alg "none") and JWE (five segments).
_JWT_RE = re.compile(r"e[yw][A-Za-z0-9_-]{8,}(?:\.[A-Za-z0-9_-]*){2,4}")
REDACTED = "[REDACTED]"
_MAX_REDACT_DEPTH = 6


def redact_tokens(text: str) -> str:
    """Replace anything that looks like a JWT in ``text`` with ``[REDACTED]``."""
    return _JWT_RE.sub(REDACTED, text)


def _redact_value(value: Any, depth: int = 0) -> Any:
    if isinstance(value, str):
        return redact_tokens(value)
    if depth >= _MAX_REDACT_DEPTH or value is None or isinstance(value, int | float | bool):
        return value
    if isinstance(value, Mapping):
        return {_redact_value(k, depth + 1): _redact_value(v, depth + 1) for k, v in value.items()}
    if isinstance(value, list):
        return [_redact_value(item, depth + 1) for item in value]
    if isinstance(value, tuple):
        return tuple(_redact_value(item, depth + 1) for item in value)
    if isinstance(value, set | frozenset):
        return {_redact_value(item, depth + 1) for item in value}
    if isinstance(value, bytes | bytearray):
        text = bytes(value).decode("utf-8", "replace")
        return redact_tokens(text) if _JWT_RE.search(text) else value
    try:
        text = str(value)
    except Exception:
        return value
    return redact_tokens(text) if _JWT_RE.search(text) else value


class RedactTokensFilter(logging.Filter):
    """Replace JWT-looking strings in log records (message, args, extras, exception text) with ``[REDACTED]``.

    Install it on handlers (``handler.addFilter(RedactTokensFilter())``) so records propagated from every
    logger pass through it; a filter on a logger only sees records logged on that very logger.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if record.args:
            try:
                record.msg = redact_tokens(record.getMessage())
                record.args = None
            except Exception:  # a broken format string: redact the parts instead
                record.msg = _redact_value(record.msg)
                record.args = _redact_value(record.args)
        else:
            record.msg = _redact_value(record.msg)

        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact_tokens(record.exc_text)
        if record.stack_info:
            record.stack_info = redact_tokens(record.stack_info)

        for name, value in list(vars(record).items()):
            if name in _RECORD_ATTRIBUTES:  # handled above, or where the code is (never a token)
                continue
            if isinstance(value, str | Mapping | list | tuple):
                setattr(record, name, _redact_value(value))
        return True


#: What every LogRecord has (its message, where and when it was logged): the rest of a record's attributes are
#: the caller's ``extra`` values, which can carry anything and are redacted. Skipping these ~20 names per
#: record keeps the filter off the hot path's profile (a local ping logs one line).
_RECORD_ATTRIBUTES = frozenset(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName"}
