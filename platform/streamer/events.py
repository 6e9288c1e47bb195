"""API Gateway WebSocket events modelled at the boundary (snake_case, aliases to AWS's names)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["WebSocketEvent"]


class Identity(BaseModel):
    model_config = ConfigDict(extra="ignore")
    source_ip: str | None = Field(default=None, alias="sourceIp")


class RequestContext(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True)
    connection_id: str = Field(alias="connectionId", min_length=1)
    route_key: str = Field(alias="routeKey")
    event_type: str = Field(alias="eventType")
    domain_name: str | None = Field(default=None, alias="domainName")
    stage: str | None = None
    request_id: str | None = Field(default=None, alias="requestId")
    identity: Identity = Field(default_factory=Identity)


class WebSocketEvent(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True)
    request_context: RequestContext = Field(alias="requestContext")
    headers: dict[str, str] | None = None
    query_string_parameters: dict[str, str] | None = Field(default=None, alias="queryStringParameters")
    body: str | None = None
    is_base64_encoded: bool = Field(default=False, alias="isBase64Encoded")

    @classmethod
    def parse(cls, event: dict[str, Any]) -> WebSocketEvent:
        return cls.model_validate(event)
