"""boto3 sessions and clients for code outside ``streamer.aws`` that reads a deployment (``streamer.observe``).

The architecture keeps boto3 client creation in ``streamer.aws`` (``tests/unit/test_architecture.py``); tools
that must reach a deployment they did not start — a running ``streamer local`` or a deployed stack — build
their clients here and pass them to the adapters.

* :func:`session` — a ``boto3.session.Session``; a missing profile is :class:`~botocore.exceptions.BotoCoreError`
  (``ProfileNotFound``), left to the caller to report. ``local=True`` uses fixed credentials: moto accepts any,
  and fixed ones keep a developer's AWS profile (and its real credentials) out of the local stack.
* :func:`client` — one client of ``service`` from such a session, with botocore's *standard* retry mode
  (https://docs.aws.amazon.com/sdkref/latest/guide/feature-retry-behavior.html): throttling and transient
  errors are retried with backoff, ``max_attempts`` retries after the first call (botocore's ``retries`` key).
"""

from __future__ import annotations

from typing import Any

import boto3
from botocore.config import Config

__all__ = ["client", "session"]


def session(*, region: str | None = None, profile: str | None = None, local: bool = False) -> boto3.session.Session:
    """A boto3 session: ``profile``/``region`` as given (None: the environment's), or moto's fixed credentials."""
    if local:
        return boto3.session.Session(aws_access_key_id="testing", aws_secret_access_key="testing", region_name=region)
    return boto3.session.Session(profile_name=profile, region_name=region)


def client(
    service: str,
    *,
    endpoint_url: str | None = None,
    region: str | None = None,
    profile: str | None = None,
    local: bool = False,
    max_attempts: int = 3,
    from_session: boto3.session.Session | None = None,
) -> Any:
    """A boto3 client of ``service`` (from ``from_session`` when given, else a new :func:`session`).

    Typed ``Any`` because the service is a runtime string; callers annotate the mypy_boto3 type they expect.
    """
    sess = from_session or session(region=region, profile=profile, local=local)
    config = Config(retries={"max_attempts": max_attempts, "mode": "standard"})
    return sess.client(service, endpoint_url=endpoint_url, config=config)  # type: ignore[call-overload]
