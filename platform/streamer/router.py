"""The ``$default`` route as plain logic: one raw client frame in, the replies for that connection out.

Never raises: every failure becomes a typed error frame, and the connection stays usable.

Order of checks for a message: who is asking (the connection row; absent → ``FORBIDDEN``; its token expired →
``FORBIDDEN`` with ``details.reason = "token_expired"``, after which the handler closes the connection with
``DELETE @connections/{id}``), the per-connection rate, the per-user quotas (``streamer.quotas``:
messages per second, and requests in flight at ``submit``), then the action.

One exception to that order: a connection whose user this container already refused for messages in the current
second is refused again first, with no DynamoDB call (``Quotas.refuse_known``) — a flood costs no write per
message. Such a connection may be one whose token just expired: it is told so by its first message after that
second.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from pydantic import BaseModel, ValidationError

from streamer.errors import ProtocolError
from streamer.protocol import (
    CancelAction,
    ErrorCode,
    PingAction,
    ResumeAction,
    StatusAction,
    SubmitAction,
    WorkflowsAction,
    error_frame,
    parse_action,
    validation_details,
)
from streamer.quotas import Quotas
from streamer.service import RequestService

__all__ = ["TOKEN_EXPIRED", "Router", "WorkflowInfo", "changes_state", "closes_connection"]

#: ``details.reason`` of the FORBIDDEN frame sent before a connection whose token expired is closed.
TOKEN_EXPIRED = "token_expired"


def changes_state(action: str | None, frames: list[dict[str, Any]]) -> bool:
    """True when the message accepted a request (its ``ack``) or cancelled one (a ``cancel`` answered with
    nothing: the CANCELLED event went to the user's connections) — what the handler logs at INFO."""
    if action == "cancel":
        return not frames
    return any(f.get("type") == "ack" for f in frames)


def closes_connection(frames: list[dict[str, Any]]) -> bool:
    """True when the replies end the connection (its token expired): the handler then closes it."""
    return any(
        f.get("type") == "error"
        and f.get("code") == ErrorCode.FORBIDDEN.value
        and isinstance(f.get("details"), dict)
        and f["details"].get("reason") == TOKEN_EXPIRED
        for f in frames
    )


logger = logging.getLogger(__name__)


class WorkflowInfo(Protocol):
    @property
    def name(self) -> str: ...
    @property
    def description(self) -> str: ...
    @property
    def payload_model(self) -> type[BaseModel] | None: ...


class Router:
    def __init__(
        self,
        service: RequestService,
        workflows: Callable[[], Mapping[str, WorkflowInfo]],
        *,
        rate_limit_per_minute: int | None = None,
        quotas: Quotas | None = None,
    ) -> None:
        self.service = service
        self.workflows = workflows
        self.rate_limit = rate_limit_per_minute
        self.quotas = quotas

    def handle_message(self, connection_id: str, raw: str | bytes) -> list[dict[str, Any]]:
        """The ``$default`` route: who is asking (the connection row, FORBIDDEN when absent or expired), the
        rate limit, then the action. One DynamoDB round trip before the action itself."""

        def run() -> list[dict[str, Any]]:
            if self.quotas is not None:
                self.quotas.refuse_known(connection_id)
            now = self.service.now()
            seen = self.service.count_message(connection_id, now)
            if seen is None:
                raise ProtocolError(ErrorCode.FORBIDDEN, "connection is not authenticated or has expired")
            conn, count = seen
            if conn.expires_at <= now:
                raise ProtocolError(
                    ErrorCode.FORBIDDEN, "the connection's token has expired", {"reason": TOKEN_EXPIRED}
                )
            return self._check_rate(count) or self._limited(conn.user_id, raw, connection_id)

        return self._safely(connection_id, run)

    def handle(self, connection_id: str, user_id: str, raw: str | bytes) -> list[dict[str, Any]]:
        """Route a message of a connection already known to belong to ``user_id`` (rate-limited alike)."""

        def run() -> list[dict[str, Any]]:
            if self.rate_limit:
                seen = self.service.count_message(connection_id)
                limited = self._check_rate(seen[1]) if seen else []
                if limited:
                    return limited
            return self._limited(user_id, raw, connection_id)

        return self._safely(connection_id, run)

    def _limited(self, user_id: str, raw: str | bytes, connection_id: str) -> list[dict[str, Any]]:
        """The per-user message quota, then the action."""
        if self.quotas is not None:
            self.quotas.count_message(user_id, connection_id)
        return self._dispatch(user_id, parse_action(raw))

    def _check_rate(self, count: int) -> list[dict[str, Any]]:
        if self.rate_limit and count > self.rate_limit:
            return [
                error_frame(
                    ErrorCode.RATE_LIMITED,
                    f"more than {self.rate_limit} messages a minute on this connection",
                    {"limit_per_minute": self.rate_limit},
                )
            ]
        return []

    @staticmethod
    def _safely(connection_id: str, run: Callable[[], list[dict[str, Any]]]) -> list[dict[str, Any]]:
        """Never raises: a refusal is its error frame, anything unexpected an INTERNAL_ERROR with no detail."""
        try:
            return run()
        except ProtocolError as exc:
            return [exc.to_wire()]
        except Exception:
            logger.exception("router failed", extra={"connection_id": connection_id})
            return [error_frame(ErrorCode.INTERNAL_ERROR, "internal error")]

    def _dispatch(self, user_id: str, action: Any) -> list[dict[str, Any]]:
        svc = self.service
        match action:
            case PingAction():
                return [{"type": "pong"}]
            case WorkflowsAction():
                return [
                    {
                        "type": "workflows",
                        "workflows": [
                            {"name": w.name, "description": w.description}
                            for w in sorted(self.workflows().values(), key=lambda w: w.name)
                        ],
                    }
                ]
            case SubmitAction():
                return [self._submit(user_id, action)]
            case StatusAction():
                return [svc.status(user_id, action.request_id)]
            case ResumeAction():
                return [e.body for e in svc.replay(user_id, action.request_id, action.after_seq)]
            case CancelAction():
                if not svc.cancel(user_id, action.request_id):
                    # Already ended: say so with its current state (the terminal event was sent before).
                    return [svc.status(user_id, action.request_id)]
                return []  # the CANCELLED terminal event went to every connection of the user
        raise ProtocolError(ErrorCode.UNKNOWN_ACTION, "unknown action")  # pragma: no cover

    def _submit(self, user_id: str, action: SubmitAction) -> dict[str, Any]:
        workflow = self.workflows().get(action.workflow)
        if workflow is None:
            raise ProtocolError(
                ErrorCode.UNKNOWN_WORKFLOW,
                f"unknown workflow {action.workflow!r}",
                {"workflows": sorted(self.workflows())},
            )
        payload = action.payload
        if workflow.payload_model is not None:
            try:
                workflow.payload_model.model_validate(payload)
            except ValidationError as exc:
                raise ProtocolError(
                    ErrorCode.VALIDATION_ERROR,
                    f"invalid payload for workflow {action.workflow!r}",
                    validation_details(exc, ("payload",)),
                ) from exc
        # The in-flight slot is reserved under the request's id before it is stored (a retried submit of the
        # same id takes no second slot); a generated id is chosen here so the reservation can name it.
        request_id = action.request_id or uuid.uuid4().hex
        if self.quotas is not None:
            self.quotas.reserve_request(user_id, request_id)
        result = self.service.submit(user_id, action.workflow, payload, request_id)
        return result.ack()
