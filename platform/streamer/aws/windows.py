"""A fixed-window counter on a DynamoDB item: one ``UpdateItem`` in the steady state, exact across containers.

Used for a connection's messages per minute (on the connection row) and a user's messages per second (on the
user's quota item). The window only moves forward: a message that arrives late (its window is older than the
stored one, e.g. a slow invocation at a window boundary) is counted in the stored, newer window rather than
resetting it — resetting backwards made concurrent writers at a boundary undo each other's windows until one of
them gave up.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from botocore.exceptions import ClientError

from streamer.aws.codec import from_ddb

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

__all__ = ["count_in_window"]


def count_in_window(
    client: DynamoDBClient,
    *,
    table: str,
    key: Mapping[str, Any],
    window: int,
    window_attr: str,
    count_attr: str,
    exists_attr: str | None = None,
) -> dict[str, Any] | None:
    """Add one message to the item's window ``window``; the item's attributes after the write (plain values).

    ``exists_attr``: the item must already exist (its key attribute); ``None`` is returned when it does not.
    Without it, the first message creates the item's window.
    """
    must_exist = f"attribute_exists({exists_attr}) AND " if exists_attr else ""
    names = {"#w": window_attr, "#c": count_attr}
    values = {":w": {"N": str(window)}, ":one": {"N": "1"}}
    # This window or a newer one: count it there.
    add = ("ADD #c :one", f"{must_exist}#w >= :w")
    # An older window (or none yet): start this one, unless a concurrent message already did (then ADD again).
    reset = ("SET #w = :w, #c = :one", f"{must_exist}(attribute_not_exists(#w) OR #w < :w)")
    for update, condition in (add, reset, add):
        try:
            resp = client.update_item(
                TableName=table,
                Key=dict(key),
                UpdateExpression=update,
                ConditionExpression=condition,
                ExpressionAttributeNames=names,
                ExpressionAttributeValues=values,
                ReturnValues="ALL_NEW",
            )
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") != "ConditionalCheckFailedException":
                raise
            continue
        return from_ddb(resp["Attributes"])
    return None  # the item does not exist (with exists_attr); otherwise unreachable: add or reset always holds
