"""The cost model: its arithmetic on a fixed set of counts, DynamoDB's unit rules, and ``streamer cost``."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from streamer.cli import main
from streamer.cost import (
    PRICES,
    PRICES_AS_OF,
    Price,
    RequestCounts,
    break_even,
    cost_of,
    express_billed_seconds,
    item_size,
    read_units,
    write_units,
)

ROOT = Path(__file__).resolve().parents[2]


def counts() -> RequestCounts:
    return RequestCounts(
        workflow="w",
        ws_messages=5,
        connection_minutes=2.0,
        lambda_invocations={"A": 2},
        lambda_billed_ms={"A": 300.0},
        lambda_memory_mb={"A": 1024},
        state_transitions=4,
        execution_seconds=0.25,
        ddb_read_units=4,
        ddb_write_units=10,
        stream_reads=1,
        eventbridge_events=1,
    )


def test_standard_cost_of_a_fixed_count_set() -> None:
    c = cost_of(counts(), "STANDARD")
    by_item = {line.item: line.usd for line in c.lines}
    assert by_item["API Gateway WebSocket messages"] == pytest.approx(5e-6)
    assert by_item["API Gateway connection minutes"] == pytest.approx(0.5e-6)
    assert by_item["Lambda A: invocations"] == pytest.approx(0.4e-6)
    assert by_item["Lambda A: GB-seconds (1024 MB)"] == pytest.approx(0.3 * 0.0000133334)
    assert by_item["Step Functions state transitions"] == pytest.approx(100e-6)
    assert by_item["DynamoDB write request units"] == pytest.approx(6.25e-6)
    assert by_item["DynamoDB read request units"] == pytest.approx(0.5e-6)
    assert by_item["DynamoDB stream reads (Lambda trigger)"] == 0  # free for Lambda triggers
    assert by_item["EventBridge events (Step Functions status)"] == 0  # AWS service events: free
    total = 5e-6 + 0.5e-6 + 0.4e-6 + 0.3 * 0.0000133334 + 100e-6 + 6.25e-6 + 0.5e-6
    assert c.usd == pytest.approx(total)
    assert c.usd_per_million == pytest.approx(total * 1e6)
    assert c.as_dict()["usd_per_request"] == pytest.approx(total)


def test_express_cost_bills_the_execution_not_its_transitions() -> None:
    c = cost_of(counts(), "EXPRESS")
    by_item = {line.item: line.usd for line in c.lines}
    assert "Step Functions state transitions" not in by_item
    assert by_item["Step Functions Express executions"] == pytest.approx(1e-6)
    # 0.25 s is billed as 0.3 s, at 64 MB
    assert by_item["Step Functions Express GB-seconds (64 MB)"] == pytest.approx(0.3 * 64 / 1024 * 0.00001667)
    same = 5e-6 + 0.5e-6 + 0.4e-6 + 0.3 * 0.0000133334 + 6.25e-6 + 0.5e-6
    assert c.usd == pytest.approx(same + 1e-6 + 0.3 * 64 / 1024 * 0.00001667)


def test_break_even() -> None:
    be = break_even(counts())
    assert be.standard_sfn_usd == pytest.approx(100e-6)
    assert be.express_sfn_usd == pytest.approx(1e-6 + 0.3 * 64 / 1024 * 0.00001667)
    per_second = 64 / 1024 * 0.00001667
    assert be.express_cheaper_below_seconds == pytest.approx((100e-6 - 1e-6) / per_second)
    # At the break-even duration both cost the same.
    at = RequestCounts(workflow="w", state_transitions=4, execution_seconds=round(be.express_cheaper_below_seconds, 1))
    assert break_even(at).express_sfn_usd == pytest.approx(break_even(at).standard_sfn_usd, rel=2e-3)


def test_no_transitions_means_express_never_cheaper() -> None:
    assert break_even(RequestCounts(workflow="w")).express_cheaper_below_seconds == 0


def test_prices_can_be_replaced() -> None:
    prices = {**PRICES, "sfn_standard_transition": Price(1.0, "transition", "test")}
    assert cost_of(counts(), "STANDARD", prices).usd == pytest.approx(cost_of(counts(), "STANDARD").usd - 100e-6 + 4)


def test_every_price_names_its_source_and_the_date() -> None:
    assert PRICES_AS_OF
    for key, price in PRICES.items():
        assert price.source.startswith("https://aws.amazon.com/"), key
        assert price.usd >= 0 and price.unit, key


@pytest.mark.parametrize(("seconds", "billed"), [(0, 0.1), (0.05, 0.1), (0.1, 0.1), (0.1001, 0.2), (0.25, 0.3)])
def test_express_duration_is_billed_in_100_ms(seconds: float, billed: float) -> None:
    assert express_billed_seconds(seconds) == pytest.approx(billed)


def test_errors() -> None:
    with pytest.raises(ValueError, match="STANDARD or EXPRESS"):
        cost_of(counts(), "BOTH")  # type: ignore[arg-type]
    no_memory = counts()
    no_memory.lambda_memory_mb = {}
    with pytest.raises(ValueError, match="no memory size"):
        cost_of(no_memory)
    with pytest.raises(ValueError, match="unknown DynamoDB type"):
        item_size({"a": {"X": 1}})


def test_item_sizes_follow_dynamodbs_rules() -> None:
    assert item_size({"pk": {"S": "abc"}}) == 5
    assert item_size({"n": {"N": "123"}}) == 1 + 3  # name + (2 significant digits a byte, + 1)
    assert item_size({"n": {"N": "-1.50"}}) == 1 + 2
    assert item_size({"b": {"BOOL": True}, "z": {"NULL": True}}) == 4
    assert item_size({"m": {"M": {"k": {"S": "v"}}}}) == 1 + 3 + 1 + 1 + 1
    assert item_size({"l": {"L": [{"S": "ab"}, {"N": "1"}]}}) == 1 + 3 + (1 + 2) + (1 + 2)
    assert item_size({"s": {"SS": ["a", "bc"]}}) == 1 + 3
    assert item_size({"é": {"S": "é"}}) == 4  # UTF-8 bytes


def test_request_units() -> None:
    assert write_units(1) == 1 and write_units(1024) == 1 and write_units(1025) == 2
    assert write_units(100, transactional=True) == 2
    assert read_units(0) == 1 and read_units(4096) == 1 and read_units(4097) == 2
    assert read_units(100, consistent=False) == 0.5
    assert read_units(100, transactional=True) == 2


# ------------------------------------------------------------------------------------------ the command


def test_streamer_cost_echo_json() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "streamer.cli", "cost", "echo", "--payload", '{"message": "hi"}', "--json"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=180,
        check=True,
    )
    rep = json.loads(out.stdout)  # nothing but the report on stdout
    c = rep["counts"]
    assert rep["workflow"] == "echo" and rep["prices_as_of"] == PRICES_AS_OF
    assert c["aws_calls"]["stepfunctions.StartExecution"] == 1
    assert c["aws_calls"]["apigatewaymanagementapi.PostToConnection"] >= 2  # the ack and the result at least
    assert set(c["lambda_invocations"]) >= {"RouterFunction", "StreamRouterFunction", "StepRunnerFunction",
                                            "NotifyFunction"}  # fmt: skip
    assert c["lambda_memory_mb"]["StepRunnerFunction"] > 0
    assert c["state_transitions"] >= 2 and c["ddb_write_units"] >= 1 and c["ws_messages"] >= 3
    for kind in ("standard", "express"):
        assert rep[kind]["usd_per_million"] == pytest.approx(sum(x["usd"] for x in rep[kind]["lines"]) * 1e6)
    assert rep["break_even"]["express_cheaper_below_seconds"] > 0


def test_streamer_cost_prints_both_types(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["cost", "echo"]) == 0
    captured = capsys.readouterr()
    text = captured.out
    assert '"_aws"' not in captured.err  # the handlers' metric lines are not shown to the user
    assert "STANDARD:" in text and "EXPRESS:" in text and f"as of {PRICES_AS_OF}" in text
    assert "AWS calls by our handlers" in text and "per million requests" in text


@pytest.mark.parametrize(
    ("argv", "code", "message"),
    [
        (["cost", "echo", "--payload", "nope"], 2, "--payload is not JSON"),
        (["cost", "echo", "--payload", "[1]"], 2, "--payload must be a JSON object"),
        (["cost", "no-such-workflow"], 1, "no state machine definition"),
        (["cost", "echo", "--payload", '{"message": 5}'], 1, "stored no request"),
    ],
)
def test_streamer_cost_errors(argv: list[str], code: int, message: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == code
    assert message in capsys.readouterr().err
