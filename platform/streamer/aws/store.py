"""DynamoDB persistence: connections, requests and the per-request event log.

Each store takes an injected boto3 DynamoDB client (``client=None`` → created lazily), so tests pass a
client bound to moto and Lambda handlers share one per container.

The request item orders everything that happens to a request, one conditional ``UpdateItem`` at a time
(https://docs.aws.amazon.com/amazondynamodb/latest/developerguide/Expressions.ConditionExpressions.html):
it holds the status, the execution ARN and ``last_seq``, the counter of its event log. Storing an event
first claims its seq by incrementing ``last_seq`` on condition that the request has not ended (and is the
same incarnation); the terminal write is the same increment that also sets the terminal status, so nothing
can claim a seq after it and the terminal event is always the last. The terminal event is the request item
itself (status + output or error at ``last_seq``); progress events are items of the events table, written
with a plain ``PutItem`` at their claimed seq. No transaction on the hot path.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, ClassVar, Generic, TypeVar

import boto3
from botocore.exceptions import ClientError

from streamer.aws.codec import from_ddb, to_attr, to_ddb
from streamer.aws.windows import count_in_window
from streamer.errors import TerminalAlreadyError
from streamer.models import Connection, Request, RequestEvent, RequestRef, open_shard
from streamer.protocol import RequestStatus

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

    from streamer.aws.batch import GroupCommit

__all__ = [
    "ClientSlot",
    "ConnectionStore",
    "EventStore",
    "LazyBoto3Client",
    "LazyClient",
    "RequestStore",
    "TerminalAlreadyError",
    "from_ddb",
]

ClientT = TypeVar("ClientT")


class ClientSlot(Generic[ClientT]):
    """One boto3 client of ``service``, created on first use and shared by every adapter given this slot.

    boto3 clients are thread-safe; creating one is not cheap (botocore loads the service model and builds its
    endpoint rules: tens of milliseconds of CPU). A container's stores share one DynamoDB client through a
    slot, and the first concurrent users wait for the one being created instead of each creating their own.
    """

    def __init__(self, service: str, client: ClientT | None = None) -> None:
        self.service = service
        self._client: ClientT | None = client
        self._lock = threading.Lock()

    def get(self) -> ClientT:
        client = self._client
        if client is None:
            with self._lock:
                if self._client is None:
                    self._client = boto3.client(self.service)  # type: ignore[call-overload]  # a runtime name
                client = self._client
        assert client is not None
        return client


class LazyBoto3Client(Generic[ClientT]):
    """A boto3 client of the class's ``service``: given, or taken from a shared :class:`ClientSlot`, or created
    on first use (one per adapter)."""

    service: ClassVar[str]

    def __init__(self, client: ClientT | ClientSlot[ClientT] | None) -> None:
        self._slot: ClientSlot[ClientT] = (
            client if isinstance(client, ClientSlot) else ClientSlot(self.service, client)
        )

    @property
    def client(self) -> ClientT:
        return self._slot.get()

    @property
    def slot(self) -> ClientSlot[ClientT]:
        """The slot this adapter's client comes from (to share it with another adapter)."""
        return self._slot


class LazyClient(LazyBoto3Client["DynamoDBClient"]):
    """A DynamoDB client given, or created on first use: the base of the tables' stores."""

    service = "dynamodb"


def _is_condition_failure(exc: ClientError) -> bool:
    return exc.response.get("Error", {}).get("Code") == "ConditionalCheckFailedException"


class ConnectionStore(LazyClient):
    """``connections`` table: one item per live WebSocket connection; GSI ``by_user``."""

    def __init__(
        self,
        table: str,
        client: DynamoDBClient | ClientSlot[DynamoDBClient] | None = None,
        *,
        batched: bool = False,
    ) -> None:
        super().__init__(client)
        self.table = table
        #: ``batched``: rows written and deleted by group commit (``BatchWriteItem``, no condition), for a
        #: process that admits every connection itself (``streamer.admission``).
        self.batch: GroupCommit | None = None
        if batched:
            from streamer.aws.batch import GroupCommit

            self.batch = GroupCommit(table, self.slot.get)

    def put(self, conn: Connection) -> None:
        if self.batch is not None:
            self.batch.put(to_ddb(conn.model_dump()), conn.connection_id)
            return
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
        if self.batch is not None:
            self.batch.delete({"connection_id": {"S": connection_id}}, connection_id)
            return
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
        item = count_in_window(
            self.client,
            table=self.table,
            key={"connection_id": {"S": connection_id}},
            window=now // 60,
            window_attr="rate_window",
            count_attr="rate_count",
            exists_attr="connection_id",
        )
        if item is None:
            return None
        return Connection.model_validate(item), int(item["rate_count"])


