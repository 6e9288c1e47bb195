"""The DynamoDB Streams event source mapping, played locally.

On AWS, Lambda polls the requests table's stream and invokes the stream router with batches of records. Here
:class:`StreamPoller` does the same against moto's ``dynamodbstreams`` API:

* reads every shard from ``TRIM_HORIZON`` (or ``LATEST``), follows ``NextShardIterator`` and, once a shard is
  closed and drained, its child shards (a child is read only after its parent, as Lambda does);
* delivers batches of at most ``batch_size`` records, in order, in the Lambda DynamoDB event shape
  (``{"Records": [{"eventID", "eventName", "eventVersion": "1.1", "eventSource": "aws:dynamodb", "awsRegion",
  "dynamodb": {…, "SequenceNumber", "StreamViewType"}, "eventSourceARN"}]}``);
* honours partial batch responses (``{"batchItemFailures": [{"itemIdentifier": seq}]}``, with
  ``FunctionResponseTypes: [ReportBatchItemFailures]``): records before the lowest failed sequence number are
  checkpointed, delivery resumes at it. An identifier that is not in the batch fails the whole batch (as AWS);
* a failed batch (function error, or failed items) is retried with exponential backoff up to
  ``maximum_retry_attempts`` times (at most 10 locally: :data:`streamer.local.retry.STREAM_RETRIES`); then
  the records that still fail go to the :class:`OnFailureStore` (logged, kept in memory, appended to a
  JSON-lines file when configured) and are checkpointed. With
  ``bisect_batch_on_function_error`` a failing batch is halved before each retry, isolating a poison record.
  Nothing is ever skipped silently; delivery is at least once (a record may be delivered again after a
  failure, never lost).

* ``FilterCriteria`` patterns are matched by :mod:`streamer.local.patterns` (the EventBridge stand-in's matcher).

A transport error (the Lambda endpoint is restarting) does not consume a retry attempt: the batch waits.
Invocations go through :mod:`streamer.local.invoke`; everything about the mapping comes from
``streamer.deploy.template.stream_mappings``.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import logging
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from streamer.config import LOCAL_REGION
from streamer.local.invoke import Invoker, InvokeResult, error_summary
from streamer.local.lambda_endpoint import function_arn
from streamer.local.patterns import Pattern, compile_pattern, record_passes_filters
from streamer.local.retry import STREAM_RETRIES, RetryPolicy

__all__ = [
    "MappingConfig",
    "OnFailureStore",
    "StreamPoller",
    "lambda_record",
    "mappings_from_template",
]

log = logging.getLogger("streamer.local.streams")


@dataclass(frozen=True)
class MappingConfig:
    """One event source mapping: which table's stream feeds which function, and how."""

    function_name: str
    table_name: str
    batch_size: int = 100
    #: The template's value; -1 (AWS: "until the record expires") and anything above the local ceiling
    #: become :data:`streamer.local.retry.STREAM_RETRIES`'s ceiling.
    maximum_retry_attempts: int = -1
    bisect_batch_on_function_error: bool = False
    report_batch_item_failures: bool = False
    starting_position: str = "TRIM_HORIZON"
    maximum_batching_window_seconds: float = 0.0
    #: FilterCriteria patterns: a record matching none of them is checkpointed without an invocation.
    filters: tuple[Mapping[str, Any], ...] = ()
    #: -1 = no limit. An older record that fails is sent to the on-failure store without more retries.
    maximum_record_age_seconds: int = -1

    @property
    def retry_bound(self) -> int:
        return STREAM_RETRIES.retries(self.maximum_retry_attempts)


