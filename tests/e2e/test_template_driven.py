"""`streamer local` is built from infra/template.yaml: what the template declares exists locally."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.e2e.conftest import free_port

from streamer.client import StreamerClient

ROOT = Path(__file__).resolve().parents[2]

EXTRA = """
  AuditTable:
    Type: AWS::DynamoDB::Table
    Properties:
      BillingMode: PAY_PER_REQUEST
      AttributeDefinitions:
        - { AttributeName: id, AttributeType: S }
      KeySchema:
        - { AttributeName: id, KeyType: HASH }

  PingFunction:
    Type: AWS::Serverless::Function
    Properties:
      Handler: streamer.handlers.router.handler
      Description: A named route, added only to this copy of the template.

  PingIntegration:
    Type: AWS::ApiGatewayV2::Integration
    Properties:
      ApiId: !Ref WebSocketApi
      IntegrationType: AWS_PROXY
      IntegrationUri: !Sub >-
        arn:${AWS::Partition}:apigateway:${AWS::Region}:lambda:path/2015-03-31/functions/${PingFunction.Arn}/invocations

  PingRoute:
    Type: AWS::ApiGatewayV2::Route
    Properties:
      ApiId: !Ref WebSocketApi
      RouteKey: ping
      Target: !Sub integrations/${PingIntegration}
"""


def test_resources_added_to_the_template_exist_locally(start_local: Callable[..., Any], tmp_path: Path) -> None:
    (tmp_path / "infra").mkdir()
    (tmp_path / "statemachines").symlink_to(ROOT / "statemachines")
    text = (ROOT / "infra" / "template.yaml").read_text()
    marker = "\nResources:\n"
    assert marker in text
    (tmp_path / "infra" / "template.yaml").write_text(text.replace(marker, marker + EXTRA, 1))
    stack = start_local("--port", str(free_port()), "--template", str(tmp_path / "infra" / "template.yaml"))

    # The new table exists in the local DynamoDB (named by the same rule as the others).
    ddb = stack.client("dynamodb")
    assert "streamer-audit" in ddb.list_tables()["TableNames"]
    # The new function answers the Lambda Invoke API.
    resp = stack.client("lambda").invoke(FunctionName="PingFunction", Payload=json.dumps({}).encode())
    assert resp["StatusCode"] == 200
    # The named route is selected by `$request.body.action` and answered by PingFunction.
    assert "PingFunction" in stack.stderr()

    async def main() -> dict[str, Any]:
        async with await StreamerClient.connect(stack.ws_url, stack.token("template-user")) as c:
            return await c.call({"action": "ping"})

    assert asyncio.run(main()) == {"type": "pong"}
    assert "ping -> PingFunction" in stack.stderr()
