"""The requests table's stream → exactly one Step Functions execution per request.

Powertools ``BatchProcessor`` gives the partial batch response: a record that fails is reported in
``batchItemFailures`` and retried alone, the others are checkpointed.
"""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.data_classes.dynamo_db_stream_event import DynamoDBRecord

from streamer.events import RequestInsert, ended_in_batch
from streamer.handlers._runtime import get_logger, get_service, lambda_handler

logger = get_logger()
processor = BatchProcessor(event_type=EventType.DynamoDBStreams)


def record_handler(record: DynamoDBRecord, ended: frozenset[tuple[str, str, str]] = frozenset()) -> str:
    insert = RequestInsert.from_record(record.raw_event)
    if insert is not None and insert.incarnation_key in ended:
        # A later record of this batch shows the request ended (cancelled before we got here): start nothing.
        outcome = "skipped"
    else:
        outcome = get_service().start(insert) if insert is not None else "ignored"
    logger.info("stream record", extra={"event_id": record.event_id, "outcome": outcome})
    return outcome


@lambda_handler
def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    records = event.get("Records") if isinstance(event, dict) else None
    ended = frozenset(ended_in_batch(records if isinstance(records, list) else []))
    return dict(
        process_partial_response(
            event=event,
            record_handler=lambda record: record_handler(record, ended),
            processor=processor,
            context=context,
        )
    )