def mappings_from_template(template: dict[str, Any], table_names: Mapping[str, str]) -> list[MappingConfig]:
    """Every enabled DynamoDB stream mapping of the template (``streamer.deploy.template.stream_mappings``).

    ``table_names`` maps a table's logical id to its local name. Raises ``ValueError`` when a filter
    pattern is one AWS would refuse.
    """
    from streamer.deploy.template import stream_mappings

    out: list[MappingConfig] = []
    for m in stream_mappings(template):
        if not m.enabled:
            continue
        for pattern in m.filters:
            compile_pattern(pattern)
        out.append(
            MappingConfig(
                function_name=m.function,
                table_name=table_names.get(m.table, m.table),
                batch_size=m.batch_size,
                maximum_retry_attempts=m.maximum_retry_attempts,
                bisect_batch_on_function_error=m.bisect_batch_on_function_error,
                report_batch_item_failures="ReportBatchItemFailures" in m.function_response_types,
                starting_position=m.starting_position,
                maximum_batching_window_seconds=m.maximum_batching_window_seconds,
                filters=m.filters,
                maximum_record_age_seconds=m.maximum_record_age_seconds,
            )
        )
    return out


class OnFailureStore:
    """Where records go after their retries are exhausted: the log, memory, optionally a JSON-lines file."""

    def __init__(self, path: Path | str | None = None) -> None:
        self.path = Path(path) if path is not None else None
        self._lock = threading.Lock()
        self.entries: list[dict[str, Any]] = []

    def put(self, entry: dict[str, Any]) -> None:
        with self._lock:
            self.entries.append(entry)
            if self.path is not None:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                with self.path.open("a", encoding="utf-8") as fh:
                    fh.write(json.dumps(entry, default=str) + "\n")
        info = entry["DDBStreamBatchInfo"]
        log.error(
            "stream records sent to the on-failure store after %s attempts: %s..%s (%d records, %s)%s",
            entry["requestContext"]["approximateInvokeCount"],
            info["startSequenceNumber"],
            info["endSequenceNumber"],
            info["batchSize"],
            entry["requestContext"]["condition"],
            f" -> {self.path}" if self.path else "",
        )

    @property
    def records(self) -> list[dict[str, Any]]:
        with self._lock:
            return [r for e in self.entries for r in e["records"]]


def _jsonable(value: Any) -> Any:
    if isinstance(value, bytes | bytearray):
        return base64.b64encode(value).decode()
    if isinstance(value, dt.datetime):
        return value.timestamp()
    if isinstance(value, Mapping):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set):
        return [_jsonable(v) for v in value]
    return value


def lambda_record(raw: Mapping[str, Any], stream_arn: str, region: str) -> dict[str, Any]:
    """A ``GetRecords`` record (as boto3 returns it) → the record of a Lambda DynamoDB event."""
    ddb = dict(_jsonable(raw.get("dynamodb", {})))
    ddb.setdefault("ApproximateCreationDateTime", time.time())
    return {
        "eventID": raw.get("eventID"),
        "eventName": raw.get("eventName"),
        "eventVersion": "1.1",
        "eventSource": "aws:dynamodb",
        "awsRegion": raw.get("awsRegion") or region,
        "dynamodb": ddb,
        "eventSourceARN": stream_arn,
    }


def _seq(record: Mapping[str, Any]) -> int:
    return int(record["dynamodb"]["SequenceNumber"])


@dataclass
class _Shard:
    shard_id: str
    parent_id: str | None
    iterator: str | None = None
    buffer: list[dict[str, Any]] = field(default_factory=list)
    checkpoint: str | None = None  # last sequence number handled
    last_read: int = -1  # highest sequence number read into the buffer
    exhausted: bool = False  # the shard is closed and fully read
    attempts: int = 0  # failed attempts of the batch at the head of the buffer
    limit: int = 0  # current batch size (bisection shrinks it)
    retry_at: float = 0.0

    @property
    def done(self) -> bool:
        return self.exhausted and not self.buffer


