"""ConnectionManager: push messages to WebSocket clients through the API Gateway Management API.

Shape borrowed from chalice's ``WebsocketAPI``: the ``apigatewaymanagementapi`` client is created lazily
with an ``endpoint_url`` (``https://{api-id}.execute-api.{region}.amazonaws.com/{stage}`` on AWS, the
local gateway's URL locally), and AWS errors are translated at this edge:
``GoneException`` (410) → :class:`~streamer.errors.WebSocketDisconnectedError`.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from streamer.errors import ProtocolError, SendError, WebSocketDisconnectedError
from streamer.protocol import MAX_MESSAGE_BYTES, ErrorCode

if TYPE_CHECKING:
    from mypy_boto3_apigatewaymanagementapi import ApiGatewayManagementApiClient

__all__ = ["ConnectionManager", "SendReport", "encode_message"]

logger = logging.getLogger(__name__)


def encode_message(message: Mapping[str, Any]) -> bytes:
    """Serialize a server frame; refuse it with PAYLOAD_TOO_LARGE over the 128 KiB frame limit."""
    data = json.dumps(message, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    if len(data) > MAX_MESSAGE_BYTES:
        raise ProtocolError(
            ErrorCode.PAYLOAD_TOO_LARGE,
            f"message is {len(data)} bytes; the limit is {MAX_MESSAGE_BYTES}",
            {"limit": MAX_MESSAGE_BYTES, "size": len(data)},
        )
    return data


def _error_of(exc: ClientError) -> tuple[str, int | None]:
    """The error code and HTTP status of a Management API error."""
    return exc.response.get("Error", {}).get("Code", ""), exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")


def _gone(connection_id: str, exc: ClientError) -> bool:
    """True for 410 ``GoneException`` (the connection is gone); any other error is raised as SendError."""
    code, status = _error_of(exc)
    if code == "GoneException" or status == 410:
        return True
    raise SendError(connection_id, code or str(status)) from exc


@dataclass
class SendReport:
    delivered: list[str] = field(default_factory=list)
    gone: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)


class ConnectionManager:
    """Send one frame to one connection, or to many concurrently; report who got it and who is gone.

    Retries are botocore's ``standard`` mode on the client (throttling such as ``LimitExceededException``,
    5xx, and transport errors such as a read timeout; exponential backoff with jitter:
    https://docs.aws.amazon.com/sdkref/latest/guide/feature-retry-behavior.html). What still fails after
    them is translated here: 410 ``GoneException`` → :class:`~streamer.errors.WebSocketDisconnectedError`,
    413 → ``PAYLOAD_TOO_LARGE``, anything else → :class:`~streamer.errors.SendError`. What to do about a
    gone connection (delete its row) is the caller's decision (``RequestService``), not this adapter's.
    """

    def __init__(
        self,
        endpoint_url: str | None = None,
        *,
        client: ApiGatewayManagementApiClient | None = None,
        max_retries: int = 4,
        max_workers: int = 8,
    ) -> None:
        self.endpoint_url = endpoint_url
        self._client = client
        self.max_retries = max_retries
        self.max_workers = max_workers

    @property
    def client(self) -> ApiGatewayManagementApiClient:
        if self._client is None:
            if not self.endpoint_url:
                raise RuntimeError("ConnectionManager needs endpoint_url (STREAMER_APIGW_ENDPOINT)")
            self._client = boto3.client(
                "apigatewaymanagementapi",
                endpoint_url=self.endpoint_url,
                config=Config(
                    retries={"mode": "standard", "total_max_attempts": self.max_retries + 1},
                    connect_timeout=5,
                    read_timeout=10,
                ),
            )
        return self._client

    def send(self, connection_id: str, message: Mapping[str, Any] | bytes) -> None:
        """Post one frame. Raises WebSocketDisconnectedError (410), SendError, ProtocolError(too large)."""
        data = message if isinstance(message, bytes) else encode_message(message)
        if len(data) > MAX_MESSAGE_BYTES:
            raise ProtocolError(ErrorCode.PAYLOAD_TOO_LARGE, "message too large", {"size": len(data)})
        try:
            self.client.post_to_connection(ConnectionId=connection_id, Data=data)
        except ClientError as exc:
            code, status = _error_of(exc)
            if code == "PayloadTooLargeException" or status == 413:
                raise ProtocolError(ErrorCode.PAYLOAD_TOO_LARGE, "message too large") from exc
            if _gone(connection_id, exc):
                raise WebSocketDisconnectedError(connection_id) from exc
        except BotoCoreError as exc:  # transport: read timeout, connection refused … after botocore's retries
            raise SendError(connection_id, type(exc).__name__) from exc

    def close(self, connection_id: str) -> bool:
        """Close a connection (``DELETE @connections/{id}``, DeleteConnection). False when it was already gone.

        API Gateway closes the socket and runs ``$disconnect``; the close frame carries no application reason
        (DeleteConnection takes none), so callers send the reason as an error frame first
        (https://docs.aws.amazon.com/apigateway/latest/developerguide/apigateway-how-to-call-websocket-api-connections.html).
        """
        try:
            self.client.delete_connection(ConnectionId=connection_id)
        except ClientError as exc:
            return not _gone(connection_id, exc)
        except BotoCoreError as exc:
            raise SendError(connection_id, type(exc).__name__) from exc
        return True

    def alive(self, connection_id: str) -> bool:
        """Whether API Gateway still holds the connection (``GET @connections/{id}``: 410 → False).

        Raises SendError when API Gateway cannot tell (throttled or failing after botocore's retries)."""
        try:
            self.client.get_connection(ConnectionId=connection_id)
        except ClientError as exc:
            return not _gone(connection_id, exc)  # (a 403 means this role may not ask: unknown, not gone)
        except BotoCoreError as exc:
            raise SendError(connection_id, type(exc).__name__) from exc
        return True

    def send_many(self, connection_ids: Iterable[str], message: Mapping[str, Any]) -> SendReport:
        """Send one message to many connections, concurrently with a bound; never raises for one of them."""
        data = encode_message(message)
        ids = list(dict.fromkeys(connection_ids))
        report = SendReport()

        def one(cid: str) -> tuple[str, str]:
            try:
                self.send(cid, data)
                return cid, "delivered"
            except WebSocketDisconnectedError:
                return cid, "gone"
            except SendError as exc:
                logger.warning("send failed", extra={"connection_id": cid, "reason": exc.reason})
                return cid, "failed"

        if len(ids) <= 1:
            results = [one(c) for c in ids]
        else:
            with ThreadPoolExecutor(max_workers=min(self.max_workers, len(ids))) as pool:
                results = list(pool.map(one, ids))
        for cid, outcome in results:
            getattr(report, outcome).append(cid)
        return report
