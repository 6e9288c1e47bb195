"""The stream router's own partial batch response (no Powertools BatchProcessor: ~80 ms of cold start)."""

from __future__ import annotations

from typing import Any

import pytest

from streamer.handlers import stream_router


def _record(seq: str, name: str = "INSERT") -> dict[str, Any]:
    # An INSERT without keys cannot be read as a request: it fails, as a poison record would.
    return {"eventID": seq, "eventName": name, "eventSource": "aws:dynamodb",
            "dynamodb": {"Keys": {}, "SequenceNumber": seq}}  # fmt: skip


def test_a_failed_record_is_reported_by_its_sequence_number() -> None:
    out = stream_router.handler({"Records": [_record("41", "MODIFY"), _record("42"), _record("43", "REMOVE")]}, None)
    assert out == {"batchItemFailures": [{"itemIdentifier": "42"}]}


def test_nothing_failed_reports_nothing() -> None:
    assert stream_router.handler({"Records": [_record("1", "MODIFY")]}, None) == {"batchItemFailures": []}
    assert stream_router.handler({"Records": []}, None) == {"batchItemFailures": []}


def test_when_every_record_fails_the_invocation_fails() -> None:
    # Lambda then retries the whole batch (as with Powertools' BatchProcessingError).
    with pytest.raises(ValueError) as raised:  # the first record's own error
        stream_router.handler({"Records": [_record("7"), _record("8")]}, None)
    assert "no Records list" not in str(raised.value)


@pytest.mark.parametrize("event", [{}, {"Records": "x"}, []])
def test_an_event_without_records_is_refused(event: Any) -> None:
    with pytest.raises(ValueError, match="no Records list"):
        stream_router.handler(event, None)
