"""The cost model: what one request costs on AWS, from a price table and the counts measured for it.

Pure arithmetic (no AWS, no I/O): :func:`cost_of` multiplies a :class:`RequestCounts` (what ``streamer cost``
measures by running the workflow once, see :mod:`streamer.cli.cost`) by :data:`PRICES`, for a Standard or an
Express state machine; :func:`break_even` says how long an execution may last before Express stops being
cheaper. DynamoDB request units are derived from item sizes by the rules of the DynamoDB Developer Guide
(:func:`item_size`, :func:`write_units`, :func:`read_units`).

**The prices are us-east-1 list prices as published on AWS's pricing pages to our knowledge on**
:data:`PRICES_AS_OF` **— this machine has no internet access, so they were not re-read from the pages that
day: verify them before relying on them.** No free tier is applied; data transfer and CloudWatch Logs are
left out (both depend on the account, not on the request).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Literal

__all__ = [
    "PRICES",
    "PRICES_AS_OF",
    "CostLine",
    "Price",
    "RequestCost",
    "RequestCounts",
    "break_even",
    "cost_of",
    "item_size",
    "read_units",
    "write_units",
]

PRICES_AS_OF = "2026-12-01"

WorkflowType = Literal["STANDARD", "EXPRESS"]


@dataclass(frozen=True)
class Price:
    """One list price: ``usd`` per ``unit``, from ``source``."""

    usd: float
    unit: str
    source: str
    note: str = ""


_APIGW = "https://aws.amazon.com/api-gateway/pricing/"
_LAMBDA = "https://aws.amazon.com/lambda/pricing/"
_SFN = "https://aws.amazon.com/step-functions/pricing/"
_DDB = "https://aws.amazon.com/dynamodb/pricing/on-demand/"
_EB = "https://aws.amazon.com/eventbridge/pricing/"

#: us-east-1, as of :data:`PRICES_AS_OF` (verify before relying on them).
PRICES: dict[str, Price] = {
    "apigw_message": Price(1.00 / 1e6, "WebSocket message", _APIGW,
                           "first 1 billion messages a month; metered in 32 KB increments"),
    "apigw_connection_minute": Price(0.25 / 1e6, "connection minute", _APIGW),
    "lambda_request": Price(0.20 / 1e6, "invocation", _LAMBDA),
    "lambda_gb_second_arm64": Price(0.0000133334, "GB-second (arm64)", _LAMBDA,
                                    "first 7.5 billion GB-s a month; duration rounded up to 1 ms"),
    "sfn_standard_transition": Price(0.025 / 1000, "state transition (Standard)", _SFN),
    "sfn_express_request": Price(1.00 / 1e6, "execution (Express)", _SFN),
    "sfn_express_gb_second": Price(0.00001667, "GB-second (Express)", _SFN,
                                   "first 1,000 GB-hours; billed in 100 ms and 64 MB increments"),
    "ddb_write_unit": Price(0.625 / 1e6, "write request unit (on-demand)", _DDB),
    "ddb_read_unit": Price(0.125 / 1e6, "read request unit (on-demand)", _DDB),
    "ddb_stream_read": Price(0.0, "stream read request (Lambda trigger)", _DDB,
                             "GetRecords calls by a Lambda event source mapping are free"),
    "eventbridge_event": Price(0.0, "AWS service event (default bus)", _EB,
                               "state-change events AWS services send to the default bus are free"),
}  # fmt: skip

#: Express execution memory is billed in 64 MB increments; our executions carry a few KB of state.
EXPRESS_MEMORY_MB = 64
#: Express duration is billed in 100 ms increments.
EXPRESS_BILLING_SECONDS = 0.1
#: A WebSocket message is metered in 32 KB increments (API Gateway pricing page).
WS_MESSAGE_BYTES = 32 * 1024


@dataclass
class RequestCounts:
    """What one request used, as measured (or given, in tests)."""

    workflow: str
    #: WebSocket messages, each already counted in 32 KB increments (in: the submit; out: ack, events, result).
    ws_messages: int = 0
    #: The request's share of its connection's minutes (submit → result, in minutes).
    connection_minutes: float = 0.0
    #: Per function: invocations, and billed milliseconds summed over them (each rounded up to 1 ms).
    lambda_invocations: dict[str, int] = field(default_factory=dict)
    lambda_billed_ms: dict[str, float] = field(default_factory=dict)
    #: Per function: configured memory (MB), from the template.
    lambda_memory_mb: dict[str, int] = field(default_factory=dict)
    #: Step Functions state transitions (Standard's unit) and the execution's duration (Express's unit).
    state_transitions: int = 0
    execution_seconds: float = 0.0
    ddb_read_units: float = 0.0
    ddb_write_units: float = 0.0
    stream_reads: int = 0
    eventbridge_events: int = 0
    #: Every AWS call our handlers made, ``"dynamodb.PutItem": n`` (informative, priced through the units).
    aws_calls: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass(frozen=True)
class CostLine:
    item: str
    quantity: float
    unit_usd: float
    usd: float


@dataclass(frozen=True)
class RequestCost:
    workflow: str
    workflow_type: WorkflowType
    lines: tuple[CostLine, ...]

    @property
    def usd(self) -> float:
        return sum(line.usd for line in self.lines)

    @property
    def usd_per_million(self) -> float:
        return self.usd * 1e6

    def as_dict(self) -> dict[str, Any]:
        return {
            "workflow": self.workflow,
            "workflow_type": self.workflow_type,
            "usd_per_request": self.usd,
            "usd_per_million": self.usd_per_million,
            "lines": [line.__dict__ for line in self.lines],
        }


def express_billed_seconds(seconds: float) -> float:
    """Express duration billing: rounded up to the next 100 ms (at least one increment)."""
    increments = max(1, math.ceil(round(seconds / EXPRESS_BILLING_SECONDS, 9)))
    return increments * EXPRESS_BILLING_SECONDS


def _line(item: str, quantity: float, price_key: str, prices: Mapping[str, Price]) -> CostLine:
    unit = prices[price_key].usd
    return CostLine(item, quantity, unit, quantity * unit)


def cost_of(
    counts: RequestCounts, workflow_type: WorkflowType = "STANDARD", prices: Mapping[str, Price] = PRICES
) -> RequestCost:
    """One request's cost, line by line, on a Standard or an Express state machine."""
    if workflow_type not in ("STANDARD", "EXPRESS"):
        raise ValueError(f"workflow_type must be STANDARD or EXPRESS, got {workflow_type!r}")
    lines = [
        _line("API Gateway WebSocket messages", counts.ws_messages, "apigw_message", prices),
        _line("API Gateway connection minutes", counts.connection_minutes, "apigw_connection_minute", prices),
    ]
    for fn in sorted(counts.lambda_invocations):
        n = counts.lambda_invocations[fn]
        memory = counts.lambda_memory_mb.get(fn)
        if memory is None:
            raise ValueError(f"no memory size for function {fn!r}")
        gb_s = counts.lambda_billed_ms.get(fn, 0.0) / 1000 * memory / 1024
        lines.append(_line(f"Lambda {fn}: invocations", n, "lambda_request", prices))
        lines.append(_line(f"Lambda {fn}: GB-seconds ({memory} MB)", gb_s, "lambda_gb_second_arm64", prices))
    if workflow_type == "STANDARD":
        lines.append(_line("Step Functions state transitions", counts.state_transitions, "sfn_standard_transition",
                           prices))  # fmt: skip
    else:
        gb_s = express_billed_seconds(counts.execution_seconds) * EXPRESS_MEMORY_MB / 1024
        lines.append(_line("Step Functions Express executions", 1, "sfn_express_request", prices))
        lines.append(_line(f"Step Functions Express GB-seconds ({EXPRESS_MEMORY_MB} MB)", gb_s,
                           "sfn_express_gb_second", prices))  # fmt: skip
    lines += [
        _line("DynamoDB write request units", counts.ddb_write_units, "ddb_write_unit", prices),
        _line("DynamoDB read request units", counts.ddb_read_units, "ddb_read_unit", prices),
        _line("DynamoDB stream reads (Lambda trigger)", counts.stream_reads, "ddb_stream_read", prices),
        _line("EventBridge events (Step Functions status)", counts.eventbridge_events, "eventbridge_event", prices),
    ]
    return RequestCost(counts.workflow, workflow_type, tuple(lines))


