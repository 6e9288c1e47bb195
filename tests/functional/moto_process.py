"""The moto server ``streamer local`` ships (``python -m streamer.local.moto_server``) in a subprocess, its
Lambda Tasks going to a Lambda endpoint served in a thread: Step Functions executing ASL, end to end."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import boto3

from streamer.local.lambda_endpoint import serve_in_thread

CREDS = {"region_name": "us-east-1", "aws_access_key_id": "testing", "aws_secret_access_key": "testing"}
ROLE = "arn:aws:iam::123456789012:role/r"


@contextmanager
def moto_server(functions: Mapping[str, Any]) -> Iterator[tuple[Any, Any]]:
    """Yields a Step Functions client of the moto server and the Lambda endpoint's HTTP server (serving
    ``functions``); both stop afterwards, the moto server with exit code 0."""
    server, url = serve_in_thread(dict(functions))
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamer.local.moto_server", "--port", "0", "--lambda-endpoint", url],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"},
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.startswith("moto server ready http://127.0.0.1:")
        sfn = boto3.client("stepfunctions", endpoint_url=line.split()[-1], **CREDS)
        try:
            yield sfn, server
        finally:
            sfn.close()
    finally:
        proc.terminate()
        assert proc.wait(30) == 0
        if proc.stdout is not None:
            proc.stdout.close()
        server.shutdown()
        server.server_close()


def run_to_end(sfn: Any, arn: str, name: str, execution_input: str, timeout: float = 60) -> dict[str, Any]:
    """Start an execution of ``arn`` and wait until it is no longer RUNNING; its DescribeExecution."""
    execution = sfn.start_execution(stateMachineArn=arn, name=name, input=execution_input)["executionArn"]
    deadline = time.monotonic() + timeout
    while (desc := sfn.describe_execution(executionArn=execution))["status"] == "RUNNING":
        assert time.monotonic() < deadline
        time.sleep(0.05)
    described: dict[str, Any] = desc
    return described


def create(sfn: Any, name: str, definition: dict[str, Any]) -> str:
    """Create the state machine; its ARN."""
    arn: str = sfn.create_state_machine(name=name, definition=json.dumps(definition), roleArn=ROLE)["stateMachineArn"]
    return arn
