"""DynamoDB side of the per-user quotas (``streamer.quotas``): one item per user in the ``quotas`` table.

The item holds two reservation maps and one counter window::

    {"user_id": "alice",
     "connections": {"<connection id>": <reserved at>, ...},
     "requests":    {"<request id>": <reserved at>, ...},
     "msg_window": <epoch second>, "msg_count": <messages in that second>}

Every change is one conditional ``UpdateItem`` on that item, so the limits hold across Lambda containers
without a lock: ``size(map) < :limit`` in the condition makes a reservation atomic (two concurrent
admissions can never both take the last slot), and a map key makes it idempotent (a retried submit of the
same request id reserves nothing new). Condition expressions and ``size``:
https://docs.aws.amazon.com/amazondynamodb/latest/developerguide/Expressions.OperatorsAndFunctions.html

The maps are a *cache* of what is in flight; the truth is the connections and requests tables. When a map
is full, its members are checked against those tables (``BatchGetItem``, consistent reads) and the stale
ones removed before the reservation is tried again — so a missed ``$disconnect`` or a request that ended
without anybody releasing it can never keep a slot taken for good.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from botocore.exceptions import ClientError

from streamer.aws.store import ClientSlot, LazyClient
from streamer.aws.windows import count_in_window
from streamer.protocol import RequestStatus

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

__all__ = ["CONNECTIONS", "REQUESTS", "QuotaStore"]

CONNECTIONS = "connections"
REQUESTS = "requests"
#: BatchGetItem reads at most 100 keys per call
#: (https://docs.aws.amazon.com/amazondynamodb/latest/APIReference/API_BatchGetItem.html).
_BATCH_GET_MAX = 100


def _condition_failed(exc: ClientError) -> bool:
    return exc.response.get("Error", {}).get("Code") == "ConditionalCheckFailedException"


def _members_of(item: Mapping[str, Any], kind: str) -> dict[str, int] | None:
    """The ``kind`` map of a quota item (DynamoDB JSON), or None when it has none."""
    value = item.get(kind)
    if not isinstance(value, Mapping) or "M" not in value:
        return None
    return {m: int(v.get("N", "0")) for m, v in value["M"].items()}


class QuotaStore(LazyClient):
    """The ``quotas`` table plus the reads that tell a stale reservation from a live one."""

    def __init__(
        self,
        table: str,
        *,
        connections_table: str,
        requests_table: str,
        client: DynamoDBClient | ClientSlot[DynamoDBClient] | None = None,
    ) -> None:
        self.table = table
        self.connections_table = connections_table
        self.requests_table = requests_table
        super().__init__(client)

    def _key(self, user_id: str) -> dict[str, Any]:
        return {"user_id": {"S": user_id}}

    # -- reservations ---------------------------------------------------------------------------

    def reserve(self, user_id: str, kind: str, member: str, limit: int, now: int) -> tuple[bool, dict[str, int] | None]:
        """Put ``member`` into the user's ``kind`` map unless it holds ``limit`` others: ``(True, None)`` when it
        is in; else ``(False, the map as it was)`` — member → reserved at, ``None`` when the item or the map does
        not exist — read by the failed write itself (``ReturnValuesOnConditionCheckFailure=ALL_OLD``: the item
        the condition was evaluated on, no second read;
        https://docs.aws.amazon.com/amazondynamodb/latest/APIReference/API_UpdateItem.html)."""
        refused = self._conditional_update(
            Key=self._key(user_id),
            UpdateExpression="SET #k.#m = :now",
            ConditionExpression="attribute_exists(#k) AND (size(#k) < :limit OR attribute_exists(#k.#m))",
            ExpressionAttributeNames={"#k": kind, "#m": member},
            ExpressionAttributeValues={":now": {"N": str(now)}, ":limit": {"N": str(limit)}},
            ReturnValuesOnConditionCheckFailure="ALL_OLD",
        )
        if refused is None:
            return True, None
        return False, _members_of(refused.get("Item") or {}, kind)

    def create(self, user_id: str, kind: str, member: str, now: int) -> bool:
        """The user's first reservation of ``kind``, in one write: create the map holding ``member`` (a nested
        SET needs its parent map). False when the map exists already (another writer was first)."""
        refused = self._conditional_update(
            Key=self._key(user_id),
            UpdateExpression="SET #k = :map",
            ConditionExpression="attribute_not_exists(#k)",
            ExpressionAttributeNames={"#k": kind},
            ExpressionAttributeValues={":map": {"M": {member: {"N": str(now)}}}},
        )
        return refused is None

    def _conditional_update(self, **params: Any) -> dict[str, Any] | None:
        """One conditional ``UpdateItem`` on the quotas table: None when it was applied, the error response
        (with the item, when ``ALL_OLD`` was asked) when its condition failed; any other error raises."""
        try:
            self.client.update_item(TableName=self.table, **params)
        except ClientError as exc:
            if not _condition_failed(exc):
                raise
            return dict(exc.response)
        return None

    def members(self, user_id: str, kind: str) -> dict[str, int] | None:
        """The ``kind`` map (member → reserved at), or None when the item or the map does not exist."""
        resp = self.client.get_item(
            TableName=self.table,
            Key=self._key(user_id),
            ConsistentRead=True,
            ProjectionExpression="#k",
            ExpressionAttributeNames={"#k": kind},
        )
        return _members_of(resp.get("Item", {}), kind)

    def release(self, user_id: str, kind: str, members: Iterable[str]) -> None:
        """Remove members from the ``kind`` map (absent ones are ignored; nothing is created)."""
        todo = list(dict.fromkeys(members))
        # One UpdateItem per 50 members keeps the expression well under its 4 KB limit for long ids.
        for start in range(0, len(todo), 50):
            chunk = todo[start : start + 50]
            names = {"#k": kind, **{f"#m{i}": m for i, m in enumerate(chunk)}}
            try:
                self.client.update_item(
                    TableName=self.table,
                    Key=self._key(user_id),
                    UpdateExpression="REMOVE " + ", ".join(f"#k.#m{i}" for i in range(len(chunk))),
                    ConditionExpression="attribute_exists(#k)",
                    ExpressionAttributeNames=names,
                )
            except ClientError as exc:
                if not _condition_failed(exc):
                    raise

    # -- the message window ---------------------------------------------------------------------

    def count_message(self, user_id: str, second: int) -> int:
        """Count one message in the user's current one-second window; the count so far in that window."""
        item = count_in_window(
            self.client,
            table=self.table,
            key=self._key(user_id),
            window=second,
            window_attr="msg_window",
            count_attr="msg_count",
        )
        assert item is not None  # without exists_attr the counter always lands
        return int(item["msg_count"])

    # -- what is really live --------------------------------------------------------------------

    def _batch_get(
        self, table: str, keys: list[dict[str, Any]], projection: str, names: dict[str, str]
    ) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for start in range(0, len(keys), _BATCH_GET_MAX):
            pending: dict[str, Any] = {
                table: {
                    "Keys": keys[start : start + _BATCH_GET_MAX],
                    "ConsistentRead": True,
                    "ProjectionExpression": projection,
                    "ExpressionAttributeNames": names,
                }
            }
            while pending:
                resp = self.client.batch_get_item(RequestItems=pending)
                out.extend(resp.get("Responses", {}).get(table, []))
                pending = dict(resp.get("UnprocessedKeys") or {})
        return out

    def live_connections(self, connection_ids: list[str], now: int) -> set[str]:
        """The ids among ``connection_ids`` whose connection row exists and has not expired."""
        keys = [{"connection_id": {"S": c}} for c in connection_ids]
        rows = self._batch_get(self.connections_table, keys, "#c, #e", {"#c": "connection_id", "#e": "expires_at"})
        return {r["connection_id"]["S"] for r in rows if int(r.get("expires_at", {}).get("N", "0")) > now}

    def existing_requests(self, user_id: str, request_ids: list[str]) -> dict[str, bool]:
        """request id → True while the request is in flight (PENDING / RUNNING), False once it ended."""
        keys = [{"user_id": {"S": user_id}, "request_id": {"S": r}} for r in request_ids]
        # "status" is a DynamoDB reserved word: projected through a name placeholder.
        rows = self._batch_get(self.requests_table, keys, "#r, #s", {"#r": "request_id", "#s": "status"})
        ended = {s.value for s in RequestStatus if s.terminal}
        return {r["request_id"]["S"]: r.get("status", {}).get("S") not in ended for r in rows}
