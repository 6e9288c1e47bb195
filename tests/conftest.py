"""Fixtures shared by the test tiers: fake AWS credentials, moto, tables from the template, and a
Management API endpoint that records what the ConnectionManager posts."""

from __future__ import annotations

import json
import os
import threading
from collections import defaultdict
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

# PyJWT with `cryptography`, before a test imports the $connect handler, which imports PyJWT without it for an
# HMAC-only allow-list (streamer.handlers._pyjwt): tests sign RS256/ES256 tokens in this process.
import jwt  # noqa: F401
import pytest

os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
os.environ.pop("AWS_PROFILE", None)


class ManagementApi:
    """A real HTTP server speaking the API Gateway Management API's ``@connections`` contract.

    Connections must be ``open()``-ed; posting to any other id answers 410 GoneException as AWS does.
    ``throttle(cid, n)`` makes the next n posts to cid answer 429 LimitExceededException.
    """

    def __init__(self) -> None:
        self.messages: dict[str, list[dict[str, Any]]] = defaultdict(list)
        self.live: set[str] = set()
        self.throttled: dict[str, int] = defaultdict(int)
        self.attempts: dict[str, int] = defaultdict(int)
        self.deleted: list[str] = []  # connections closed through DELETE @connections/{id}
        self.lock = threading.Lock()
        api = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                cid = self.path.rsplit("/@connections/", 1)[-1]
                from urllib.parse import unquote

                cid = unquote(cid)
                length = int(self.headers.get("Content-Length", "0"))
                data = self.rfile.read(length)
                with api.lock:
                    api.attempts[cid] += 1
                    if api.throttled[cid] > 0:
                        api.throttled[cid] -= 1
                        return self._err(429, "LimitExceededException")
                    if cid not in api.live:
                        return self._err(410, "GoneException")
                    if len(data) > 128 * 1024:
                        return self._err(413, "PayloadTooLargeException")
                    api.messages[cid].append(json.loads(data))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def do_DELETE(self) -> None:  # DeleteConnection: 204, or 410 when the connection is gone
                from urllib.parse import unquote

                cid = unquote(self.path.rsplit("/@connections/", 1)[-1])
                with api.lock:
                    if cid not in api.live:
                        return self._err(410, "GoneException")
                    api.live.discard(cid)
                    api.deleted.append(cid)
                self.send_response(204)
                self.end_headers()

            def _err(self, status: int, code: str) -> None:
                body = json.dumps({"message": code}).encode()
                self.send_response(status)
                self.send_header("x-amzn-ErrorType", code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def open(self, cid: str) -> None:
        with self.lock:
            self.live.add(cid)

    def close(self, cid: str) -> None:
        with self.lock:
            self.live.discard(cid)

    def throttle(self, cid: str, n: int) -> None:
        with self.lock:
            self.throttled[cid] = n

    def received(self, cid: str) -> list[dict[str, Any]]:
        with self.lock:
            return list(self.messages[cid])

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def mgmt_api() -> Iterator[ManagementApi]:
    api = ManagementApi()
    yield api
    api.stop()
