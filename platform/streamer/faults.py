"""Fault injection for tests — never for production (nothing in the package installs it by itself).

Two tools:

* :class:`AwsFaults` makes a share of the AWS calls of boto3 clients fail, through botocore's event hooks:
  a ``before-send.<service-id>.<Operation>`` handler answers in place of the HTTP send
  (https://botocore.amazonaws.com/v1/documentation/api/latest/topics/events.html), *inside* botocore's
  retry loop, so the client's retry mode treats the fault as it would a real one. Seeded, so a run is
  repeatable: the n-th matching call of a given seed always gets the same fault. Faults are what AWS
  documents its clients must survive: throttling (``ThrottlingException``, DynamoDB's
  ``ProvisionedThroughputExceededException``, API Gateway's ``LimitExceededException``), 5xx
  (``InternalServerError`` / ``ServiceUnavailable``), ``GoneException`` (410, Management API), and
  timeouts (``ReadTimeoutError``, raised as the transport would). Service ids are botocore's hyphenated
  ones: ``dynamodb``, ``sfn``, ``apigatewaymanagementapi``. Against a real endpoint (moto server, the local
  gateway) a faulted call is never sent; under moto's in-process ``mock_aws`` moto's own ``before-send``
  handler still runs behind it (the call happens, the client sees the fault — what a timeout can be anyway).

* :class:`LambdaFaults` kills the local Lambda endpoint, or makes one handler crash, mid-request. The local
  endpoint reads ``STREAMER_TEST_FAULTS`` (test-only; ``docs/reliability.md``) at start:
  ``exit:<Function>:<n>`` ends the whole endpoint process (``os._exit(137)``, as the OOM killer would) on
  the n-th invocation of that function, after it was received and before it answers; ``raise:<Function>:<n>``
  makes that invocation raise ``InjectedFault`` inside the handler; ``*`` for n means every invocation.
  Invocations are counted per endpoint process, and ``exit`` rules are used one per process, in order: the
  first process exits by the first ``exit`` rule, the one its supervisor restarted (``STREAMER_LOCAL_RESTARTS``
  = 1) by the second, counting from its own start, and so on; once they are used up the endpoint stays up.
  (So ``exit:F:40,exit:F:300`` kills it exactly twice; without the order one rule would kill every process.)
  ``aws:<share>:<seed>[:<kind>+<kind>…]`` makes ``share`` (0..1) of the AWS calls of the endpoint's handlers
  fail, seeded, with the kinds given (default ``throttle+5xx+timeout``): an :class:`AwsFaults` whose rules
  cover the data path's services (DynamoDB, Step Functions, the Management API), installed on boto3's default
  session before any handler creates a client (:meth:`AwsFaults.install`) — so the handlers' clients, and
  nothing else: moto's engine and the harness run in other processes. Each injected fault is logged
  (``injected <kind> into <service>.<Operation>``); a restarted endpoint starts the sequence of its seed again.
  Several rules are separated by commas.
  ``streamer local`` restarts a dead endpoint (its supervisor), so a test sees what a crashed Lambda
  container does to the platform.
"""

from __future__ import annotations

import io
import json
import logging
import os
import random
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from botocore.awsrequest import AWSResponse, HTTPHeaders
from botocore.exceptions import ReadTimeoutError

from streamer.config import Env
from streamer.errors import StreamerError

__all__ = ["DATA_PATH_SERVICES", "ENV_VAR", "AwsFaults", "FaultRule", "InjectedFault", "LambdaFaults", "RawBody"]

log = logging.getLogger("streamer.faults")

#: The environment variable the local Lambda endpoint reads (test-only).
ENV_VAR = Env.TEST_FAULTS
#: The services an ``aws:`` rule faults: the platform's data path (``streamer.aws``), by botocore service id.
DATA_PATH_SERVICES = ("dynamodb", "sfn", "apigatewaymanagementapi")
_AWS_ACTION = "aws"