class RequestStore(LazyClient):
    """``requests`` table, keyed by (user_id, request_id); its stream starts executions; sparse GSI
    ``by_open`` (``open_shard``, ``created_at``) lists the requests that have not ended."""

    OPEN_INDEX = "by_open"

    def __init__(self, table: str, client: DynamoDBClient | ClientSlot[DynamoDBClient] | None = None) -> None:
        super().__init__(client)
        self.table = table

    @staticmethod
    def _key(user_id: str, request_id: str) -> dict[str, Any]:
        return {"user_id": {"S": user_id}, "request_id": {"S": request_id}}

    @staticmethod
    def _same_incarnation(ref: RequestRef, values: dict[str, Any]) -> str:
        """The condition that the item is ``ref``'s incarnation (a legacy item has no incarnation)."""
        if not ref.incarnation:
            return "attribute_not_exists(incarnation)"
        values[":inc"] = {"S": ref.incarnation}
        return "incarnation = :inc"

    @classmethod
    def _not_ended(cls, ref: RequestRef, values: dict[str, Any]) -> str:
        """The condition that the item is ``ref``'s incarnation and has not ended (``#s`` names status)."""
        values[":pending"] = {"S": RequestStatus.PENDING.value}
        values[":running"] = {"S": RequestStatus.RUNNING.value}
        return f"#s IN (:pending, :running) AND {cls._same_incarnation(ref, values)}"

    def create(self, req: Request) -> bool:
        """Insert a new request. False when (user_id, request_id) already exists: nothing is written."""
        item = req.model_dump(mode="json")
        if not req.incarnation:
            del item["incarnation"]  # a legacy request has none (see _same_incarnation)
        if not req.status.terminal:
            item["open_shard"] = open_shard(req.ref.request_key)
        try:
            self.client.put_item(
                TableName=self.table,
                Item=to_ddb(item),
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

    def mark_running(self, ref: RequestRef, execution_arn: str, now: int) -> tuple[bool, Request | None]:
        """PENDING → RUNNING with the execution ARN, for this incarnation only.

        ``(True, None)`` when this call did it; else ``(False, current)`` with the item as it is (``None``
        when there is none), read in the same call (``ReturnValuesOnConditionCheckFailure``).
        """
        values: dict[str, Any] = {
            ":running": {"S": RequestStatus.RUNNING.value},
            ":pending": {"S": RequestStatus.PENDING.value},
            ":arn": {"S": execution_arn},
            ":now": {"N": str(now)},
        }
        same = self._same_incarnation(ref, values)
        try:
            self.client.update_item(
                TableName=self.table,
                Key=self._key(ref.user_id, ref.request_id),
                UpdateExpression="SET #s = :running, execution_arn = :arn, updated_at = :now",
                ConditionExpression=f"#s = :pending AND {same}",
                ExpressionAttributeNames={"#s": "status"},
                ExpressionAttributeValues=values,
                ReturnValuesOnConditionCheckFailure="ALL_OLD",
            )
        except ClientError as exc:
            if _is_condition_failure(exc):
                item: Any = exc.response.get("Item")
                return False, Request.model_validate(from_ddb(item)) if item else None
            raise
        return True, None

    def claim_seq(self, ref: RequestRef, now: int) -> int | None:
        """The next seq of the request's event log, or None when the request has ended (or is gone, or is
        another incarnation): one ``UpdateItem`` that increments ``last_seq`` only while not terminal."""
        values: dict[str, Any] = {":one": {"N": "1"}, ":now": {"N": str(now)}}
        try:
            resp = self.client.update_item(
                TableName=self.table,
                Key=self._key(ref.user_id, ref.request_id),
                UpdateExpression="ADD last_seq :one SET updated_at = :now",
                ConditionExpression=self._not_ended(ref, values),
                ExpressionAttributeNames={"#s": "status"},
                ExpressionAttributeValues=values,
                ReturnValues="UPDATED_NEW",
            )
        except ClientError as exc:
            if _is_condition_failure(exc):
                return None
            raise
        return int(resp["Attributes"]["last_seq"]["N"])

    def end(
        self,
        ref: RequestRef,
        status: RequestStatus,
        now: int,
        *,
        output: dict[str, Any] | None = None,
        error_code: str | None = None,
        error_message: str | None = None,
    ) -> Request:
        """Move the request to a terminal status: its terminal event, at the next seq, exactly once.

        One ``UpdateItem`` conditioned on the request not having ended (and being ``ref``'s incarnation); it
        takes the next seq, removes ``open_shard`` (the request leaves the reconciler's index) and returns the
        whole item as written. Raises :class:`TerminalAlreadyError` when the condition fails.
        """
        names = {"#s": "status"}
        values: dict[str, Any] = {":s": {"S": status.value}, ":now": {"N": str(now)}, ":one": {"N": "1"}}
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
        try:
            resp = self.client.update_item(
                TableName=self.table,
                Key=self._key(ref.user_id, ref.request_id),
                UpdateExpression="SET " + ", ".join(sets) + " ADD last_seq :one REMOVE open_shard",
                ConditionExpression=self._not_ended(ref, values),
                ExpressionAttributeNames=names,
                ExpressionAttributeValues=values,
                ReturnValues="ALL_NEW",
            )
        except ClientError as exc:
            if _is_condition_failure(exc):
                raise TerminalAlreadyError(f"request {ref.request_key} already ended") from exc
            raise
        return Request.model_validate(from_ddb(resp["Attributes"]))

    def open_before(self, shard: str, created_before: int) -> Iterator[tuple[str, str]]:
        """(user_id, request_id) of the requests of ``shard`` that have not ended and were created before
        ``created_before``, oldest first (a Query of the sparse ``by_open`` index: only open requests are in
        it, so this reads no ended request)."""
        kwargs: dict[str, Any] = {
            "TableName": self.table,
            "IndexName": self.OPEN_INDEX,
            "KeyConditionExpression": "open_shard = :sh AND created_at < :t",
            "ExpressionAttributeValues": {":sh": {"S": shard}, ":t": {"N": str(created_before)}},
        }
        while True:
            resp = self.client.query(**kwargs)
            for item in resp.get("Items", []):
                yield item["user_id"]["S"], item["request_id"]["S"]
            if "LastEvaluatedKey" not in resp:
                return
            kwargs["ExclusiveStartKey"] = resp["LastEvaluatedKey"]


class EventStore(LazyClient):
    """``events`` table: the per-request event log (progress events; the terminal event is the request item).

    Seqs are claimed on the request item (:meth:`RequestStore.claim_seq`); an event is then one plain
    ``PutItem`` at its seq. A retried put writes the same item again, so it is idempotent.
    """

    def __init__(
        self,
        table: str,
        client: DynamoDBClient | ClientSlot[DynamoDBClient] | None = None,
        *,
        ttl_seconds: int = 7 * 24 * 3600,
    ) -> None:
        super().__init__(client)
        self.table = table
        self.ttl_seconds = ttl_seconds

    def put(self, request_key: str, seq: int, body: dict[str, Any], now: int) -> RequestEvent:
        """Store the event ``body`` at its (claimed) ``seq``."""
        self.client.put_item(
            TableName=self.table,
            Item=to_ddb(
                {
                    "request_key": request_key,
                    "seq": seq,
                    "body": json.dumps(body, separators=(",", ":"), ensure_ascii=False),
                    "created_at": now,
                    "expires_at": now + self.ttl_seconds,
                }
            ),
        )
        return RequestEvent(request_key=request_key, seq=seq, body=body, created_at=now)

    def after(self, request_key: str, after_seq: int, *, upto: int | None = None) -> Iterator[RequestEvent]:
        """Stored events with ``after_seq < seq`` (and ``seq <= upto`` when given), ascending."""
        cond = "request_key = :k AND seq > :s"
        values: dict[str, Any] = {":k": {"S": request_key}, ":s": {"N": str(max(after_seq, 0))}}
        if upto is not None:
            cond = "request_key = :k AND seq BETWEEN :s AND :u"
            values[":s"] = {"N": str(max(after_seq, 0) + 1)}
            values[":u"] = {"N": str(upto)}
        kwargs: dict[str, Any] = {
            "TableName": self.table,
            "KeyConditionExpression": cond,
            "ExpressionAttributeValues": values,
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
