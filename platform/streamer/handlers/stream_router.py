"""The requests table's stream → exactly one Step Functions execution per request.

Powertools ``BatchProcessor`` gives the partial batch response: a record that fails is reported in
``batchItemFailures`` and retried alone, the others are checkpointed. Each record's log lines carry its
``request_id`` (and its trace subsegment the annotations); ``StreamRecords`` counts outcomes and
``StreamRecordsRetried`` the records reported for retry. A record given up on after the mapping's retries
goes to its on-failure destination, which no code of ours sees (docs/observability.md: the DLQ alarm).
"""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.data_classes.dynamo_db_stream_event import DynamoDBRecord

from streamer import metrics
from streamer.events import RequestInsert, ended_in_batch
from streamer.handlers._runtime import get_logger, get_service, lambda_handler, request_scope, traced

logger = get_logger()
processor = BatchProcessor(event_type=EventType.DynamoDBStreams)


@traced  # one subsegment a record: its own annotations
def record_handler(record: DynamoDBRecord, ended: frozenset[tuple[str, str, str]] = frozenset()) -> str:
    insert = RequestInsert.from_record(record.raw_event)
    if insert is not None and insert.incarnation_key in ended:
        # A later record of this batch shows the request ended (cancelled before we got here): start nothing.
        metrics.add(metrics.STREAM_RECORDS, outcome="skipped")
        logger.info("stream record", extra={"event_id": record.event_id, "outcome": "skipped"})
        return "skipped"
    if insert is None:
        metrics.add(metrics.STREAM_RECORDS, outcome="ignored")
        logger.info("stream record", extra={"event_id": record.event_id, "outcome": "ignored"})
        return "ignored"
    with request_scope(request_id=insert.request_id, workflow=insert.workflow):
        try:
            outcome = get_service().start(insert)
        except Exception:
            metrics.add(metrics.STREAM_RECORDS, outcome="failed")
            logger.exception("stream record failed; reported for retry", extra={"event_id": record.event_id})
            raise
        metrics.add(metrics.STREAM_RECORDS, outcome=outcome)
        logger.info("stream record", extra={"event_id": record.event_id, "outcome": outcome})
    return outcome


@lambda_handler
def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    records = event.get("Records") if isinstance(event, dict) else None
    ended = frozenset(ended_in_batch(records if isinstance(records, list) else []))
    try:
        return dict(
            process_partial_response(
                event=event,
                record_handler=lambda record: record_handler(record, ended),
                processor=processor,
                context=context,
            )
        )
    finally:
        # Every failed record is retried by the event source mapping (alone, from batchItemFailures; or with
        # its whole batch when all failed and BatchProcessingError was raised).
        if processor.fail_messages:
            metrics.add(metrics.STREAM_RECORDS_RETRIED, len(processor.fail_messages))
