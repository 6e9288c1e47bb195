"""The reconciler's schedule, played locally.

On AWS an EventBridge schedule (``ReconcilerFunction``'s ``Schedule`` event in ``infra/template.yaml``,
``rate(5 minutes)``) invokes the reconciler function; moto runs no schedules, so :class:`ReconcilerTask`
invokes the same function through the Lambda Invoke API of ``streamer local`` (its handler, its environment
from the template: the same bounds) every ``interval`` seconds, with the scheduled event EventBridge sends
(https://docs.aws.amazon.com/eventbridge/latest/userguide/eb-run-lambda-schedule.html). Locally the interval
is shorter than on AWS (:data:`DEFAULT_INTERVAL`), so a stuck request is found soon after its bound.

A failed sweep is logged; the next one is the retry (the template sets ``MaximumRetryAttempts: 0``).
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import uuid
from typing import Any

from streamer.config import LOCAL_ACCOUNT, LOCAL_REGION
from streamer.local.invoke import Invoker, error_summary

__all__ = ["DEFAULT_INTERVAL", "FUNCTION", "ReconcilerTask", "scheduled_event"]

log = logging.getLogger("streamer.local.reconciler")

#: The template's reconciler function.
FUNCTION = "ReconcilerFunction"
#: Seconds between two local sweeps.
DEFAULT_INTERVAL = 30.0


def scheduled_event(rule: str = "ReconcilerFunctionSweep", now: dt.datetime | None = None) -> dict[str, Any]:
    """The event an EventBridge schedule delivers to its target."""
    t = (now or dt.datetime.now(dt.UTC)).strftime("%Y-%m-%dT%H:%M:%SZ")
    return {
        "version": "0",
        "id": str(uuid.uuid4()),
        "detail-type": "Scheduled Event",
        "source": "aws.events",
        "account": LOCAL_ACCOUNT,
        "time": t,
        "region": LOCAL_REGION,
        "resources": [f"arn:aws:events:{LOCAL_REGION}:{LOCAL_ACCOUNT}:rule/{rule}"],
        "detail": {},
    }


class ReconcilerTask:
    """Invoke the reconciler every ``interval`` seconds until :meth:`stop` (run it in a thread)."""

    def __init__(self, invoke: Invoker, *, interval: float = DEFAULT_INTERVAL, function: str = FUNCTION) -> None:
        self.invoke = invoke
        self.interval = interval
        self.function = function
        self.sweeps = 0
        self.failures = 0
        self.last: Any = None
        self._stop = threading.Event()

    def stop(self) -> None:
        self._stop.set()

    def run(self) -> None:
        while not self._stop.wait(self.interval):
            self.sweep()

    def sweep(self) -> bool:
        """One scheduled invocation; True when the function answered without error."""
        result = self.invoke(self.function, scheduled_event())
        self.sweeps += 1
        if not result.ok:
            self.failures += 1
            why = result.transport_error or error_summary(result.payload)
            log.warning("reconciler sweep failed: %s (the next sweep retries)", why)
            return False
        self.last = result.payload
        return True
