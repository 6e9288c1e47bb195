"""``streamer local``: the whole platform on one machine, no AWS account and no Docker.

* :mod:`streamer.local.lambda_endpoint` — the Lambda Invoke API (a subprocess; handlers run in threads);
* :mod:`streamer.local.moto_server` — moto (DynamoDB, DynamoDB Streams, Step Functions) in a subprocess, its
  Step Functions interpreter calling our Lambda endpoint;
* :mod:`streamer.local.gateway` — API Gateway WebSocket API + Management API (aiohttp, main process);
* :mod:`streamer.local.stream_poller` — the DynamoDB Streams event source mapping (main process);
* :mod:`streamer.local.eventbridge` — EventBridge rules on Step Functions execution status changes (main
  process);
* :mod:`streamer.local.stack` — the supervisor and the ``streamer local`` command.

Modules are imported on demand: importing this package stays cheap.
"""

from __future__ import annotations
