"""The local stack's garbage collector, set for latency once each process has started.

``streamer local``'s gateway process holds every WebSocket connection and, in the default in-process mode,
runs the route functions: one event loop that every message waits on. moto's DynamoDB process answers every
call the handlers make, one request at a time under its GIL. CPython's cyclic collector stops the whole
process while it runs, and a full (generation 2) collection walks every object the process tracks.

Measured with a ``gc.callbacks`` probe (docs/performance.md, "Garbage collection pauses"): the gateway
tracked ~250,000 objects after start-up and its first requests (modules, botocore's service models, loaded
on a client's first use: ~38,000 ``OrderedDict`` for DynamoDB alone; pydantic's validators) plus ~90 per
open connection. A full collection of that took 330 to 600 ms of wall time on the 2-core benchmark machine
and came every 10 to 20 s with 1,000 connections pinging at 1,000 messages a second, because the objects of
the messages in flight survive the young collections (every 700 allocations) and count towards the next
full one; each pause held every reply back, and the open loop's p99 was that pause. moto's DynamoDB process
paused up to 715 ms the same way during the noisy-neighbour run.

:func:`settle_heap` does what CPython documents for a long-lived server process after its start-up
(``gc.freeze``: "move all objects tracked by the garbage collector into a permanent generation, i.e.
ignore them in all the future collections"; https://docs.python.org/3/library/gc.html#gc.freeze):

* :func:`warm_clients` first loads what the functions would load on their first request (their boto3
  clients' service models), so it is frozen with the rest (the gateway and the Lambda endpoint);
* a full collection, then :func:`gc.freeze`: what start-up built is never walked again, only what is
  created after it (connections, messages in flight, moto's items);
* the young generation's threshold raised to :data:`GEN0_THRESHOLD` allocations, so the objects of a message
  in flight (a few milliseconds) are freed by reference counting before a collection sees them, instead of
  being promoted and counted towards a full collection.

What it costs: objects frozen here that later become unreachable *in a reference cycle* are never freed
(start-up's objects live as long as the process anyway), and a young collection examines up to
:data:`GEN0_THRESHOLD` objects at a time instead of 700. On AWS none of this applies: the gateway is API
Gateway, the tables are DynamoDB, and each function's runtime keeps CPython's defaults.
"""

from __future__ import annotations

import gc
import logging
from collections.abc import Iterable

__all__ = ["GEN0_THRESHOLD", "WARM_SERVICES", "settle_heap", "warm_clients"]

log = logging.getLogger("streamer.local.heap")

#: Allocations (net of deallocations) between two young collections (CPython's default: 700).
GEN0_THRESHOLD = 50_000

#: The AWS services the route functions call: their clients' models are loaded at start-up.
WARM_SERVICES = ("dynamodb", "apigatewaymanagementapi", "stepfunctions")


def warm_clients(services: Iterable[str] = WARM_SERVICES) -> None:
    """Create (and drop) one client of each service from the default boto3 session: botocore keeps the loaded
    service model, endpoint rules and partitions in the session's loader, which the functions' own clients
    then reuse. No request is made. Needs a region (``AWS_REGION``/``AWS_DEFAULT_REGION``), as the functions'
    environment has; a service that cannot be created is skipped (it will load on first use)."""
    import boto3

    for service in services:
        try:
            boto3.client(service)  # type: ignore[call-overload]  # a runtime name
        except Exception as exc:  # warming is an optimisation, never a start-up failure
            log.debug("not warmed: %s (%s: %s)", service, type(exc).__name__, exc)


def settle_heap(gen0_threshold: int = GEN0_THRESHOLD) -> int:
    """Collect, freeze what survives and raise the young generation's threshold (see the module). Returns
    the number of objects frozen. Call once, when start-up is over."""
    gc.collect()
    gc.freeze()
    _, gen1, gen2 = gc.get_threshold()
    gc.set_threshold(gen0_threshold, gen1, gen2)
    return gc.get_freeze_count()
