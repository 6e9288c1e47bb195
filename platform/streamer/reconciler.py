"""The reconciler: no request stays PENDING or RUNNING for ever.

Every accepted request must reach exactly one terminal event. Two paths normally get it there — the stream
router starts the execution, the workflow's notify task (or, when the execution ends outside it, the
EventBridge status-change rule) ends the request — and either can fail for good: a stream record the event
source mapping gave up on leaves a request PENDING; an execution that ended while both the notify task and
the status-change delivery failed leaves it RUNNING. The reconciler runs on a schedule (``ReconcilerFunction``
in ``infra/template.yaml``, every 5 minutes; a periodic task in ``streamer local``) and, for each request that
has not ended and is older than a bound:

* PENDING for ``reconcile_pending_after_seconds``: re-driven through ``RequestService.start`` — the stream
  router's own path, so it names the same execution and never starts a second one; a request that still
  cannot be started after ``reconcile_give_up_after_seconds`` ends ``INTERNAL_ERROR``;
* RUNNING with no activity (``updated_at``: its last event or status change) for
  ``reconcile_running_after_seconds``: its execution is described; one that ended gives the request its
  mapped terminal event (``terminal_of``), one that does not exist ends it ``INTERNAL_ERROR``, one still
  running past ``reconcile_give_up_after_seconds`` is stopped and the request ends ``TIMED_OUT``/``TIMEOUT``.

Every end goes through the conditional terminal write, so a reconciler racing the normal path can only add
the terminal event if nothing else did. Finding the candidates reads no ended request: only requests that
have not ended carry ``open_shard``, the hash key of the sparse GSI ``by_open`` (range ``created_at``), one
Query per shard (DynamoDB writes an item to a sparse index only when it has the index key:
https://docs.aws.amazon.com/amazondynamodb/latest/developerguide/bp-indexes-general-sparse-indexes.html).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from streamer.protocol import RequestStatus
from streamer.service import RequestService

__all__ = ["Reconciler", "SweepReport"]

logger = logging.getLogger(__name__)


@dataclass
class SweepReport:
    """What one sweep did: outcome → count (``redriven:started``, ``ended``, ``running``, ``young`` …)."""

    examined: int = 0
    errors: int = 0
    outcomes: dict[str, int] = field(default_factory=dict)

    def count(self, outcome: str) -> None:
        self.outcomes[outcome] = self.outcomes.get(outcome, 0) + 1

    def as_dict(self) -> dict[str, object]:
        return {"examined": self.examined, "errors": self.errors, "outcomes": dict(sorted(self.outcomes.items()))}


class Reconciler:
    def __init__(
        self,
        service: RequestService,
        *,
        pending_after: int | None = None,
        running_after: int | None = None,
        give_up_after: int | None = None,
    ) -> None:
        s = service.settings
        self.service = service
        self.pending_after = s.reconcile_pending_after_seconds if pending_after is None else pending_after
        self.running_after = s.reconcile_running_after_seconds if running_after is None else running_after
        self.give_up_after = s.reconcile_give_up_after_seconds if give_up_after is None else give_up_after

    def sweep(self) -> SweepReport:
        """One pass over every request that has not ended and is older than the smaller bound. A failure on
        one request is logged and counted; the others are still handled (the next sweep retries it)."""
        report = SweepReport()
        now = self.service.now()
        cutoff = now - min(self.pending_after, self.running_after)
        for user_id, request_id in self.service.open_requests(cutoff + 1):
            report.examined += 1
            try:
                report.count(self.reconcile(user_id, request_id, now))
            except Exception:
                report.errors += 1
                logger.exception("reconciling a request failed", extra={"request_id": request_id})
        if report.examined:
            logger.info("reconciler sweep", extra=report.as_dict())
        return report

    def reconcile(self, user_id: str, request_id: str, now: int) -> str:
        """Handle one candidate (read again, consistently: the index is eventually consistent)."""
        req = self.service.request(user_id, request_id)
        if req is None or req.status.terminal:
            return "gone"
        give_up = req.created_at <= now - self.give_up_after
        if req.status is RequestStatus.PENDING:
            if req.created_at > now - self.pending_after:
                return "young"
            return self.service.redrive(req, give_up=give_up)
        if req.updated_at > now - self.running_after and not give_up:
            return "young"
        return self.service.settle(req, hard_timeout=give_up)
