"""The one retry / give-up policy of ``streamer local`` (stream batches and EventBridge targets)."""

from __future__ import annotations

import pytest

from streamer.local.invoke import InvokeResult, error_summary
from streamer.local.retry import BACKOFF_MAX, EVENT_RETRIES, STREAM_RETRIES, RetryPolicy


@pytest.mark.parametrize(
    ("policy", "configured", "retries"),
    [
        (STREAM_RETRIES, -1, 10),  # MaximumRetryAttempts -1: "until the record expires" on AWS
        (STREAM_RETRIES, 5, 5),
        (STREAM_RETRIES, 0, 0),
        (STREAM_RETRIES, 10000, 10),
        (EVENT_RETRIES, None, 3),  # no RetryPolicy: EventBridge's 185
        (EVENT_RETRIES, 185, 3),
        (EVENT_RETRIES, 1, 1),
    ],
)
def test_the_template_setting_is_kept_under_the_local_ceiling(
    policy: RetryPolicy, configured: int | None, retries: int
) -> None:
    assert policy.retries(configured) == retries
    assert not policy.gives_up(retries, configured)  # the first try and `retries` retries
    assert policy.gives_up(retries + 1, configured)


def test_backoff_doubles_up_to_its_maximum_and_a_transport_error_waits_the_maximum() -> None:
    policy = RetryPolicy(ceiling=3, backoff_base=0.5, backoff_max=3.0)
    assert [policy.delay(n) for n in (1, 2, 3, 4, 5)] == [0.5, 1.0, 2.0, 3.0, 3.0]
    assert policy.transport_wait == 3.0
    assert STREAM_RETRIES.transport_wait == BACKOFF_MAX
    fast = policy.immediate()
    assert (fast.delay(4), fast.transport_wait, fast.ceiling) == (0.0, 0.0, 3)


def test_one_result_type_tells_function_errors_from_transport_errors() -> None:
    assert InvokeResult(ok=True, payload={"x": 1}).error is None
    failed = InvokeResult(ok=False, payload={"errorType": "StepFailedError", "errorMessage": "no"})
    assert failed.error == "function error StepFailedError" and failed.transport_error is None
    down = InvokeResult(ok=False, transport_error="ConnectionRefusedError: refused")
    assert down.error == "ConnectionRefusedError: refused" and not down.timed_out
    assert error_summary(failed.payload) == "StepFailedError: no"
    assert error_summary({"batchItemFailures": []}) == '{"batchItemFailures": []}'
