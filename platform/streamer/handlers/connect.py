"""``$connect``: validate the JWT, store the connection, select the ``streamer.v1`` subprotocol."""

from __future__ import annotations

import functools
import os
import time
from typing import Any

from streamer.auth import AuthConfig, Authenticator, AuthError, extract_token
from streamer.events import WebSocketEvent
from streamer.handlers._runtime import get_logger, get_service, lambda_handler
from streamer.limits import MAX_CONNECTION_SECONDS
from streamer.models import Connection

logger = get_logger()


def _resolve_secret() -> dict[str, str]:
    """On AWS the HS256 secret comes from SSM (SecureString) or Secrets Manager, by ARN, at cold start."""
    env = dict(os.environ)
    arn = env.get("STREAMER_JWT_SECRET_ARN")
    if arn and not env.get("STREAMER_JWT_SECRET"):
        from streamer.aws.secrets import read_secret

        env["STREAMER_JWT_SECRET"] = read_secret(arn)
    return env


@functools.cache
def get_authenticator() -> Authenticator:
    return Authenticator(AuthConfig.from_env(_resolve_secret()))


@lambda_handler
def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    try:
        ev = WebSocketEvent.parse(event)
    except ValueError:
        logger.warning("malformed $connect event")
        return {"statusCode": 400}
    cid = ev.request_context.connection_id
    logger.thread_safe_append_keys(connection_id=cid)
    token, subprotocol = extract_token(ev.headers, ev.query_string_parameters)
    if not token:
        logger.info("connect refused", extra={"reason": "no token", "status": 401})
        return {"statusCode": 401}
    try:
        principal = get_authenticator().verify(token)
    except AuthError as exc:
        logger.info("connect refused", extra={"reason": str(exc), "status": exc.status})
        return {"statusCode": exc.status}
    now = int(time.time())
    get_service(ev).connect(
        Connection(
            connection_id=cid,
            user_id=principal.user_id,
            connected_at=now,
            expires_at=min(principal.expires_at, now + MAX_CONNECTION_SECONDS),
            source_ip=ev.request_context.identity.source_ip,
        )
    )
    logger.info("connected", extra={"user_id": principal.user_id})
    response: dict[str, Any] = {"statusCode": 200}
    if subprotocol:
        # Browsers drop a connection whose response does not select one of the offered subprotocols.
        response["headers"] = {"Sec-WebSocket-Protocol": subprotocol}
    return response
