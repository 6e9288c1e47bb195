"""``python -m benchmarks.sdk_floor`` runs and its arithmetic holds (no speed is asserted: figures are for humans)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from benchmarks import sdk_floor  # noqa: E402 - the repository root holds the benchmarks package


def test_every_shape_is_measured_against_the_stub_for_both_clients() -> None:
    figures = sdk_floor.measure(rounds=1, calls=3)
    assert set(figures) == set(sdk_floor.SHAPES)
    for f in figures.values():
        assert f["sdk_ms"] > 0 and f["raw_ms"] > 0
        assert f["ratio"] == pytest.approx(f["sdk_ms"] / f["raw_ms"])


def test_the_stub_answers_what_the_clients_parse() -> None:
    """The boto3 calls succeed against the stub, so the figure is a whole call (parse included), not an error."""
    import boto3

    with sdk_floor.Stub() as url:
        for shape in sdk_floor.SHAPES.values():
            client = boto3.client(shape.service, endpoint_url=url)  # type: ignore[call-overload]
            try:
                out = getattr(client, shape.operation)(**shape.params)
            finally:
                client.close()
            assert out["ResponseMetadata"]["HTTPStatusCode"] == 200


def test_the_ceilings_follow_from_the_per_call_cost() -> None:
    per_call = {name: {"sdk_ms": 2.0, "raw_ms": 0.5, "ratio": 4.0} for name in sdk_floor.SHAPES}
    c = sdk_floor.ceilings(per_call, {"dynamodb:UpdateItem": 5, "dynamodb:PutItem": 3, "dynamodb:Query": 2,
                                      "stepfunctions:StartExecution": 1,
                                      "apigatewaymanagementapi:PostToConnection": 3}, cores=2)  # fmt: skip
    assert c.connect_sdk_ms == 6.0  # 2 quota writes + the connection's put
    assert c.connect_one_core == pytest.approx(1000 / 6)
    assert c.connect_all_cores == pytest.approx(2000 / 6)
    assert (c.echo_calls, c.echo_sdk_ms, c.echo_all_cores) == (14, 28.0, pytest.approx(2000 / 28))
    # 100 requests, an event every 3 s each: 33.3 events/s, each 3 DynamoDB calls + 20 pushes of 2 ms.
    assert c.noisy_cores == pytest.approx(100 / 3 * 23 * 2 / 1000)


def test_moto_answers_every_dynamodb_shape_in_the_local_stacks_app() -> None:
    """Each DynamoDB shape is answered 200 by moto as ``streamer local`` runs it (a failed call would raise)."""
    figures = sdk_floor.moto_per_call(rounds=2, calls=3)
    assert set(figures) == set(sdk_floor.MOTO_SHAPES) == {"dynamodb:PutItem", "dynamodb:UpdateItem", "dynamodb:Query"}
    assert all(ms > 0 for ms in figures.values())


def test_a_failed_moto_measurement_is_an_error_at_once_not_a_wait() -> None:
    """The child raises (no call per round: a division by zero); the parent says so as soon as it has ended
    (waiting on the queue alone, it would sit out its timeout, longer than this test's)."""
    with pytest.raises(RuntimeError, match="ended without figures"):
        sdk_floor.moto_per_call(rounds=1, calls=0)


def test_the_ceilings_with_moto_add_its_cost_to_the_dynamodb_calls_only() -> None:
    per_call = {name: {"sdk_ms": 2.0, "raw_ms": 0.5, "ratio": 4.0} for name in sdk_floor.SHAPES}
    echo = {"dynamodb:UpdateItem": 5, "dynamodb:PutItem": 3, "dynamodb:Query": 2, "stepfunctions:StartExecution": 1,
            "apigatewaymanagementapi:PostToConnection": 3}  # fmt: skip
    moto = {"dynamodb:PutItem": 1.0, "dynamodb:UpdateItem": 3.0, "dynamodb:Query": 2.0}
    c = sdk_floor.ceilings(per_call, echo, cores=2, moto=moto)
    assert c.connect_moto_ms == 6.0 + 2 * 3.0 + 1.0  # the SDK's 6 ms, 2 quota writes and the put in moto
    assert c.connect_moto_all_cores == pytest.approx(2000 / 13)
    assert c.echo_moto_ms == 28.0 + 5 * 3.0 + 3 * 1.0 + 2 * 2.0  # the push and the start are not moto's DynamoDB
    assert c.echo_moto_all_cores == pytest.approx(2000 / 50)
    assert sdk_floor.ceilings(per_call, echo, cores=2).echo_moto_ms is None


def test_echo_calls_are_counted_now_and_each_has_a_measured_shape() -> None:
    """The echo mix comes from benchmarks.aws_calls in this run; an operation without a shape would be missed."""
    calls = sdk_floor.echo_calls()
    assert set(calls) <= set(sdk_floor.SHAPES)
    assert sum(calls.values()) == 14


def test_the_command_prints_the_table_and_the_ceilings() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.sdk_floor", "--rounds", "1", "--calls", "3", "--json"],
        cwd=ROOT, capture_output=True, text=True, timeout=300, check=True,
    )  # fmt: skip
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert set(out["per_call"]) == set(sdk_floor.SHAPES) and set(out["moto_per_call"]) == set(sdk_floor.MOTO_SHAPES)
    assert out["ceilings"]["echo_calls"] == 14 and out["baselines"] is None
    assert out["ceilings"]["echo_moto_ms"] > out["ceilings"]["echo_sdk_ms"]
    text = subprocess.run(
        [sys.executable, "-m", "benchmarks.sdk_floor", "--rounds", "1", "--calls", "3"],
        cwd=ROOT, capture_output=True, text=True, timeout=300, check=True,
    ).stdout  # fmt: skip
    assert "boto3 CPU ms" in text and "connect (a new user: 3 calls)" in text
    assert "requests/s on all" in text and "cores of SDK CPU" in text
    assert "moto CPU ms" in text and "with moto's DynamoDB answering (no socket): connect" in text
