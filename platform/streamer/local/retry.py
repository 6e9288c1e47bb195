"""One retry / give-up policy for what ``streamer local`` delivers on AWS's behalf.

Two local pieces invoke functions the way an AWS service would and retry a failing invocation: the stream
poller (the DynamoDB event source mapping: ``MaximumRetryAttempts``, -1 meaning "until the record expires",
https://docs.aws.amazon.com/lambda/latest/dg/with-ddb.html#services-dynamodb-errors) and the EventBridge
stand-in (a target's ``RetryPolicy``, default 185 attempts over 24 hours,
https://docs.aws.amazon.com/eventbridge/latest/userguide/eb-rule-retry-policy.html). On one machine those
AWS bounds would wedge a shard or hide a broken handler for a day, so each has a local ceiling, and both
back off the same way:

* a function error uses up one retry; after ``retries(configured)`` retries the delivery is given up on (the
  stream poller sends the records to its on-failure store, the EventBridge stand-in logs and keeps the event);
* the wait before retry ``n`` (1-based) is ``min(backoff_max, backoff_base * 2 ** (n - 1))``;
* a transport error (the Lambda endpoint restarting: the function never ran) uses up nothing and waits
  ``backoff_max`` before trying again.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

__all__ = ["BACKOFF_BASE", "BACKOFF_MAX", "EVENT_RETRIES", "STREAM_RETRIES", "RetryPolicy"]

BACKOFF_BASE = 0.2
BACKOFF_MAX = 5.0


@dataclass(frozen=True)
class RetryPolicy:
    """At most ``ceiling`` retries locally, whatever AWS would allow; exponential backoff."""

    ceiling: int
    backoff_base: float = BACKOFF_BASE
    backoff_max: float = BACKOFF_MAX

    def retries(self, configured: int | None) -> int:
        """The retries a delivery gets: the template's setting (``None`` or negative: AWS's default or
        "unbounded") capped at :attr:`ceiling`."""
        if configured is None or configured < 0:
            return self.ceiling
        return min(configured, self.ceiling)

    def gives_up(self, failures: int, configured: int | None) -> bool:
        """After ``failures`` failed invocations, whether to give up (the first try is not a retry)."""
        return failures > self.retries(configured)

    def delay(self, failures: int) -> float:
        """Seconds to wait before the next try after ``failures`` (≥ 1) failed invocations."""
        return min(self.backoff_max, self.backoff_base * 2.0 ** max(0, failures - 1))

    @property
    def transport_wait(self) -> float:
        """Seconds to wait when the function could not be reached (no retry used up)."""
        return self.backoff_max

    def immediate(self) -> RetryPolicy:
        """The same bounds without waiting (step-by-step tests)."""
        return replace(self, backoff_base=0.0, backoff_max=0.0)


#: Stream batches: MaximumRetryAttempts -1 ("until the record expires") becomes 10 locally.
STREAM_RETRIES = RetryPolicy(ceiling=10)
#: EventBridge targets: RetryPolicy's 185 attempts become 3 locally.
EVENT_RETRIES = RetryPolicy(ceiling=3)