# (HTTP status, error code) per fault kind. Throttling codes are the services' own.
_KINDS: dict[str, tuple[int, str]] = {
    "throttle": (400, "ThrottlingException"),
    "ddb_throttle": (400, "ProvisionedThroughputExceededException"),
    "limit": (429, "LimitExceededException"),
    "5xx": (500, "InternalServerError"),
    "unavailable": (503, "ServiceUnavailable"),
    "gone": (410, "GoneException"),
}
KINDS = (*_KINDS, "timeout")


class InjectedFault(StreamerError):
    """A failure injected by :mod:`streamer.faults` (tests only)."""


@dataclass(frozen=True)
class FaultRule:
    """Fail ``rate`` of the calls to ``service`` (e.g. ``dynamodb``; ``*`` for all) / ``operation`` (``*``)
    with one of ``kinds``, chosen by the seeded generator."""

    service: str = "*"
    operation: str = "*"
    rate: float = 0.2
    kinds: tuple[str, ...] = ("throttle", "5xx", "timeout")

    def __post_init__(self) -> None:
        if not 0 <= self.rate <= 1:
            raise ValueError("rate must be within 0..1")
        unknown = set(self.kinds) - set(KINDS)
        if unknown or not self.kinds:
            raise ValueError(f"unknown fault kinds {sorted(unknown)}; known: {KINDS}")

    def matches(self, service: str, operation: str) -> bool:
        return self.service in ("*", service) and self.operation in ("*", operation)


@dataclass
class AwsFaults:
    """Seeded fault injection on boto3 clients. ``attach(client)`` for each client; ``injected`` counts."""

    rules: list[FaultRule]
    seed: int = 0
    injected: dict[str, int] = field(default_factory=dict)
    calls: int = 0
    enabled: bool = True

    def __post_init__(self) -> None:
        self._random = random.Random(self.seed)
        self._lock = threading.Lock()

    @classmethod
    def parse(cls, spec: str | None) -> AwsFaults | None:
        """The ``aws:<share>:<seed>[:<kind>+<kind>…]`` rule of a ``STREAMER_TEST_FAULTS`` spec (its other
        rules are :class:`LambdaFaults`'): one :class:`FaultRule` per data-path service; None without one."""
        found: AwsFaults | None = None
        for part in _parts(spec):
            action, *fields = part.split(":")
            if action != _AWS_ACTION:
                continue
            try:
                if len(fields) not in (2, 3):
                    raise ValueError("wrong number of fields")
                rate, number = float(fields[0]), int(fields[1])
                kinds = tuple(fields[2].split("+")) if len(fields) == 3 else FaultRule.kinds
                rules = [FaultRule(service, "*", rate, kinds) for service in DATA_PATH_SERVICES]
            except ValueError as exc:
                raise ValueError(f"{ENV_VAR}: {part!r} is not aws:<share>:<seed>[:<kind>+<kind>...] ({exc})") from None
            if found is not None:
                raise ValueError(f"{ENV_VAR}: more than one aws: rule")
            found = cls(rules, number)
        return found

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> AwsFaults | None:
        return cls.parse((os.environ if environ is None else environ).get(ENV_VAR))

    def attach(self, *clients: Any) -> None:
        """Register on each client's event system (only that client is affected)."""
        for client in clients:
            client.meta.events.register_first("before-send", self._before_send)

    def install(self, session: Any = None) -> None:
        """Register on a session's event system (default: boto3's default session): every client created from
        it *afterwards* is affected (a client copies its session's handlers when it is created)."""
        if session is None:
            import boto3

            session = boto3._get_default_session()
        session.events.register_first("before-send", self._before_send, unique_id=f"streamer-faults-{id(self)}")

    def _decide(self, service: str, operation: str) -> str | None:
        with self._lock:
            self.calls += 1
            if not self.enabled:
                return None
            for rule in self.rules:
                if rule.matches(service, operation):
                    # Both draws happen for every matching call, so one seed gives one sequence.
                    hit = self._random.random() < rule.rate
                    kind = self._random.choice(rule.kinds)
                    if hit:
                        key = f"{service}.{operation}:{kind}"
                        self.injected[key] = self.injected.get(key, 0) + 1
                        log.info("injected %s into %s.%s", kind, service, operation)
                        return kind
            return None

    def _before_send(self, request: Any, event_name: str = "", **kwargs: Any) -> AWSResponse | None:
        _, service, operation = [*event_name.split(".", 2), "", ""][:3]
        kind = self._decide(service, operation)
        if kind is None:
            return None
        if kind == "timeout":
            raise ReadTimeoutError(endpoint_url=request.url)
        status, code = _KINDS[kind]
        # One body both the JSON (DynamoDB, Step Functions) and the REST-JSON (Management API) error parsers
        # read: "__type" for the first, the x-amzn-ErrorType header for the second.
        body = json.dumps({"__type": code, "message": "injected by streamer.faults"}).encode()
        headers = HTTPHeaders()
        headers["x-amzn-ErrorType"] = code
        headers["Content-Type"] = "application/x-amz-json-1.0"
        return AWSResponse(request.url, status, headers, RawBody(body))

    @property
    def total_injected(self) -> int:
        return sum(self.injected.values())


