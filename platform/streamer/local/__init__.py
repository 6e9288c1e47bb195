"""``streamer local``: the whole platform on one machine, no AWS account and no Docker.

Rooms, one job each:

* :mod:`streamer.local.plan` — pure: what to run, read from the template and the plugins (tables, functions,
  routes, stream mappings, event rules, state machines) and the environment every function sees;
* :mod:`streamer.local.supervise` — child processes on sockets the supervisor owns; restarts;
* :mod:`streamer.local.provision` — creates the plan's tables and state machines (the CloudFormation part);
* :mod:`streamer.local.stack` — assembles the pieces, the banner and ready line, the signal loop;
* :mod:`streamer.local.lambda_endpoint` — the Lambda Invoke API (a subprocess; handlers run in threads);
* :mod:`streamer.local.moto_server` — moto (DynamoDB, DynamoDB Streams, Step Functions) in a subprocess, its
  Step Functions interpreter calling our Lambda endpoint;
* :mod:`streamer.local.gateway` — API Gateway WebSocket API + Management API (aiohttp, main process);
* :mod:`streamer.local.stream_poller` — the DynamoDB Streams event source mapping (main process);
* :mod:`streamer.local.eventbridge` — EventBridge rules on Step Functions execution status changes (main
  process);
* shared by the last three: :mod:`streamer.local.invoke` (the one invoker and its result type),
  :mod:`streamer.local.retry` (the one retry / give-up policy), :mod:`streamer.local.patterns` (the one event
  pattern matcher, moto's).

The ``streamer local`` command line lives in ``streamer.cli.local``; nothing here imports ``streamer.cli``.
Modules are imported on demand: importing this package stays cheap.
"""

from __future__ import annotations

from streamer.errors import StreamerError

__all__ = ["StartupError"]


class StartupError(StreamerError):
    """``streamer local`` cannot start; the message is the one-line reason printed to the user."""
