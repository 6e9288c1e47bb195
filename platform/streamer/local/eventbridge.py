"""EventBridge's "Step Functions Execution Status Change" events, played locally.

On AWS, Step Functions puts an event on the default bus whenever a Standard execution changes status, and
the template's ``AWS::Events::Rule`` s send the matching ones to their function targets. moto and AWS Step
Functions Local emit no such events, so :class:`ExecutionEventsPoller` produces them:

* the rules come from the template (``streamer.deploy.template.event_rules``): every enabled default-bus rule whose
  pattern can match ``source: aws.states`` / ``detail-type: Step Functions Execution Status Change``, with
  its intrinsics resolved to local values (:func:`status_change_rules`);
* every ``poll_interval`` it asks, per deployed state machine, for what changed since the last poll — not for
  the whole history, which grows with every request: ``ListExecutions`` (most recent first, as on AWS) down
  to the newest start date it saw the time before (less a quarter of a second), and ``ListExecutions`` with
  ``statusFilter=RUNNING``. An execution it saw running that is no longer running, or a new one that already
  ended, has changed status: it describes each one that reached a status the rules can match;
* it builds the event EventBridge would deliver (:func:`status_change_event`: the same shape, the input
  included unless it is too large, as on AWS), matches it against each rule's whole pattern
  (:mod:`streamer.local.patterns`, moto's matcher) and invokes the rule's targets through the Lambda Invoke
  API (:mod:`streamer.local.invoke`).

Each status change is delivered once per target. Executions that had already ended when the poller started
are not delivered (:meth:`ExecutionEventsPoller.prime`): a rule only sees events emitted after it exists. A
failed invocation (function error) is retried with exponential backoff up to the target's
``RetryPolicy.MaximumRetryAttempts``, bounded locally (:data:`streamer.local.retry.EVENT_RETRIES`); then it is logged
at ERROR and kept in :attr:`ExecutionEventsPoller.given_up`. A transport error (the Lambda endpoint is
restarting) does not use up an attempt.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import threading
import time
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from streamer.config import LOCAL_ACCOUNT, LOCAL_REGION
from streamer.local.invoke import Invoker, error_summary
from streamer.local.patterns import compile_pattern, matches
from streamer.local.retry import EVENT_RETRIES, RetryPolicy

__all__ = [
    "DETAIL_TYPE",
    "MAX_EVENT_DATA_BYTES",
    "SOURCE",
    "ExecutionEventsPoller",
    "GivenUp",
    "RuleConfig",
    "TargetConfig",
    "status_change_event",
    "status_change_rules",
]

log = logging.getLogger("streamer.local.eventbridge")

SOURCE = "aws.states"
DETAIL_TYPE = "Step Functions Execution Status Change"
#: Statuses Step Functions reports (``ListExecutions`` accepts them as ``statusFilter``).
_TERMINAL = ("SUCCEEDED", "FAILED", "TIMED_OUT", "ABORTED")
#: ``maxResults`` of the poller's newest-first ``ListExecutions``.
_NEWEST_PAGE = 5
#: How far before the newest start date seen the next poll lists again: moto dates an execution before it
#: adds it to the list, so under load one may appear after a newer one was listed (a thread switch apart).
_OVERLAP = dt.timedelta(seconds=0.25)
#: "If the combined escaped input and escaped output sent to EventBridge exceeds 248 KB, then the input
#: will be excluded" (https://docs.aws.amazon.com/step-functions/latest/dg/cw-events.html).
MAX_EVENT_DATA_BYTES = 248 * 1024


@dataclass(frozen=True)
class TargetConfig:
    """A function target; ``maximum_retry_attempts`` is its ``RetryPolicy`` value (``None``: EventBridge's
    default of 185), bounded locally by :data:`streamer.local.retry.EVENT_RETRIES`."""

    function_name: str
    maximum_retry_attempts: int | None = None

    @property
    def retry_bound(self) -> int:
        return EVENT_RETRIES.retries(self.maximum_retry_attempts)


@dataclass(frozen=True)
class RuleConfig:
    """One rule: its logical ID, its event pattern (intrinsics resolved) and its function targets."""

    name: str
    pattern: Mapping[str, Any]
    targets: tuple[TargetConfig, ...]

    def statuses(self) -> frozenset[str] | None:
        """The execution statuses the pattern can match; ``None`` when it does not restrict them to values."""
        wanted = (self.pattern.get("detail") or {}).get("status")
        if isinstance(wanted, list) and wanted and all(isinstance(s, str) for s in wanted):
            return frozenset(wanted)
        return None


def status_change_rules(template: dict[str, Any], refs: Mapping[str, Any]) -> list[RuleConfig]:
    """The template's rules that can receive execution status changes, resolved against ``refs``.

    ``refs`` are the local values of ``Ref`` / ``Fn::GetAtt`` / pseudo parameters (see
    ``streamer.local.plan.local_refs``). Raises ``ValueError`` when a pattern cannot be resolved or is one
    EventBridge would refuse.
    """
    from streamer.deploy.template import event_rules, resolve_intrinsics

    head = {"source": SOURCE, "detail-type": DETAIL_TYPE}
    out: list[RuleConfig] = []
    for logical_id, rule in event_rules(template).items():
        top = {k: rule.pattern[k] for k in head if k in rule.pattern}
        if not matches(top, head):
            continue
        try:
            pattern = resolve_intrinsics(rule.pattern, refs)
        except (KeyError, ValueError) as exc:
            raise ValueError(f"{logical_id}: event pattern not resolvable locally ({exc})") from exc
        try:
            compile_pattern(pattern)
        except ValueError as exc:
            raise ValueError(f"{logical_id}: {exc}") from exc
        targets = tuple(TargetConfig(t.function, t.maximum_retry_attempts) for t in rule.targets)
        out.append(RuleConfig(logical_id, pattern, targets))
    return out


def _millis(value: Any) -> Any:
    return int(value.timestamp() * 1000) if isinstance(value, dt.datetime) else value


def status_change_event(execution: Mapping[str, Any], *, account: str, region: str) -> dict[str, Any]:
    """The EventBridge event for a ``DescribeExecution`` result (as boto3 returns it).

    https://docs.aws.amazon.com/step-functions/latest/dg/eventbridge-integration.html: dates in epoch
    milliseconds; input and output as JSON strings, each left out (``…Details.included: false``) when too big.
    """
    text_in, text_out = execution.get("input"), execution.get("output")
    size_out = len(json.dumps(text_out)) if text_out is not None else 0
    out_included = size_out <= MAX_EVENT_DATA_BYTES
    size_in = len(json.dumps(text_in)) if text_in is not None else 0
    in_included = size_in + (size_out if out_included else 0) <= MAX_EVENT_DATA_BYTES
    stop = execution.get("stopDate")
    when = stop if isinstance(stop, dt.datetime) else dt.datetime.now(dt.UTC)
    arn = execution["executionArn"]
    return {
        "version": "0",
        "id": str(uuid.uuid4()),
        "detail-type": DETAIL_TYPE,
        "source": SOURCE,
        "account": account,
        "time": when.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "region": region,
        "resources": [arn],
        "detail": {
            "executionArn": arn,
            "stateMachineArn": execution["stateMachineArn"],
            "name": execution["name"],
            "status": execution["status"],
            "startDate": _millis(execution.get("startDate")),
            "stopDate": _millis(stop),
            "input": text_in if in_included else None,
            "output": text_out if out_included else None,
            "inputDetails": {"included": in_included},
            "outputDetails": {"included": out_included} if text_out is not None else None,
            "error": execution.get("error"),
            "cause": execution.get("cause"),
        },
    }


@dataclass
class _Delivery:
    rule: str
    target: TargetConfig
    event: dict[str, Any]
    attempts: int = 0  # failed invocations so far
    retry_at: float = 0.0

    @property
    def execution_arn(self) -> str:
        return str(self.event["detail"]["executionArn"])


@dataclass
class GivenUp:
    rule: str
    function_name: str
    event: dict[str, Any]
    attempts: int
    error: str


@dataclass
class _Stats:
    delivered: int = 0
    invocations: int = 0
    seen: int = 0


class ExecutionEventsPoller:
    """Watch the executions of ``state_machine_arns`` and deliver status-change events to the rules' targets.

    ``sfn`` is a boto3 ``stepfunctions`` client; ``invoke`` an :data:`~streamer.local.invoke.Invoker`
    (normally ``HttpLambdaInvoker``). Thread-safe ``stop()``; ``poll_once()`` for step-by-step tests.
    """

    def __init__(
        self,
        rules: Sequence[RuleConfig],
        *,
        sfn: Any,
        state_machine_arns: Iterable[str],
        invoke: Invoker,
        poll_interval: float = 0.5,
        retry: RetryPolicy = EVENT_RETRIES,
        account: str = LOCAL_ACCOUNT,
        region: str = LOCAL_REGION,
    ) -> None:
        self.rules = list(rules)
        self.sfn = sfn
        self.state_machine_arns = list(state_machine_arns)
        self.invoke = invoke
        self.poll_interval = poll_interval
        self.retry = retry
        self._patterns = {rule.name: compile_pattern(rule.pattern) for rule in self.rules}
        self.account = account
        self.region = region
        self.stats = _Stats()
        self.given_up: list[GivenUp] = []
        self._seen: set[tuple[str, str, str]] = set()
        self._pending: list[_Delivery] = []
        self._stop = threading.Event()
        self._primed = False
        wanted = [r.statuses() for r in self.rules]
        #: The end statuses some rule can match (None: any).
        self._wanted: frozenset[str] | None = None
        if all(w is not None for w in wanted):
            self._wanted = frozenset(s for s in _TERMINAL if any(w is not None and s in w for w in wanted))
        #: Per state machine: the executions running at the last poll, and the newest start date seen.
        self._running: dict[str, set[str]] = {arn: set() for arn in self.state_machine_arns}
        self._horizon: dict[str, dt.datetime | None] = dict.fromkeys(self.state_machine_arns)

    # -- life cycle -------------------------------------------------------------------------------------

    def stop(self) -> None:
        self._stop.set()

    def run(self) -> None:
        """Poll until :meth:`stop`; errors are logged and retried."""
        while not self._stop.is_set():
            try:
                self.poll_once()  # primes first
            except Exception:
                log.exception("execution status-change poller failed; retrying")
            self._stop.wait(self.poll_interval)

    def prime(self) -> None:
        """Remember the executions that have already ended: their status changes happened before the rules.
        The ones running now are watched (their end is delivered)."""
        for arn in self.state_machine_arns:
            for item in self._newest(arn):
                if item.get("status") in _TERMINAL:
                    self._seen.add(self._key(item))
            self._running[arn] = self._running_now(arn)
        self._primed = True

    # -- one step ---------------------------------------------------------------------------------------

    def poll_once(self) -> int:
        """Find executions that newly ended, queue their events, deliver what is due. Returns invocations."""
        if not self._primed:
            self.prime()
        for arn in self.state_machine_arns:
            for desc in self._ended(arn):
                if self._stop.is_set():
                    break
                self.stats.seen += 1
                event = status_change_event(desc, account=self.account, region=self.region)
                for rule in self.rules:
                    if self._patterns[rule.name].matches(event):
                        self._pending.extend(_Delivery(rule.name, t, event) for t in rule.targets)
        return self._deliver_due()

    def _ended(self, arn: str) -> list[dict[str, Any]]:
        """``DescribeExecution`` of each execution of ``arn`` that newly reached an end status a rule wants."""
        new = self._newest(arn)  # first: one that starts after this call is still running below, or new next time
        running = self._running_now(arn)
        ended: list[dict[str, Any]] = [e for e in new if e.get("status") in _TERMINAL]
        # Running last time (or new and running a moment ago) and not running now: it has ended meanwhile.
        watched = self._running[arn] | {e["executionArn"] for e in new if e.get("status") == "RUNNING"}
        gone = watched - running - {e["executionArn"] for e in ended}
        self._running[arn] = running
        described: list[dict[str, Any]] = []
        for item in ended + [{"executionArn": a} for a in sorted(gone)]:
            if "status" in item and (self._key(item) in self._seen or not self._matchable(item)):
                continue
            desc = self.sfn.describe_execution(executionArn=item["executionArn"])
            if desc.get("status") in _TERMINAL and self._wanted_key(desc):
                described.append(desc)
        return described

    def _matchable(self, item: Mapping[str, Any]) -> bool:
        return self._wanted is None or item.get("status") in self._wanted

    def _wanted_key(self, item: Mapping[str, Any]) -> bool:
        """True once per end (an execution, its status, its stop date) that some rule can match."""
        key = self._key(item)
        if key in self._seen:
            return False
        self._seen.add(key)
        return self._matchable(item)

    def _newest(self, arn: str) -> list[dict[str, Any]]:
        """The executions of ``arn`` started since the newest one seen before (less :data:`_OVERLAP`), most
        recent first; all of them the first time."""
        horizon = self._horizon[arn]
        since = None if horizon is None else horizon - _OVERLAP
        found: list[dict[str, Any]] = []
        # Small pages: the first usually reaches the horizon, and each execution listed costs the engine
        # (moto serialises each one: ~0.5 ms; a 100-item page was most of a poll's cost).
        pages = self.sfn.get_paginator("list_executions").paginate(
            stateMachineArn=arn, PaginationConfig={"PageSize": _NEWEST_PAGE}
        )
        for page in pages:
            for item in page.get("executions", []):
                if since is not None and item["startDate"] < since:
                    return self._advance(arn, found)
                found.append(item)
        return self._advance(arn, found)

    def _advance(self, arn: str, found: list[dict[str, Any]]) -> list[dict[str, Any]]:
        if found:
            newest = max(item["startDate"] for item in found)
            horizon = self._horizon[arn]
            self._horizon[arn] = newest if horizon is None else max(horizon, newest)
        return found

    def _running_now(self, arn: str) -> set[str]:
        paginator = self.sfn.get_paginator("list_executions")
        return {
            item["executionArn"]
            for page in paginator.paginate(stateMachineArn=arn, statusFilter="RUNNING")
            for item in page.get("executions", [])
        }

    @staticmethod
    def _key(item: Mapping[str, Any]) -> tuple[str, str, str]:
        # The stop date tells a redriven execution's second end from its first.
        return (str(item["executionArn"]), str(item.get("status")), str(item.get("stopDate")))

    def _deliver_due(self) -> int:
        now = time.monotonic()
        invocations = 0
        for delivery in list(self._pending):
            if delivery.retry_at > now or self._stop.is_set():
                continue
            invocations += 1
            self.stats.invocations += 1
            result = self.invoke(delivery.target.function_name, delivery.event)
            if result.ok:
                self._pending.remove(delivery)
                self.stats.delivered += 1
                log.info(
                    "%s %s -> %s: %s",
                    delivery.event["detail"]["status"],
                    delivery.execution_arn,
                    delivery.target.function_name,
                    error_summary(result.payload),
                )
                continue
            if result.transport_error is not None:
                log.warning("%s not reachable (%s); retrying", delivery.target.function_name, result.transport_error)
                delivery.retry_at = now + self.retry.transport_wait
                continue
            delivery.attempts += 1
            error = error_summary(result.payload)
            if self.retry.gives_up(delivery.attempts, delivery.target.maximum_retry_attempts):
                self._pending.remove(delivery)
                self.given_up.append(
                    GivenUp(delivery.rule, delivery.target.function_name, delivery.event, delivery.attempts, error)
                )
                log.error(
                    "%s: gave up delivering %s of %s to %s after %d attempts: %s",
                    delivery.rule,
                    delivery.event["detail"]["status"],
                    delivery.execution_arn,
                    delivery.target.function_name,
                    delivery.attempts,
                    error,
                )
                continue
            delay = self.retry.delay(delivery.attempts)
            delivery.retry_at = now + delay
            log.warning(
                "%s failed on %s of %s (attempt %d of %d): %s; retrying in %.2fs",
                delivery.target.function_name,
                delivery.event["detail"]["status"],
                delivery.execution_arn,
                delivery.attempts,
                self.retry.retries(delivery.target.maximum_retry_attempts) + 1,
                error,
                delay,
            )
        return invocations

    @property
    def pending(self) -> int:
        return len(self._pending)

    @property
    def primed(self) -> bool:
        return self._primed