@dataclass(frozen=True)
class BreakEven:
    """Standard vs Express for one workflow's measured transitions."""

    standard_sfn_usd: float
    express_sfn_usd: float
    #: Express is cheaper while an execution lasts less than this (seconds; Express runs at most 300 s).
    express_cheaper_below_seconds: float

    def as_dict(self) -> dict[str, float]:
        return dict(self.__dict__)


def break_even(counts: RequestCounts, prices: Mapping[str, Price] = PRICES) -> BreakEven:
    """Only the Step Functions part differs between the two types; the rest of the request costs the same."""
    standard = counts.state_transitions * prices["sfn_standard_transition"].usd
    express = (prices["sfn_express_request"].usd + express_billed_seconds(counts.execution_seconds)
               * EXPRESS_MEMORY_MB / 1024 * prices["sfn_express_gb_second"].usd)  # fmt: skip
    per_second = EXPRESS_MEMORY_MB / 1024 * prices["sfn_express_gb_second"].usd
    below = max(0.0, (standard - prices["sfn_express_request"].usd) / per_second) if per_second else math.inf
    return BreakEven(standard, express, below)


# ----------------------------------------------------------------------------------- DynamoDB units


def _value_size(value: Mapping[str, Any]) -> int:
    """Bytes of one DynamoDB attribute value (wire form ``{"S": ...}``), per the Developer Guide's rules."""
    ((kind, v),) = value.items()
    if kind == "S":
        return len(str(v).encode("utf-8"))
    if kind == "N":
        digits = str(Decimal(str(v)).normalize()).lstrip("-").replace(".", "").lstrip("0") or "0"
        return (len(digits) + 1) // 2 + 1
    if kind == "B":
        return len(v) if isinstance(v, bytes | bytearray) else len(str(v))
    if kind in ("BOOL", "NULL"):
        return 1
    if kind in ("SS", "NS", "BS"):
        return sum(_value_size({kind[0]: x}) for x in v)
    if kind == "L":
        return 3 + sum(1 + _value_size(x) for x in v)
    if kind == "M":
        return 3 + sum(1 + len(k.encode("utf-8")) + _value_size(x) for k, x in v.items())
    raise ValueError(f"unknown DynamoDB type {kind!r}")


def item_size(item: Mapping[str, Mapping[str, Any]]) -> int:
    """An item's size in bytes: attribute names plus values (DynamoDB Developer Guide, "Item sizes")."""
    return sum(len(name.encode("utf-8")) + _value_size(value) for name, value in item.items())


def write_units(size: int, *, transactional: bool = False) -> int:
    """Write request units for one item of ``size`` bytes: 1 per started KB, doubled in a transaction."""
    units = max(1, math.ceil(size / 1024))
    return units * (2 if transactional else 1)


def read_units(size: int, *, consistent: bool = True, transactional: bool = False) -> float:
    """Read request units for ``size`` bytes read: 1 per started 4 KB (strongly consistent), half that when
    eventually consistent, doubled in a transaction. A read that finds nothing still costs the minimum."""
    units = float(max(1, math.ceil(size / 4096)))
    if transactional:
        return units * 2
    return units if consistent else units / 2
