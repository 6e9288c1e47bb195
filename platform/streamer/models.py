"""Stored items: connections, requests and request events (pydantic, snake_case, DynamoDB-agnostic).

A request has an *incarnation*: a random id chosen when it is stored. The request key (which names its
event log) and its execution name derive from (user, request id, incarnation), so a request id reused after
the first request expired is a new request in every respect: its own execution (Step Functions keeps
names 90 days, DynamoDB's TTL removes the request after 7) and an event log its predecessor never wrote.
"""

from __future__ import annotations

import hashlib
import json
import secrets
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from streamer.protocol import RequestStatus

__all__ = [
    "OPEN_SHARDS",
    "Connection",
    "Request",
    "RequestEvent",
    "RequestRef",
    "new_incarnation",
    "open_shard",
    "payload_hash",
    "request_key",
]

#: Requests that have not ended carry ``open_shard`` (one of this many values), the hash key of the sparse
#: GSI ``by_open`` the reconciler queries; spreading them over shards keeps that index off one partition.
OPEN_SHARDS = 8


def new_incarnation() -> str:
    """A fresh incarnation id (64 random bits, hex)."""
    return secrets.token_hex(8)


def request_key(user_id: str, request_id: str, incarnation: str = "") -> str:
    """Stable, opaque key of a request incarnation: the user is part of it, so two users' ids never collide,
    and so is the incarnation, so a reused id never reads its predecessor's events. (An empty incarnation is
    the key of requests stored before incarnations existed.)"""
    text = f"{user_id}\x00{request_id}" + (f"\x00{incarnation}" if incarnation else "")
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def open_shard(key: str) -> str:
    """The ``by_open`` shard of a request key."""
    return str(int(key[:8], 16) % OPEN_SHARDS)


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
    incarnation: str = ""

    @classmethod
    def of(cls, user_id: str, request_id: str, workflow: str, incarnation: str = "") -> RequestRef:
        return cls(
            user_id=user_id,
            request_id=request_id,
            workflow=workflow,
            request_key=request_key(user_id, request_id, incarnation),
            incarnation=incarnation,
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
    incarnation: str = ""
    #: The seq of the last event stored for this incarnation; once it ended, the seq of its terminal event
    #: (the terminal event itself is this item: status, output or error).
    last_seq: int = 0
    #: Present while the request has not ended: its ``by_open`` shard (sparse index of the reconciler).
    open_shard: str | None = None

    @property
    def ref(self) -> RequestRef:
        return RequestRef.of(self.user_id, self.request_id, self.workflow, self.incarnation)

    def terminal_body(self) -> dict[str, Any] | None:
        """The terminal event of an ended request, as pushed and replayed (None while it has not ended)."""
        if not self.status.terminal:
            return None
        if self.status is RequestStatus.SUCCEEDED:
            body: dict[str, Any] = {"type": "result", "status": self.status.value, "output": self.output or {}}
        else:
            body = {
                "type": "error",
                "status": self.status.value,
                "code": self.error_code or "",
                "message": self.error_message or "",
            }
        return {**body, "request_id": self.request_id, "seq": self.last_seq}


class RequestEvent(BaseModel):
    """One server → client message about a request, as stored for ``resume``."""

    model_config = ConfigDict(frozen=True)

    request_key: str
    seq: int
    body: dict[str, Any]
    created_at: int
