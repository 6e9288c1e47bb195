"""Stored items: connections, requests and request events (pydantic, snake_case, DynamoDB-agnostic)."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from streamer.protocol import RequestStatus

__all__ = ["Connection", "Request", "RequestEvent", "RequestRef", "payload_hash", "request_key"]


def request_key(user_id: str, request_id: str) -> str:
    """Stable, opaque key of a request: the user is part of it, so two users' ids never collide."""
    return hashlib.sha256(f"{user_id}\x00{request_id}".encode()).hexdigest()[:32]


def payload_hash(workflow: str, payload: dict[str, Any]) -> str:
    """Canonical hash of what was submitted, to tell an idempotent retry from a conflicting reuse."""
    canonical = json.dumps([workflow, payload], sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


class Connection(BaseModel):
    model_config = ConfigDict(frozen=True)

    connection_id: str
    user_id: str
    connected_at: int
    expires_at: int
    source_ip: str | None = None


class RequestRef(BaseModel):
    """Identifies a request everywhere past the router (execution input, step context, notify)."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    user_id: str
    request_id: str
    workflow: str
    request_key: str

    @classmethod
    def of(cls, user_id: str, request_id: str, workflow: str) -> RequestRef:
        return cls(
            user_id=user_id,
            request_id=request_id,
            workflow=workflow,
            request_key=request_key(user_id, request_id),
        )


class Request(BaseModel):
    user_id: str
    request_id: str
    workflow: str
    payload: dict[str, Any] = Field(default_factory=dict)
    payload_hash: str
    status: RequestStatus = RequestStatus.PENDING
    created_at: int
    updated_at: int
    expires_at: int
    execution_arn: str | None = None
    output: dict[str, Any] | None = None
    error_code: str | None = None
    error_message: str | None = None

    @property
    def ref(self) -> RequestRef:
        return RequestRef.of(self.user_id, self.request_id, self.workflow)


class RequestEvent(BaseModel):
    """One server → client message about a request, as stored for ``resume``."""

    model_config = ConfigDict(frozen=True)

    request_key: str
    seq: int
    body: dict[str, Any]
    created_at: int