class StreamPoller:
    """Poll one table's stream and deliver its records to one function. Thread-safe ``stop()``.

    ``dynamodb`` and ``streams`` are boto3 clients (``dynamodb`` / ``dynamodbstreams``); ``invoke`` is a
    :data:`Invoker` (normally :class:`HttpLambdaInvoker`).
    """

    def __init__(
        self,
        config: MappingConfig,
        *,
        dynamodb: Any,
        streams: Any,
        invoke: Invoker,
        on_failure: OnFailureStore | None = None,
        poll_interval: float = 0.1,
        retry: RetryPolicy = STREAM_RETRIES,
        region: str = LOCAL_REGION,
    ) -> None:
        self.config = config
        self.dynamodb = dynamodb
        self.streams = streams
        self.invoke = invoke
        self.on_failure = on_failure if on_failure is not None else OnFailureStore()
        self.poll_interval = poll_interval
        self.retry = retry
        self.region = region
        self._filters: tuple[Pattern, ...] = tuple(compile_pattern(f) for f in config.filters)
        self.stream_arn: str | None = None
        self._shards: dict[str, _Shard] = {}
        self._stop = threading.Event()
        self._wake = threading.Event()
        self.delivered = 0  # records checkpointed after a successful invocation
        self.filtered_out = 0  # records consumed without an invocation (FilterCriteria)
        self.invocations = 0

    # -- life cycle -------------------------------------------------------------------------------------

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()

    def wake(self) -> None:
        """Poll now instead of at the end of the idle wait: the table was just written (thread-safe).

        ``streamer local`` calls it after a successful write to the table by a function in its own process
        (:meth:`streamer.local.inprocess.InProcessInvoker.on_writes`): a submitted request's ``INSERT`` is read
        at once instead of up to ``poll_interval`` later. Writes from other processes wait for the next poll."""
        self._wake.set()

    def run(self) -> None:
        """Poll until :meth:`stop`. Errors are logged and retried; this never returns early on its own."""
        if self.config.retry_bound != self.config.maximum_retry_attempts:
            log.info(
                "%s: MaximumRetryAttempts %s; locally bounded to %d",
                self.config.function_name,
                self.config.maximum_retry_attempts,
                self.config.retry_bound,
            )
        while not self._stop.is_set():
            try:
                progressed = self.poll_once()
            except Exception:
                log.exception("stream poller for %s failed; retrying", self.config.table_name)
                progressed = False
            if not progressed:
                self._wake.wait(self.poll_interval)
            self._wake.clear()

    # -- one step ---------------------------------------------------------------------------------------

    def poll_once(self) -> bool:
        """Read and/or deliver once on every readable shard. ``True`` when something happened."""
        if self.stream_arn is None:
            desc = self.dynamodb.describe_table(TableName=self.config.table_name)["Table"]
            arn = desc.get("LatestStreamArn")
            if not arn:
                raise RuntimeError(f"table {self.config.table_name} has no stream")
            self.stream_arn = str(arn)
        if not self._shards or all(s.exhausted for s in self._shards.values()):
            self._discover_shards()
        progressed = False
        now = time.monotonic()
        for shard in list(self._shards.values()):
            if shard.done or self._stop.is_set():
                continue
            if shard.parent_id and shard.parent_id in self._shards and not self._shards[shard.parent_id].done:
                continue  # a child shard waits until its parent is drained
            if shard.retry_at > now:
                continue
            if len(shard.buffer) < self.config.batch_size and not shard.exhausted:
                progressed |= self._read(shard)
            if shard.buffer:
                progressed |= self._deliver(shard)
        return progressed

    def _discover_shards(self) -> None:
        assert self.stream_arn is not None
        kwargs: dict[str, Any] = {"StreamArn": self.stream_arn}
        while True:
            desc = self.streams.describe_stream(**kwargs)["StreamDescription"]
            for s in desc.get("Shards", []):
                sid = s["ShardId"]
                if sid not in self._shards:
                    self._shards[sid] = _Shard(
                        shard_id=sid, parent_id=s.get("ParentShardId"), limit=self.config.batch_size
                    )
            last = desc.get("LastEvaluatedShardId")
            if not last:
                break
            kwargs["ExclusiveStartShardId"] = last

    def _iterator(self, shard: _Shard) -> str:
        assert self.stream_arn is not None
        kwargs: dict[str, Any] = {"StreamArn": self.stream_arn, "ShardId": shard.shard_id}
        if shard.checkpoint is not None:
            kwargs.update(ShardIteratorType="AFTER_SEQUENCE_NUMBER", SequenceNumber=shard.checkpoint)
        elif shard.parent_id is None and self.config.starting_position == "LATEST":
            kwargs["ShardIteratorType"] = "LATEST"
        else:
            kwargs["ShardIteratorType"] = "TRIM_HORIZON"
        return str(self.streams.get_shard_iterator(**kwargs)["ShardIterator"])

    def _read(self, shard: _Shard) -> bool:
        if shard.iterator is None:
            shard.iterator = self._iterator(shard)
        try:
            resp = self.streams.get_records(ShardIterator=shard.iterator, Limit=1000)
        except Exception as exc:
            code = getattr(exc, "response", {}).get("Error", {}).get("Code")
            if code in ("ExpiredIteratorException", "TrimmedDataAccessException"):
                # Re-read from the checkpoint: drop what was buffered, it will be read again.
                log.info("shard %s: %s; re-reading after %s", shard.shard_id, code, shard.checkpoint)
                shard.buffer.clear()
                shard.iterator = None
                shard.last_read = int(shard.checkpoint) if shard.checkpoint else -1
                return True
            raise
        assert self.stream_arn is not None
        records = [lambda_record(r, self.stream_arn, self.region) for r in resp.get("Records", [])]
        fresh = [r for r in records if _seq(r) > shard.last_read]  # defensive: never buffer a record twice
        if fresh:
            shard.last_read = _seq(fresh[-1])
        wanted = [r for r in fresh if record_passes_filters(r, self._filters)]
        self.filtered_out += len(fresh) - len(wanted)
        if fresh and not wanted and not shard.buffer:
            # Everything read was filtered out: as on AWS, those records are consumed without an invocation.
            shard.checkpoint = fresh[-1]["dynamodb"]["SequenceNumber"]
        shard.buffer.extend(wanted)
        shard.iterator = resp.get("NextShardIterator")
        if shard.iterator is None:
            shard.exhausted = True
            log.debug("shard %s closed", shard.shard_id)
        return bool(fresh) or shard.exhausted

    # -- delivery ---------------------------------------------------------------------------------------

    def _deliver(self, shard: _Shard) -> bool:
        cfg = self.config
        if (
            cfg.maximum_batching_window_seconds > 0
            and len(shard.buffer) < cfg.batch_size
            and not shard.exhausted
            and time.time() - float(shard.buffer[0]["dynamodb"]["ApproximateCreationDateTime"])
            < cfg.maximum_batching_window_seconds
        ):
            return False
        batch = shard.buffer[: max(1, min(shard.limit or cfg.batch_size, cfg.batch_size))]
        result = self.invoke(cfg.function_name, {"Records": batch})
        self.invocations += 1
        if result.transport_error is not None:
            log.warning("stream batch for %s not delivered (%s); retrying", cfg.function_name, result.transport_error)
            shard.retry_at = time.monotonic() + self.retry.transport_wait
            return False

        failed = self._failed_records(batch, result)
        if not failed:
            self._checkpoint(shard, len(batch))
            self.delivered += len(batch)
            shard.attempts = 0
            shard.limit = cfg.batch_size
            return True

        # Records before the lowest failed one succeeded: checkpoint them.
        first_failed = min(_seq(r) for r in failed)
        ok_prefix = sum(1 for r in batch if _seq(r) < first_failed)
        if ok_prefix:
            self._checkpoint(shard, ok_prefix)
            self.delivered += ok_prefix
            batch = batch[ok_prefix:]
        whole_batch = not result.ok
        if whole_batch and cfg.bisect_batch_on_function_error and len(batch) > 1:
            # Halving isolates a poison record; as on AWS, a split does not use up a retry attempt.
            shard.limit = max(1, len(batch) // 2)
        else:
            shard.attempts += 1
        too_old = (
            cfg.maximum_record_age_seconds >= 0
            and time.time() - float(batch[0]["dynamodb"]["ApproximateCreationDateTime"])
            > cfg.maximum_record_age_seconds
        )
        if self.retry.gives_up(shard.attempts, cfg.maximum_retry_attempts) or too_old:
            self._give_up(shard, batch, failed, result, "RecordAgeExceeded" if too_old else "RetryAttemptsExhausted")
            return True
        delay = self.retry.delay(shard.attempts)
        shard.retry_at = time.monotonic() + delay
        log.warning(
            "%s: batch %s..%s failed (attempt %d of %d)%s; retrying from %s in %.2fs",
            cfg.function_name,
            batch[0]["dynamodb"]["SequenceNumber"],
            batch[-1]["dynamodb"]["SequenceNumber"],
            shard.attempts,
            self.retry.retries(cfg.maximum_retry_attempts) + 1,
            f": {error_summary(result.payload)}" if whole_batch else f": {len(failed)} item failure(s)",
            batch[0]["dynamodb"]["SequenceNumber"],
            delay,
        )
        return True

    def _failed_records(self, batch: Sequence[dict[str, Any]], result: InvokeResult) -> list[dict[str, Any]]:
        """The records to retry: all of them on a function error or an invalid response, else the reported."""
        if not result.ok:
            return list(batch)
        if not self.config.report_batch_item_failures:
            return []
        payload = result.payload
        if not isinstance(payload, Mapping):
            return []
        failures = payload.get("batchItemFailures")
        if not failures:
            return []
        by_seq = {r["dynamodb"]["SequenceNumber"]: r for r in batch}
        out: list[dict[str, Any]] = []
        for item in failures:
            ident = item.get("itemIdentifier") if isinstance(item, Mapping) else None
            if not isinstance(ident, str) or ident not in by_seq:
                log.warning("invalid batchItemFailures entry %r: the whole batch is retried", item)
                return list(batch)
            out.append(by_seq[ident])
        return out

    def _checkpoint(self, shard: _Shard, count: int) -> None:
        if count <= 0:
            return
        shard.checkpoint = shard.buffer[count - 1]["dynamodb"]["SequenceNumber"]
        del shard.buffer[:count]

    def _give_up(
        self,
        shard: _Shard,
        batch: list[dict[str, Any]],
        failed: list[dict[str, Any]],
        result: InvokeResult,
        condition: str,
    ) -> None:
        """Retries exhausted: the still-failing records go to the on-failure store and are checkpointed."""
        cfg = self.config
        assert self.stream_arn is not None
        first, last = failed[0]["dynamodb"], failed[-1]["dynamodb"]
        self.on_failure.put(
            {
                "requestContext": {
                    "requestId": f"local-{int(time.time() * 1000)}",
                    "functionArn": function_arn(cfg.function_name, self.region),
                    "condition": condition,
                    "approximateInvokeCount": shard.attempts,
                },
                "responseContext": {
                    "statusCode": 200,
                    "executedVersion": "$LATEST",
                    "functionError": None if result.ok else "Unhandled",
                },
                "version": "1.0",
                "timestamp": dt.datetime.now(dt.UTC).isoformat(),
                "DDBStreamBatchInfo": {
                    "shardId": shard.shard_id,
                    "startSequenceNumber": first["SequenceNumber"],
                    "endSequenceNumber": last["SequenceNumber"],
                    "approximateArrivalOfFirstRecord": first.get("ApproximateCreationDateTime"),
                    "approximateArrivalOfLastRecord": last.get("ApproximateCreationDateTime"),
                    "batchSize": len(failed),
                    "streamArn": self.stream_arn,
                },
                "error": error_summary(result.payload) if not result.ok else "batchItemFailures",
                "records": failed,
            }
        )
        # Records of the batch not reported failed were processed; all of it is checkpointed now.
        self._checkpoint(shard, len(batch))
        self.delivered += len(batch) - len(failed)
        shard.attempts = 0
        shard.limit = cfg.batch_size
        shard.retry_at = 0.0
