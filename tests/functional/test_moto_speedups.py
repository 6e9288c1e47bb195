"""The local stack's moto speed-ups answer exactly as moto does without them.

``speed_up_dynamodb_queries``: moto's Query reads one partition (or filters on the index's hash key) instead
of sorting the whole table. ``speed_up_dynamodb_responses``: DynamoDB's item operations answer their result's
JSON directly instead of through moto's model-driven serializer.

The queries run against the same tables (the template's, filled by a seeded generator with the shapes that make a
Query hard to get right: ties on an index's range key, numbers written two ways, items missing an index
attribute, several pages); every query is sent with the patch and without it, and the responses compared.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from moto import mock_aws
from moto.dynamodb.models.table import Table

from streamer.local import moto_server
from streamer.local.moto_server import speed_up_dynamodb_queries, speed_up_dynamodb_responses
from tests.functional.conftest import TABLE_NAMES, create_tables

CONNECTIONS, REQUESTS, EVENTS = (
    TABLE_NAMES["ConnectionsTable"],
    TABLE_NAMES["RequestsTable"],
    TABLE_NAMES["EventsTable"],
)


@pytest.fixture
def tables() -> Iterator[Any]:
    with mock_aws():
        client = boto3.client("dynamodb", region_name="us-east-1")
        create_tables(client)
        rng = random.Random(7)
        for i in range(300):
            user = f"u{rng.randrange(12)}"
            item = {
                "connection_id": {"S": f"c{i}"},
                "expires_at": {"N": str(1000 + i)},
                "connected_at": {"N": str(rng.randrange(5))},
            }
            if rng.random() < 0.9:  # the rest are not in the by_user index
                item["user_id"] = {"S": user}
            client.put_item(TableName=CONNECTIONS, Item=item)
        for i in range(300):
            item = {
                "user_id": {"S": f"u{rng.randrange(8)}"},
                "request_id": {"S": f"r{rng.randrange(60):03d}"},
                "workflow": {"S": rng.choice(["echo", "textstats", "fanout"])},
                # ties on the indexes' range key, and one number written two ways
                "created_at": {"N": rng.choice(["100", "100.0", "101", "102", "7"])},
                "status": {"S": rng.choice(["PENDING", "RUNNING", "SUCCEEDED"])},
                "payload": {"M": {"b": {"B": bytes([i % 256])}, "n": {"N": str(i)}}},
            }
            if rng.random() < 0.3:
                item["open_shard"] = {"S": str(rng.randrange(3))}
            client.put_item(TableName=REQUESTS, Item=item)
        for i in range(400):
            client.put_item(
                TableName=EVENTS,
                Item={
                    "request_key": {"S": f"k{rng.randrange(20)}"},
                    "seq": {"N": str(rng.randrange(1, 40))},
                    "body": {"S": "x" * rng.randrange(50)},
                },
            )
        # An item updated in place after it was indexed, and one deleted.
        client.update_item(
            TableName=CONNECTIONS,
            Key={"connection_id": {"S": "c3"}},
            UpdateExpression="SET user_id = :u",
            ExpressionAttributeValues={":u": {"S": "u0"}},
        )
        client.delete_item(TableName=CONNECTIONS, Key={"connection_id": {"S": "c5"}})
        yield client


def queries() -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for user in ("u0", "u3", "u11", "nobody"):
        out.append(
            {
                "TableName": CONNECTIONS,
                "IndexName": "by_user",
                "KeyConditionExpression": "user_id = :u",
                "ExpressionAttributeValues": {":u": {"S": user}},
            }
        )
    for user in ("u1", "u5", "nobody"):
        for forward in (True, False):
            out.append(
                {
                    "TableName": REQUESTS,
                    "KeyConditionExpression": "user_id = :u",
                    "ExpressionAttributeValues": {":u": {"S": user}},
                    "ScanIndexForward": forward,
                }
            )
            out.append(
                {
                    "TableName": REQUESTS,
                    "IndexName": "by_user_created",
                    "KeyConditionExpression": "user_id = :u AND created_at >= :c",
                    "ExpressionAttributeValues": {":u": {"S": user}, ":c": {"N": "100"}},
                    "ScanIndexForward": forward,
                    "Limit": 4,
                }
            )
    for workflow in ("echo", "fanout"):
        out.append(
            {
                "TableName": REQUESTS,
                "IndexName": "by_workflow_created",
                "KeyConditionExpression": "workflow = :w",
                "ExpressionAttributeValues": {":w": {"S": workflow}, ":s": {"S": "RUNNING"}},
                "FilterExpression": "#s = :s",
                "ExpressionAttributeNames": {"#s": "status"},
                "ScanIndexForward": False,
                "Limit": 7,
            }
        )
    for shard in ("0", "2"):
        out.append(
            {
                "TableName": REQUESTS,
                "IndexName": "by_open",
                "KeyConditionExpression": "open_shard = :s AND created_at < :c",
                "ExpressionAttributeValues": {":s": {"S": shard}, ":c": {"N": "102"}},
            }
        )
    out.append(
        {
            "TableName": REQUESTS,
            "IndexName": "by_request_id",
            "KeyConditionExpression": "request_id = :r",
            "ExpressionAttributeValues": {":r": {"S": "r007"}},
        }
    )
    for key in ("k0", "k7", "k19", "missing"):
        out.append(
            {
                "TableName": EVENTS,
                "KeyConditionExpression": "request_key = :k AND seq > :s",
                "ExpressionAttributeValues": {":k": {"S": key}, ":s": {"N": "5"}},
                "Limit": 3,
                "ConsistentRead": True,
            }
        )
        out.append(
            {
                "TableName": EVENTS,
                "KeyConditionExpression": "request_key = :k AND seq BETWEEN :a AND :b",
                "ExpressionAttributeValues": {":k": {"S": key}, ":a": {"N": "2"}, ":b": {"N": "30"}},
                "ScanIndexForward": False,
                "ProjectionExpression": "seq",
            }
        )
    return out


def all_pages(client: Any, query: dict[str, Any]) -> list[dict[str, Any]]:
    pages, start = [], None
    while True:
        page = client.query(**query, **({"ExclusiveStartKey": start} if start else {}))
        page.pop("ResponseMetadata", None)
        pages.append(page)
        start = page.get("LastEvaluatedKey")
        if not start:
            return pages


def test_the_fast_query_answers_as_moto_does(tables: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    original = getattr(Table.query, "__wrapped__", Table.query)
    monkeypatch.setattr(Table, "query", original)
    expected = [all_pages(tables, q) for q in queries()]
    speed_up_dynamodb_queries()
    assert Table.query is not original
    got = [all_pages(tables, q) for q in queries()]
    assert sum(len(p["Items"]) for pages in got for p in pages) > 200  # the queries do find things
    assert sum(len(pages) > 1 for pages in got) >= 5  # and several need more than one page
    for query, want, have in zip(queries(), expected, got, strict=True):
        assert have == want, query
    speed_up_dynamodb_queries()  # idempotent
    assert getattr(Table.query, "__wrapped__", None) is original


def test_a_query_with_an_unknown_index_still_fails_as_moto_does(tables: Any) -> None:
    speed_up_dynamodb_queries()
    with pytest.raises(tables.exceptions.ClientError, match="Invalid index"):
        tables.query(
            TableName=CONNECTIONS,
            IndexName="by_nothing",
            KeyConditionExpression="user_id = :u",
            ExpressionAttributeValues={":u": {"S": "u0"}},
        )


def test_item_responses_rendered_directly_equal_moto_serializers(tables: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every item operation's shapes (binary and set values, nested maps, each ReturnValues, batches and
    transactions, unprocessed and missing keys), rendered both ways and compared (check mode raises on a
    difference); an error and a table description still go through moto's serializer."""
    speed_up_dynamodb_responses(check=True)
    rendered: list[Any] = []
    real = moto_server._plain
    monkeypatch.setattr(moto_server, "_plain", lambda value: rendered.append(value) or real(value))
    item = {
        "user_id": {"S": "zed"},
        "request_id": {"S": "r1"},
        "workflow": {"S": "echo"},
        "created_at": {"N": "12.50"},
        "blob": {"B": b"\x00\xffbin"},
        "blobs": {"BS": [b"a", b"\x01"]},
        "nums": {"NS": ["1", "2.5"]},
        "strs": {"SS": ["x", "y"]},
        "nested": {"M": {"l": {"L": [{"S": "a"}, {"N": "1"}, {"NULL": True}, {"BOOL": False}, {"B": b"z"}]}}},
        "empty": {"S": ""},
    }
    key = {"user_id": {"S": "zed"}, "request_id": {"S": "r1"}}
    tables.put_item(TableName=REQUESTS, Item=item)
    tables.put_item(TableName=REQUESTS, Item=item, ReturnValues="ALL_OLD", ReturnConsumedCapacity="TOTAL")
    assert tables.get_item(TableName=REQUESTS, Key=key)["Item"]["blob"]["B"] == b"\x00\xffbin"
    tables.get_item(TableName=REQUESTS, Key={**key, "request_id": {"S": "missing"}})
    tables.get_item(
        TableName=REQUESTS, Key=key, ProjectionExpression="nested.l[0], #b", ExpressionAttributeNames={"#b": "blob"}
    )
    for returns in ("NONE", "ALL_NEW", "ALL_OLD", "UPDATED_NEW", "UPDATED_OLD"):
        tables.update_item(
            TableName=REQUESTS,
            Key=key,
            UpdateExpression="ADD seq :one SET #b = :b",
            ExpressionAttributeNames={"#b": "blob"},
            ExpressionAttributeValues={":one": {"N": "1"}, ":b": {"B": b"\x02"}},
            ReturnValues=returns,
        )
    tables.query(
        TableName=REQUESTS,
        KeyConditionExpression="user_id = :u",
        ExpressionAttributeValues={":u": {"S": "zed"}},
        ReturnConsumedCapacity="INDEXES",
    )
    tables.query(
        TableName=REQUESTS,
        KeyConditionExpression="user_id = :u",
        ExpressionAttributeValues={":u": {"S": "u1"}},
        Select="COUNT",
    )
    tables.scan(TableName=EVENTS, Limit=5)
    tables.batch_get_item(RequestItems={REQUESTS: {"Keys": [key, {**key, "request_id": {"S": "nope"}}]}})
    tables.batch_write_item(
        RequestItems={EVENTS: [{"PutRequest": {"Item": {"request_key": {"S": "bw"}, "seq": {"N": "1"}}}}]},
        ReturnItemCollectionMetrics="SIZE",
    )
    tables.transact_get_items(TransactItems=[{"Get": {"TableName": REQUESTS, "Key": key}}])
    tables.transact_write_items(
        TransactItems=[
            {"Put": {"TableName": EVENTS, "Item": {"request_key": {"S": "tw"}, "seq": {"N": "1"}}}},
            {
                "Update": {
                    "TableName": REQUESTS,
                    "Key": key,
                    "UpdateExpression": "SET #s = :s",
                    "ExpressionAttributeNames": {"#s": "status"},
                    "ExpressionAttributeValues": {":s": {"S": "X"}},
                }
            },
        ]
    )
    tables.delete_item(TableName=REQUESTS, Key=key, ReturnValues="ALL_OLD")
    tables.delete_item(TableName=REQUESTS, Key=key)
    assert len(rendered) >= 20  # every call above but the errors and the description took the direct path
    before = len(rendered)
    with pytest.raises(tables.exceptions.ConditionalCheckFailedException):
        tables.put_item(TableName=REQUESTS, Item=item, ConditionExpression="attribute_exists(user_id)")
    with pytest.raises(tables.exceptions.ResourceNotFoundException):
        tables.get_item(TableName="no-such-table", Key=key)
    assert tables.describe_table(TableName=REQUESTS)["Table"]["TableName"] == REQUESTS
    assert len(rendered) == before


