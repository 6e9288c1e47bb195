"""DynamoDB persistence: connections, requests and the per-request event log.

Each store takes an injected boto3 DynamoDB client (``client=None`` → created lazily), so tests pass a
client bound to moto and Lambda handlers share one per container.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import boto3
from botocore.exceptions import ClientError

from streamer.aws.codec import from_ddb, to_attr, to_ddb
from streamer.errors import StoreError, TerminalAlreadyError
from streamer.models import Connection, Request, RequestEvent, RequestRef
from streamer.protocol import RequestStatus

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

__all__ = ["ConnectionStore", "EventStore", "RequestStore", "TerminalAlreadyError", "from_ddb"]

class _Lazy:
    def __init__(self, client: DynamoDBClient | None) -> None:
        self._client = client

    @property
    def client(self) -> DynamoDBClient:
        if self._client is None:
            self._client = boto3.client("dynamodb")
        return self._client


def _is_condition_failure(exc: ClientError) -> bool:
    return exc.response.get("Error", {}).get("Code") == "ConditionalCheckFailedException"


class ConnectionStore(_Lazy):
    """``connections`` table: one item per live WebSocket connection; GSI ``by_user``."""

    def __init__(self, table: str, client: DynamoDBClient | None = None) -> None:
        super().__init__(client)
        self.table = table

    def put(self, conn: Connection) -> None:
        self.client.put_item(
            TableName=self.table,
            Item=to_ddb(conn.model_dump()),
            ConditionExpression="attribute_not_exists(connection_id)",
        )

    def get(self, connection_id: str) -> Connection | None:
        resp = self.client.get_item(
            TableName=self.table, Key={"connection_id": {"S": connection_id}}, ConsistentRead=True
        )
        item = resp.get("Item")
        return Connection.model_validate(from_ddb(item)) if item else None

    def delete(self, connection_id: str) -> None:
        self.client.delete_item(TableName=self.table, Key={"connection_id": {"S": connection_id}})

    def for_user(self, user_id: str, now: int | None = None) -> list[Connection]:
        """The user's current connections (expired rows, awaiting TTL deletion, are left out)."""
        now = int(time.time()) if now is None else now
        out: list[Connection] = []
        kwargs: dict[str, Any] = {
            "TableName": self.table,
            "IndexName": "by_user",
            "KeyConditionExpression": "user_id = :u",
            "ExpressionAttributeValues": {":u": {"S": user_id}},
        }
        while True:
            resp = self.client.query(**kwargs)
            for item in resp.get("Items", []):
                conn = Connection.model_validate(from_ddb(item))
                if conn.expires_at > now:
                    out.append(conn)
            if "LastEvaluatedKey" not in resp:
                return out
            kwargs["ExclusiveStartKey"] = resp["LastEvaluatedKey"]

    def count_message(self, connection_id: str, now: int | None = None) -> tuple[Connection, int] | None:
        """Count one message in the connection's current one-minute window.

        Returns the connection and its message count in this window, or None when the connection does not
        exist. One ``UpdateItem`` in the steady state (``ADD`` within the window, ``ReturnValues=ALL_NEW``),
        so the router learns who is asking and how often in a single round trip. The fixed window lives on
        the connection item itself and disappears with it.
        """
        now = int(time.time()) if now is None else now
        values = {":w": {"N": str(now // 60)}, ":one": {"N": "1"}}
        add = ("ADD rate_count :one", "attribute_exists(connection_id) AND rate_window = :w")
        # A new window: reset, unless a concurrent message of this connection already did (then ADD again).
        reset = (
            "SET rate_window = :w, rate_count = :one",
            "attribute_exists(connection_id) AND (attribute_not_exists(rate_window) OR rate_window <> :w)",
        )
        for update, condition in (add, reset, add):
            try:
                resp = self.client.update_item(
                    TableName=self.table,
                    Key={"connection_id": {"S": connection_id}},
                    UpdateExpression=update,
                    ConditionExpression=condition,
                    ExpressionAttributeValues=values,
                    ReturnValues="ALL_NEW",
                )
            except ClientError as exc:
                if not _is_condition_failure(exc):
                    raise
                continue
            item = from_ddb(resp["Attributes"])
            return Connection.model_validate(item), int(item["rate_count"])
        return None


class RequestStore(_Lazy):
    """``requests`` table, keyed by (user_id, request_id); its stream starts executions."""

    def __init__(self, table: str, client: DynamoDBClient | None = None) -> None:
        super().__init__(client)
        self.table = table

    @staticmethod
    def _key(user_id: str, request_id: str) -> dict[str, Any]:
        return {"user_id": {"S": user_id}, "request_id": {"S": request_id}}

    def create(self, req: Request) -> bool:
        """Insert a new request. False when (user_id, request_id) already exists: nothing is written."""
        try:
            self.client.put_item(
                TableName=self.table,
                Item=to_ddb(req.model_dump(mode="json")),
                ConditionExpression="attribute_not_exists(request_id)",
            )
        except ClientError as exc:
            if _is_condition_failure(exc):
                return False
            raise
        return True

    def get(self, user_id: str, request_id: str) -> Request | None:
        resp = self.client.get_item(TableName=self.table, Key=self._key(user_id, request_id), ConsistentRead=True)
        item = resp.get("Item")
        return Request.model_validate(from_ddb(item)) if item else None

    def mark_running(self, user_id: str, request_id: str, execution_arn: str, now: int) -> bool:
        """PENDING → RUNNING with the execution ARN. False when the request is no longer PENDING."""
        try:
            self.client.update_item(
                TableName=self.table,
                Key=self._key(user_id, request_id),
                UpdateExpression="SET #s = :running, execution_arn = :arn, updated_at = :now",
                ConditionExpression="#s = :pending",
                ExpressionAttributeNames={"#s": "status"},
                ExpressionAttributeValues={
                    ":running": {"S": RequestStatus.RUNNING.value},
                    ":pending": {"S": RequestStatus.PENDING.value},
                    ":arn": {"S": execution_arn},
                    ":now": {"N": str(now)},
                },
            )
        except ClientError as exc:
            if _is_condition_failure(exc):
                return False
            raise
        return True

    def terminal_update(
        self,
        req: RequestRef,
        status: RequestStatus,
        now: int,
        *,
        output: dict[str, Any] | None = None,
        error_code: str | None = None,
        error_message: str | None = None,
    ) -> dict[str, Any]:
        """The ``Update`` of a transaction that ends a request (condition: not yet terminal)."""
        names = {"#s": "status"}
        values: dict[str, Any] = {":s": {"S": status.value}, ":now": {"N": str(now)}}
        sets = ["#s = :s", "updated_at = :now"]
        if output is not None:
            sets.append("#o = :o")
            names["#o"] = "output"
            values[":o"] = to_attr(output)
        if error_code is not None:
            sets.append("error_code = :ec")
            values[":ec"] = {"S": error_code}
        if error_message is not None:
            sets.append("error_message = :em")
            values[":em"] = {"S": error_message}
        values[":pending"] = {"S": RequestStatus.PENDING.value}
        values[":running"] = {"S": RequestStatus.RUNNING.value}
        return {
            "Update": {
                "TableName": self.table,
                "Key": self._key(req.user_id, req.request_id),
                "UpdateExpression": "SET " + ", ".join(sets),
                "ConditionExpression": "attribute_exists(request_id) AND #s IN (:pending, :running)",
                "ExpressionAttributeNames": names,
                "ExpressionAttributeValues": values,
            }
        }


class EventStore(_Lazy):
    """``events`` table: the per-request event log with gap-free ``seq``."""

    def __init__(
        self,
        table: str,
        client: DynamoDBClient | None = None,
        *,
        ttl_seconds: int = 7 * 24 * 3600,
        max_attempts: int = 50,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        super().__init__(client)
        self.table = table
        self.ttl_seconds = ttl_seconds
        self.max_attempts = max_attempts
        self._sleep = sleep

    def last_seq(self, request_key: str) -> int:
        """The highest stored seq of the request (0 when it has no event yet)."""
        resp = self.client.query(
            TableName=self.table,
            KeyConditionExpression="request_key = :k",
            ExpressionAttributeValues={":k": {"S": request_key}},
            ProjectionExpression="seq",
            ScanIndexForward=False,
            Limit=1,
            ConsistentRead=True,
        )
        items = resp.get("Items", [])
        return int(items[0]["seq"]["N"]) if items else 0

    def append(
        self,
        request_key: str,
        make_body: Callable[[int], dict[str, Any]],
        now: int,
        *,
        also: list[dict[str, Any]] | None = None,
    ) -> RequestEvent:
        """Append one event at the next free seq; ``make_body(seq)`` builds it once its seq is known.

        The event item *is* the claim on its seq: a put conditioned on the slot being free, so seqs are
        gap-free and a seq always carries one event, with no counter to fall out of step. Contention
        (another writer took the slot) re-reads the tail and retries with jittered backoff.
        ``also`` makes the put one transaction with other writes (a request's terminal update); when
        one of those fails its condition, :class:`TerminalAlreadyError` and nothing is written.
        """
        extra = also or []
        for attempt in range(self.max_attempts):
            seq = self.last_seq(request_key) + 1
            body = make_body(seq)
            put: dict[str, Any] = {
                "TableName": self.table,
                "Item": to_ddb(
                    {
                        "request_key": request_key,
                        "seq": seq,
                        "body": json.dumps(body, separators=(",", ":"), ensure_ascii=False),
                        "created_at": now,
                        "expires_at": now + self.ttl_seconds,
                    }
                ),
                "ConditionExpression": "attribute_not_exists(seq)",
            }
            try:
                if extra:
                    items: Any = [{"Put": put}, *extra]
                    self.client.transact_write_items(TransactItems=items)
                else:
                    self.client.put_item(**put)
            except ClientError as exc:
                code = exc.response.get("Error", {}).get("Code")
                if code == "TransactionCanceledException":
                    reasons = exc.response.get("CancellationReasons") or []
                    if any(r.get("Code") == "ConditionalCheckFailed" for r in reasons[1:]):
                        raise TerminalAlreadyError(f"request {request_key} already ended") from exc
                elif code != "ConditionalCheckFailedException":
                    raise
                self._sleep(min(0.2, 0.005 * (2 ** min(attempt, 6))) * random.random())
                continue
            return RequestEvent(request_key=request_key, seq=seq, body=body, created_at=now)
        raise StoreError(f"could not append to {request_key}: too much contention")

    def after(self, request_key: str, after_seq: int) -> Iterator[RequestEvent]:
        """Stored events with ``seq > after_seq``, ascending."""
        kwargs: dict[str, Any] = {
            "TableName": self.table,
            "KeyConditionExpression": "request_key = :k AND seq > :s",
            "ExpressionAttributeValues": {":k": {"S": request_key}, ":s": {"N": str(max(after_seq, 0))}},
            "ConsistentRead": True,
        }
        while True:
            resp = self.client.query(**kwargs)
            for item in resp.get("Items", []):
                data = from_ddb(item)
                yield RequestEvent(
                    request_key=data["request_key"],
                    seq=int(data["seq"]),
                    body=json.loads(data["body"]),
                    created_at=int(data["created_at"]),
                )
            if "LastEvaluatedKey" not in resp:
                return
            kwargs["ExclusiveStartKey"] = resp["LastEvaluatedKey"]
