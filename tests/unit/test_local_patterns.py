"""The one event-pattern matcher of ``streamer local`` (moto's), against AWS's documented semantics.

Each case cites https://docs.aws.amazon.com/eventbridge/latest/userguide/eb-event-patterns-content-based-filtering.html
(and, for DynamoDB records, https://docs.aws.amazon.com/lambda/latest/dg/with-ddb-filtering.html, whose filter
criteria use the same syntax). The matcher used to be hand-written and got arrays, ``numeric`` on strings,
``anything-but`` with ``prefix`` and ``$or`` wrong, and let ``suffix`` match anything.
"""

from __future__ import annotations

from typing import Any

import pytest

from streamer.local.patterns import compile_pattern, matches, record_passes_filters

ARN = "arn:aws:states:us-east-1:123456789012:execution:streamer-echo:r-1"
EVENT: dict[str, Any] = {
    "source": "aws.states",
    "detail-type": "Step Functions Execution Status Change",
    "resources": [ARN],
    "detail": {
        "status": "FAILED",
        "name": "streamer-textstats",
        "stateMachineArn": "arn:aws:states:us-east-1:123456789012:stateMachine:streamer-textstats",
        "attempt": 3,
        "count": "5",
        "sourceIp": "10.0.0.7",
    },
}


def test_an_array_in_the_event_matches_when_any_element_matches() -> None:
    # "If the value in the event is an array, then the event pattern matches if the intersection of the event
    # pattern array and the event array is non-empty."
    assert matches({"resources": [ARN]}, EVENT)
    assert matches({"resources": ["arn:other", ARN]}, EVENT)
    assert not matches({"resources": ["arn:other"]}, EVENT)
    assert matches({"resources": [{"prefix": "arn:aws:states:"}]}, EVENT)


def test_numeric_matches_json_numbers_only() -> None:
    # "Numeric matching ... only works with values that are JSON numbers": the string "5" is not one.
    assert matches({"detail": {"attempt": [{"numeric": [">", 2, "<=", 3]}]}}, EVENT)
    assert not matches({"detail": {"attempt": [{"numeric": [">", 3]}]}}, EVENT)
    assert not matches({"detail": {"count": [{"numeric": [">", 4]}]}}, EVENT)
    # A DynamoDB stream record carries a number attribute as a string: numeric filters do not match it.
    record = {"dynamodb": {"NewImage": {"n": {"N": "5"}}}}
    assert not record_passes_filters(record, [{"dynamodb": {"NewImage": {"n": {"N": [{"numeric": [">", 4]}]}}}}])


def test_anything_but_with_values_and_with_a_prefix() -> None:
    assert matches({"detail": {"status": [{"anything-but": ["SUCCEEDED", "RUNNING"]}]}}, EVENT)
    assert not matches({"detail": {"status": [{"anything-but": "FAILED"}]}}, EVENT)
    # "anything-but" with "prefix": everything that does not start with it.
    assert not matches({"detail": {"name": [{"anything-but": {"prefix": "streamer-"}}]}}, EVENT)
    assert matches({"detail": {"name": [{"anything-but": {"prefix": "other-"}}]}}, EVENT)


def test_or_matches_when_any_branch_matches() -> None:
    either = {"$or": [{"detail": {"status": ["TIMED_OUT"]}}, {"detail": {"attempt": [{"numeric": [">", 2]}]}}]}
    assert matches(either, EVENT)
    neither = {"$or": [{"detail": {"status": ["TIMED_OUT"]}}, {"detail": {"attempt": [{"numeric": [">", 5]}]}}]}
    assert not matches(neither, EVENT)


def test_suffix_and_the_other_string_conditions() -> None:
    assert not matches({"detail": {"name": [{"suffix": "-echo"}]}}, EVENT)  # streamer-textstats
    assert matches({"detail": {"name": [{"suffix": "-textstats"}]}}, EVENT)
    assert matches({"detail": {"name": [{"equals-ignore-case": "STREAMER-TEXTSTATS"}]}}, EVENT)
    assert not matches({"detail": {"name": [{"equals-ignore-case": "streamer-echo"}]}}, EVENT)
    assert matches({"detail": {"stateMachineArn": [{"wildcard": "arn:aws:states:*:stateMachine:streamer-*"}]}}, EVENT)
    assert not matches({"detail": {"stateMachineArn": [{"wildcard": "*:stateMachine:other-*"}]}}, EVENT)
    assert matches({"detail": {"sourceIp": [{"cidr": "10.0.0.0/24"}]}}, EVENT)
    assert not matches({"detail": {"sourceIp": [{"cidr": "10.0.1.0/24"}]}}, EVENT)


def test_exists_and_exact_values() -> None:
    assert matches({"detail": {"error": [{"exists": False}]}}, EVENT)
    assert not matches({"detail": {"status": [{"exists": False}]}}, EVENT)
    assert matches({"source": ["aws.states"], "detail": {"status": ["FAILED", "ABORTED"]}}, EVENT)
    assert not matches({"source": ["aws.s3"]}, EVENT)
    assert matches({}, EVENT)  # an empty pattern: every event


def test_filters_are_or_ed_and_none_lets_everything_through() -> None:
    rec = {"eventName": "INSERT"}
    assert record_passes_filters(rec, [])
    assert record_passes_filters(rec, [{"eventName": ["MODIFY"]}, {"eventName": ["INSERT"]}])
    assert record_passes_filters(rec, [compile_pattern({"eventName": ["INSERT"]})])
    assert not record_passes_filters(rec, [{"eventName": ["MODIFY"]}])


@pytest.mark.parametrize(
    ("pattern", "reason"),
    [
        ({"source": "aws.states"}, "must be an object or an array"),  # values must be arrays
        ({"source": []}, "Empty arrays are not allowed"),
        # moto would let an unknown condition match every event; AWS refuses the rule (our wrap).
        ({"detail": {"name": [{"prefx": "streamer-"}]}}, "unsupported condition"),
        ({"detail": {"name": [{"prefix": "a", "suffix": "b"}]}}, "unsupported condition"),
        ({"$or": {"source": ["x"]}}, r"\$or takes a list"),
    ],
)
def test_patterns_aws_refuses_are_refused(pattern: dict[str, Any], reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        compile_pattern(pattern)