class RawBody(io.BytesIO):
    """The raw body botocore's ``AWSResponse`` streams (as urllib3's response would): for responses made in process."""

    def stream(self, **kwargs: Any) -> Iterator[bytes]:
        chunk = self.read()
        while chunk:
            yield chunk
            chunk = self.read()


@dataclass
class LambdaFaults:
    """Kill the endpoint or crash a handler on the n-th invocation of a function (see the module doc)."""

    rules: list[tuple[str, str, int]]
    counts: dict[str, int] = field(default_factory=dict)
    exit: Callable[[int], Any] = os._exit

    def __post_init__(self) -> None:
        self._lock = threading.Lock()

    @classmethod
    def parse(cls, spec: str | None, restarts: int = 0) -> LambdaFaults | None:
        """``exit:<Function>:<n>,raise:<Function>:<n>`` → the rules of an endpoint process restarted ``restarts``
        times: every ``raise`` rule and the ``exit`` rule of that rank, if any (see the module doc); None
        without one (``aws:`` rules are :meth:`AwsFaults.parse`'s)."""
        rules: list[tuple[str, str, int]] = []
        exits = 0
        for part in _parts(spec):
            action, _, rest = part.partition(":")
            if action == _AWS_ACTION:  # AwsFaults.parse's
                continue
            function, _, nth = rest.rpartition(":")
            every = nth == "*"
            if action not in ("exit", "raise") or not function or not (every or (nth.isdigit() and int(nth) >= 1)):
                raise ValueError(f"{ENV_VAR}: {part!r} is not exit:<Function>:<n> or raise:<Function>:<n>")
            if action == "exit":
                exits += 1
                if exits != restarts + 1:  # another process's exit
                    continue
            rules.append((action, function, 0 if every else int(nth)))
        return cls(rules) if rules else None

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> LambdaFaults | None:
        env = os.environ if environ is None else environ
        return cls.parse(env.get(ENV_VAR), int(env.get(Env.LOCAL_RESTARTS) or 0))

    def before_invoke(self, function: str) -> None:
        """Called by the endpoint for each invocation received; exits or raises when a rule says so."""
        with self._lock:
            n = self.counts[function] = self.counts.get(function, 0) + 1
        for action, name, nth in self.rules:
            if name == function and nth in (0, n):  # 0: every invocation
                if action == "exit":
                    self.exit(137)  # never returns (os._exit) unless a test replaced it
                    return
                raise InjectedFault(f"injected crash of {function} (invocation {n})")

    def functions(self) -> Iterable[str]:
        return {name for _, name, _ in self.rules}


def _parts(spec: str | None) -> list[str]:
    """The comma-separated rules of a ``STREAMER_TEST_FAULTS`` spec."""
    return [part.strip() for part in (spec or "").split(",") if part.strip()]
