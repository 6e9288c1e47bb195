"""One log format for the supervisor and its children: text, or JSON lines (``--log-format json``)."""

from __future__ import annotations

import json
import logging
import sys
import time

__all__ = ["configure_logging"]


class _TextFormatter(logging.Formatter):
    def __init__(self, component: str) -> None:
        super().__init__()
        self.component = component

    def format(self, record: logging.LogRecord) -> str:
        ts = time.strftime("%H:%M:%S", time.localtime(record.created)) + f".{int(record.msecs):03d}"
        line = f"{ts} {record.levelname:<7} {self.component:<7} {record.name}: {record.getMessage()}"
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


class _JsonFormatter(logging.Formatter):
    def __init__(self, component: str) -> None:
        super().__init__()
        self.component = component

    def format(self, record: logging.LogRecord) -> str:
        body = {
            "timestamp": round(record.created, 3),
            "level": record.levelname,
            "component": self.component,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            body["exception"] = self.formatException(record.exc_info)
        return json.dumps(body)


def configure_logging(component: str, level: str = "INFO", fmt: str = "text") -> None:
    """Log to stderr as ``component`` (``local``, ``lambda``, ``moto``) in the chosen format."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_JsonFormatter(component) if fmt == "json" else _TextFormatter(component))
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
    root.addHandler(handler)
    root.setLevel(level.upper())
    # Per-request chatter of libraries stays out unless asked for.
    for noisy in ("werkzeug", "aiohttp.access", "botocore", "urllib3"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
    # moto's ASL interpreter logs every failed execution at ERROR with the whole state tree; a failed
    # execution is an expected outcome here (the client gets a typed terminal event), so keep it for DEBUG.
    if root.level > logging.DEBUG:
        logging.getLogger("moto.stepfunctions.parser").setLevel(logging.CRITICAL)