def test_a_result_that_is_not_plain_json_goes_through_moto_serializer() -> None:
    from decimal import Decimal

    assert moto_server._plain({"a": [1, None, {"b": None, "c": b"\x00"}], "d": None}) == {"a": [1, None, {"c": "AA=="}]}
    for odd in (Decimal("1"), object(), (1, 2)):
        assert moto_server._plain({"x": [odd]}) is moto_server._UNPLAIN
        assert moto_server._plain({"y": {"z": odd}}) is moto_server._UNPLAIN


def test_stream_records_rendered_directly_equal_moto_serializers(tables: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """The stream poller's GetShardIterator and GetRecords (new and old images, binaries, one timestamp per
    record) take the direct path, compared with moto's serializer (check mode); DescribeStream does not."""
    import datetime

    speed_up_dynamodb_responses(check=True)
    rendered: list[Any] = []
    real = moto_server._plain
    monkeypatch.setattr(moto_server, "_plain", lambda value: rendered.append(value) or real(value))
    key = {"user_id": {"S": "sam"}, "request_id": {"S": "s1"}}
    tables.put_item(TableName=REQUESTS, Item={**key, "status": {"S": "PENDING"}, "blob": {"B": b"\x00\x01"}})
    tables.update_item(
        TableName=REQUESTS, Key=key, UpdateExpression="SET #s = :s",
        ExpressionAttributeNames={"#s": "status"}, ExpressionAttributeValues={":s": {"S": "RUNNING"}},
    )  # fmt: skip
    tables.delete_item(TableName=REQUESTS, Key=key)
    # The classic endpoint: botocore's account-based stream endpoints are not intercepted by moto 5.2.5.
    streams = boto3.client(
        "dynamodbstreams", region_name="us-east-1", endpoint_url="https://streams.dynamodb.us-east-1.amazonaws.com"
    )
    arn = tables.describe_table(TableName=REQUESTS)["Table"]["LatestStreamArn"]
    shard = streams.describe_stream(StreamArn=arn)["StreamDescription"]["Shards"][0]["ShardId"]
    rendered.clear()
    iterator = streams.get_shard_iterator(StreamArn=arn, ShardId=shard, ShardIteratorType="TRIM_HORIZON")
    records = streams.get_records(ShardIterator=iterator["ShardIterator"], Limit=1000)["Records"]
    mine = [r for r in records if r["dynamodb"]["Keys"] == key]
    assert [r["eventName"] for r in mine] == ["INSERT", "MODIFY", "REMOVE"]
    assert mine[0]["dynamodb"]["NewImage"]["blob"]["B"] == b"\x00\x01"
    assert isinstance(mine[0]["dynamodb"]["ApproximateCreationDateTime"], datetime.datetime)
    # Both answered directly (and each compared with moto's rendering).
    tops = [sorted(v) for v in rendered if isinstance(v, dict) and ("ShardIterator" in v or "Records" in v)]
    assert tops == [["ShardIterator"], ["NextShardIterator", "Records"]]


def test_list_executions_rendered_directly_equal_moto_serializers(monkeypatch: pytest.MonkeyPatch) -> None:
    """Step Functions' ListExecutions (running and ended executions, a status filter, a page token) takes the
    direct path, each answer compared with moto's serializer (check mode)."""
    import json
    import time

    from moto import mock_aws

    speed_up_dynamodb_responses(check=True)
    rendered: list[Any] = []
    real = moto_server._plain
    monkeypatch.setattr(moto_server, "_plain", lambda value: rendered.append(value) or real(value))
    with mock_aws(config={"stepfunctions": {"execute_state_machine": True}}):
        sfn = boto3.client("stepfunctions", region_name="us-east-1")
        arns = {
            name: sfn.create_state_machine(
                name=name, definition=json.dumps(definition), roleArn="arn:aws:iam::123456789012:role/r"
            )["stateMachineArn"]
            for name, definition in {
                "ends": {"StartAt": "P", "States": {"P": {"Type": "Pass", "End": True}}},
                "waits": {"StartAt": "W", "States": {"W": {"Type": "Wait", "Seconds": 60, "End": True}}},
            }.items()
        }
        for i in range(3):
            sfn.start_execution(stateMachineArn=arns["ends"], name=f"e{i}")
        waiting = sfn.start_execution(stateMachineArn=arns["waits"], name="w")["executionArn"]
        deadline = time.monotonic() + 30
        while len(sfn.list_executions(stateMachineArn=arns["ends"], statusFilter="SUCCEEDED")["executions"]) < 3:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        rendered.clear()
        first = sfn.list_executions(stateMachineArn=arns["ends"], maxResults=2)
        rest = sfn.list_executions(stateMachineArn=arns["ends"], maxResults=2, nextToken=first["nextToken"])
        (running,) = sfn.list_executions(stateMachineArn=arns["waits"], statusFilter="RUNNING")["executions"]
        sfn.stop_execution(executionArn=waiting)
        while sfn.describe_execution(executionArn=waiting)["status"] == "RUNNING":
            assert time.monotonic() < deadline
            time.sleep(0.05)
        (stopped,) = sfn.list_executions(stateMachineArn=arns["waits"])["executions"]
    names = [e["name"] for e in first["executions"] + rest["executions"]]
    assert sorted(names) == ["e0", "e1", "e2"] and {e["status"] for e in first["executions"]} == {"SUCCEEDED"}
    assert running["executionArn"] == waiting and running["status"] == "RUNNING" and "stopDate" not in running
    assert stopped["status"] == "ABORTED" and stopped["stopDate"] >= stopped["startDate"]
    # All four answered directly (and each compared with moto's rendering).
    assert sum(1 for v in rendered if isinstance(v, dict) and "executions" in v) == 4


def test_dates_render_as_moto_serializer_writes_them() -> None:
    import datetime

    utc = datetime.UTC
    assert moto_server._plain({"t": datetime.datetime(2026, 12, 1, 13, 0, 0, tzinfo=utc)}) == {"t": 1796130000}
    at = datetime.datetime(2026, 12, 1, 13, 0, 0, 123987, tzinfo=utc)
    assert moto_server._plain({"t": at}) == {"t": 1796130000.123}  # truncated to milliseconds


def test_a_kept_update_expression_parse_is_never_changed_and_values_still_apply(tables: Any) -> None:
    """speed_up_dynamodb_updates keeps each parsed expression: the same expression with other values applies
    those values, the kept tree is the same after every use, and a bad expression raises every time."""
    from moto.dynamodb.exceptions import MockValidationException
    from moto.dynamodb.parsing.expressions import UpdateExpressionParser

    moto_server.speed_up_dynamodb_updates()
    moto_server.speed_up_dynamodb_updates()  # idempotent
    expression = "SET #s = :s, hits = if_not_exists(hits, :zero) + :one REMOVE gone"
    kept = UpdateExpressionParser.make(expression)
    assert UpdateExpressionParser.make(expression) is kept
    before = repr(_tree(kept))
    key = {"user_id": {"S": "kim"}, "request_id": {"S": "k1"}}
    for status, hits in (("A", "1"), ("B", "2"), ("C", "3")):
        attrs = tables.update_item(
            TableName=REQUESTS,
            Key=key,
            UpdateExpression=expression,
            ExpressionAttributeNames={"#s": "status"},
            ExpressionAttributeValues={":s": {"S": status}, ":zero": {"N": "0"}, ":one": {"N": "1"}},
            ReturnValues="ALL_NEW",
        )["Attributes"]
        assert attrs["status"] == {"S": status} and attrs["hits"] == {"N": hits}
    assert repr(_tree(kept)) == before
    for _ in range(2):
        with pytest.raises(MockValidationException):
            UpdateExpressionParser.make("SET = oops")
        with pytest.raises(tables.exceptions.ClientError):
            tables.update_item(TableName=REQUESTS, Key=key, UpdateExpression="SET = oops")


def _tree(node: Any) -> Any:
    """A parsed expression as nested tuples (type, children), for comparing before and after."""
    children = getattr(node, "children", None)
    if isinstance(children, list):
        return (type(node).__name__, tuple(_tree(c) for c in children))
    return (type(node).__name__, repr(node))


#: Filter expressions over the requests table: every token kind moto's lexer knows (comparators, functions,
#: IN, BETWEEN, AND/OR/NOT, parentheses, nested paths, names and values).
_CONDITIONS = (
    ("#s = :a", {":a": {"S": "RUNNING"}}),
    ("#s <> :a AND created_at >= :n", {":a": {"S": "PENDING"}, ":n": {"N": "101"}}),
    ("created_at BETWEEN :lo AND :hi OR workflow IN (:w1, :w2)",
     {":lo": {"N": "7"}, ":hi": {"N": "100"}, ":w1": {"S": "fanout"}, ":w2": {"S": "x"}}),
    ("NOT (attribute_exists(payload.b) AND begins_with(workflow, :p))", {":p": {"S": "te"}}),
    ("size(workflow) > :n AND contains(#s, :a) AND attribute_type(payload.n, :t)",
     {":n": {"N": "4"}, ":a": {"S": "ING"}, ":t": {"S": "N"}}),
    ("attribute_not_exists(nothing) AND (created_at < :n OR created_at > :n)", {":n": {"N": "101"}}),
)  # fmt: skip


def _scan(client: Any, expression: str, values: dict[str, Any]) -> list[Any]:
    names = {"#s": "status"} if "#s" in expression else {}
    out = client.scan(TableName=REQUESTS, FilterExpression=expression, ExpressionAttributeValues=values,
                      **({"ExpressionAttributeNames": names} if names else {}))  # fmt: skip
    return sorted(out["Items"], key=lambda i: (i["user_id"]["S"], i["request_id"]["S"]))


def test_kept_condition_tokens_answer_as_moto_lexing_each_time(tables: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """speed_up_dynamodb_conditions keeps each condition expression's tokens: every filter and conditional
    write answers as with moto's lexer, the same expression with other values applies those values, and a
    bad expression raises every time."""
    from moto.dynamodb.comparisons import ConditionExpressionParser

    moto_server.speed_up_dynamodb_conditions()
    moto_server.speed_up_dynamodb_conditions()  # idempotent
    fast = ConditionExpressionParser.__dict__["_lex_condition_expression"]
    assert fast._streamer_fast
    for expression, values in _CONDITIONS:
        twice = (_scan(tables, expression, values), _scan(tables, expression, values))
        monkeypatch.setattr(ConditionExpressionParser, "_lex_condition_expression", fast._streamer_original)
        own = _scan(tables, expression, values)
        monkeypatch.setattr(ConditionExpressionParser, "_lex_condition_expression", fast)
        assert twice[0] == twice[1] == own, expression
        assert own, f"{expression} matched nothing: the comparison would prove little"
    key = {"user_id": {"S": "kim"}, "request_id": {"S": "k1"}}
    tables.put_item(TableName=REQUESTS, Item={**key, "hits": {"N": "0"}})
    for seen, ok in (("0", True), ("0", False), ("1", True)):  # same expression, other values
        call = dict(TableName=REQUESTS, Key=key, UpdateExpression="SET hits = hits + :one",
                    ConditionExpression="hits = :seen", ExpressionAttributeValues={":one": {"N": "1"}, ":seen": {"N": seen}})  # fmt: skip
        if ok:
            tables.update_item(**call)
        else:
            with pytest.raises(tables.exceptions.ConditionalCheckFailedException):
                tables.update_item(**call)
    for _ in range(2):
        with pytest.raises(tables.exceptions.ClientError, match="Cannot parse condition starting at"):
            tables.scan(TableName=REQUESTS, FilterExpression="hits ! :x", ExpressionAttributeValues={":x": {"N": "1"}})


def test_moto_lists_its_own_package_once() -> None:
    from moto import backends

    moto_server.speed_up_dispatch()
    moto_server.speed_up_dispatch()  # idempotent
    fast = backends.list_of_moto_modules
    assert fast._streamer_fast  # type: ignore[attr-defined]
    assert list(fast()) == list(fast._streamer_original())  # type: ignore[attr-defined]
    assert {"dynamodb", "dynamodbstreams", "stepfunctions"} <= set(fast())


_STATE = {
    "payload": {"message": "hi", "steps": 3, "tags": ["a", "b", "c"], "nested": {"deep": [{"x": 1}, {"x": 2}]}},
    "request": {"user_id": "kim", "request_id": "r1"},
}
#: Paths of the kinds the shipped state machines and plugin authors' ASL use: fields, nested fields, indexes,
#: slices, wildcards, the root, and the extended parser's filters.
_PATHS = (
    "$",
    "$.payload",
    "$.payload.message",
    "$.request.user_id",
    "$.payload.tags[1]",
    "$.payload.tags[0:2]",
    "$.payload.tags[*]",
    "$.payload.nested.deep[*].x",
    "$.payload.nested.deep[?(@.x > 1)]",
)


def test_kept_json_paths_read_and_write_as_moto_parsing_each_time(monkeypatch: pytest.MonkeyPatch) -> None:
    """speed_up_sfn_paths keeps each JSONPath's parsed tree: every read (``extract_json``) and every
    ``ResultPath`` write answers as with a fresh parse, again and again, and a bad path raises every time."""
    import copy

    from jsonpath_ng.exceptions import JsonPathParserError
    from moto.stepfunctions.parser.asl.component.common.path import result_path
    from moto.stepfunctions.parser.asl.utils import json_path

    moto_server.speed_up_sfn_paths()
    moto_server.speed_up_sfn_paths()  # idempotent
    fast_read, fast_write = json_path.parse, result_path.parse
    assert fast_read._streamer_fast and fast_write._streamer_fast  # type: ignore[attr-defined]

    def reads() -> list[Any]:
        return [json_path.extract_json(path, copy.deepcopy(_STATE)) for path in _PATHS]

    def writes() -> list[Any]:
        paths = ("$.result", "$.payload.result", "$.request.user_id", "$.a.b.c")  # what ResultPath._eval_body does
        return [result_path.parse(path).update_or_create(copy.deepcopy(_STATE), {"ok": True}) for path in paths]

    kept = (reads(), reads(), writes(), writes())
    monkeypatch.setattr(json_path, "parse", fast_read._streamer_original)  # type: ignore[attr-defined]
    monkeypatch.setattr(result_path, "parse", fast_write._streamer_original)  # type: ignore[attr-defined]
    own = (reads(), writes())
    assert kept[0] == kept[1] == own[0]
    assert kept[2] == kept[3] == own[1]
    assert own[0][3] == "kim" and own[0][6] == ["a", "b", "c"] and own[0][8] == [{"x": 2}]
    monkeypatch.undo()
    for _ in range(2):
        with pytest.raises(JsonPathParserError, match="Parse error"):
            json_path.extract_json("$.payload[", _STATE)


#: Update expressions, each with its names and values, and whether the item exists first: ones that apply, and
#: ones each of moto's checks refuses — the checks of the expression alone (two SET clauses, overlapping paths, a
#: key attribute updated, through a name too) and the checks of the values and the item (a missing document
#: path, a type mismatch, an unused or missing value).
_UPDATES: tuple[tuple[str, dict[str, str], dict[str, Any], bool], ...] = (
    ("SET last_seq = if_not_exists(last_seq, :zero) + :one", {}, {":zero": {"N": "0"}, ":one": {"N": "1"}}, False),
    ("SET last_seq = if_not_exists(last_seq, :zero) + :one", {}, {":zero": {"N": "0"}, ":one": {"N": "1"}}, True),
    ("SET #s = :s, hits = if_not_exists(hits, :zero) + :one REMOVE gone", {"#s": "status"},
     {":s": {"S": "RUNNING"}, ":zero": {"N": "0"}, ":one": {"N": "1"}}, True),
    ("ADD hits :one SET #k = :s", {"#k": "workflow"}, {":one": {"N": "1"}, ":s": {"S": "echo"}}, True),
    ("SET #k = :s", {"#k": "workflow"}, {":s": {"S": "textstats"}}, True),  # passes: its checks are kept
    ("SET #k = :s", {"#k": "user_id"}, {":s": {"S": "mallory"}}, True),  # the same tree: a key this time
    ("SET #k = :s", {"#k": "request_id"}, {":s": {"S": "r"}}, True),
    ("SET user_id = :s", {}, {":s": {"S": "mallory"}}, True),
    ("SET a = :s SET b = :s", {}, {":s": {"S": "x"}}, True),
    ("SET a = :s, a = :t", {}, {":s": {"S": "x"}, ":t": {"S": "y"}}, True),
    ("SET a.b = :s", {}, {":s": {"S": "x"}}, True),
    ("SET hits = hits + :s", {}, {":s": {"S": "x"}}, True),
    ("SET hits = :s", {}, {":s": {"S": "x"}, ":unused": {"S": "y"}}, True),
    ("SET hits = :missing", {}, {":s": {"S": "x"}}, True),
)  # fmt: skip


def _apply_updates(client: Any, tag: str) -> list[Any]:
    """Each update twice, on an item of its own; what each answered (the item after it, or the error)."""
    out: list[Any] = []
    for i, (expression, names, values, exists) in enumerate(_UPDATES):
        key = {"user_id": {"S": "val"}, "request_id": {"S": f"{tag}-{i}"}}
        if exists:
            client.put_item(TableName=REQUESTS, Item={**key, "hits": {"N": "1"}, "gone": {"S": "x"}})
        for _ in range(2):
            args: dict[str, Any] = {"UpdateExpression": expression, "ExpressionAttributeValues": values}
            if names:
                args["ExpressionAttributeNames"] = names
            try:
                attrs = client.update_item(TableName=REQUESTS, Key=key, ReturnValues="ALL_NEW", **args)["Attributes"]
                out.append({k: v for k, v in attrs.items() if k != "request_id"})
            except client.exceptions.ClientError as exc:
                out.append((exc.response["Error"]["Code"], exc.response["Error"]["Message"]))
    return out


def test_kept_update_validation_answers_as_moto_validating_each_time(
    tables: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """speed_up_dynamodb_validation copies a kept tree from its pickle, skips the checks of the expression alone
    once they have passed for its names and the table's keys, and keeps each walker's processing map: every update
    answers as moto's own validation does (the same items, the same errors), and a check that refused once still
    refuses when the same tree comes with other names."""
    from moto.dynamodb.parsing.ast_nodes import DepthFirstTraverser
    from moto.dynamodb.parsing.validators import UpdateExpressionValidator

    moto_server.speed_up_dynamodb_updates()
    moto_server.speed_up_dynamodb_validation()
    moto_server.speed_up_dynamodb_validation()  # idempotent
    slots = (
        (UpdateExpressionValidator, "__init__"),
        (UpdateExpressionValidator, "validate"),
        (DepthFirstTraverser, "nodes_to_be_processed"),
        (DepthFirstTraverser, "process"),
    )
    fast = [owner.__dict__[name] for owner, name in slots]
    assert all(getattr(f, "_streamer_fast", False) for f in fast)
    with monkeypatch.context() as own:
        for (owner, name), f in zip(slots, fast, strict=True):
            own.setattr(owner, name, f._streamer_original)
        expected = _apply_updates(tables, "own")
    got = _apply_updates(tables, "kept")
    assert got == expected
    errors = [e[0] for e in got if isinstance(e, tuple)]
    assert len(errors) >= 14 and set(errors) == {"ValidationException"}  # every refusal above is still one
    assert isinstance(got[8], dict) and got[8]["workflow"] == {"S": "textstats"}  # "SET #k = :s" applied, then
    assert got[10] == got[11] and "Cannot update attribute user_id" in got[10][1]  # the same tree, a key's name
    assert got == _apply_updates(tables, "again")  # and again, with everything kept


def test_moto_request_ids_are_still_52_letters_and_digits() -> None:
    """speed_up_dispatch draws moto's request ids (``x-amzn-RequestId``) with one ``choices``: same length, same
    alphabet, not repeated."""
    import string

    from moto.moto_api._internal import mock_random
    from moto.moto_api._internal.moto_random import MotoRandom

    moto_server.speed_up_dispatch()
    assert getattr(MotoRandom.get_random_string, "_streamer_fast", False)  # the ids below are the patch's
    ids = [mock_random.get_random_string(length=52) for _ in range(200)]
    assert all(len(i) == 52 and set(i) <= set(string.ascii_letters + string.digits) for i in ids)
    assert len(set(ids)) == 200
    letters = mock_random.get_random_string(length=40, include_digits=False, lower_case=True)
    assert len(letters) == 40 and set(letters) <= set(string.ascii_lowercase)
