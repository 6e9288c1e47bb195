"""The requests table's stream → exactly one Step Functions execution per request.

The partial batch response (``ReportBatchItemFailures``; AWS Lambda Developer Guide, "Implementing partial batch
responses" for DynamoDB Streams): a record that fails is reported in ``batchItemFailures`` by its sequence number
and retried from there, the others are checkpointed; when every record failed the invocation fails, so the whole
batch is retried (what Powertools' ``BatchProcessor`` does, whose import alone costs ~80 ms of cold start —
docs/performance.md, "Cold starts"). Each record's log lines carry its
``request_id`` (and its trace subsegment the annotations); ``StreamRecords`` counts outcomes and
``StreamRecordsRetried`` the records reported for retry. A record given up on after the mapping's retries
goes to its on-failure destination, which no code of ours sees (docs/observability.md: the DLQ alarm).
"""

from __future__ import annotations

from typing import Any

from streamer import metrics
from streamer.events import RequestInsert, ended_in_batch
from streamer.handlers._runtime import get_logger, get_service, lambda_handler, request_scope, traced

logger = get_logger()


@traced  # one subsegment a record: its own annotations
def record_handler(record: dict[str, Any], ended: frozenset[tuple[str, str, str]] = frozenset()) -> str:
    event_id = record.get("eventID")
    insert = RequestInsert.from_record(record)
    if insert is not None and insert.incarnation_key in ended:
        # A later record of this batch shows the request ended (cancelled before we got here): start nothing.
        metrics.add(metrics.STREAM_RECORDS, outcome="skipped")
        logger.info("stream record", extra={"event_id": event_id, "outcome": "skipped"})
        return "skipped"
    if insert is None:
        metrics.add(metrics.STREAM_RECORDS, outcome="ignored")
        logger.info("stream record", extra={"event_id": event_id, "outcome": "ignored"})
        return "ignored"
    with request_scope(request_id=insert.request_id, workflow=insert.workflow):
        try:
            outcome = get_service().start(insert)
        except Exception:
            metrics.add(metrics.STREAM_RECORDS, outcome="failed")
            logger.exception("stream record failed; reported for retry", extra={"event_id": event_id})
            raise
        metrics.add(metrics.STREAM_RECORDS, outcome=outcome)
        logger.info("stream record", extra={"event_id": event_id, "outcome": outcome})
    return outcome


@lambda_handler
def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    records = event.get("Records") if isinstance(event, dict) else None
    if not isinstance(records, list):
        raise ValueError("not a DynamoDB Streams event: no Records list")
    ended = frozenset(ended_in_batch(records))
    failures: list[dict[str, Any]] = []
    first_error: Exception | None = None
    for record in records:
        try:
            record_handler(record if isinstance(record, dict) else {}, ended)
        except Exception as exc:  # reported for retry below; record_handler logged it
            first_error = first_error or exc
            dynamodb = record.get("dynamodb") if isinstance(record, dict) else None
            failures.append({"itemIdentifier": (dynamodb or {}).get("SequenceNumber")})
    if failures:
        # Every failed record is retried by the event source mapping (from batchItemFailures; or with its
        # whole batch when all failed and the invocation fails).
        metrics.add(metrics.STREAM_RECORDS_RETRIED, len(failures))
    if first_error is not None and len(failures) == len(records):
        raise first_error
    return {"batchItemFailures": failures}
