"""``$connect``: check the Origin, validate the JWT, admit the connection under the user's quota, store it,
select the ``streamer.v1`` subprotocol.

Refusals store nothing: 403 for an Origin outside the allow-list (``streamer.origins``), 401 for a missing,
invalid or already expired token (a token accepted within the clock leeway but past its ``exp`` would
yield a connection that is expired from its first message), 429 over the user's connection quota
(``streamer.quotas``).
"""

from __future__ import annotations

import functools
import os
import time
from typing import Any

from streamer import metrics
from streamer.auth import AuthConfig, Authenticator, AuthError, extract_token
from streamer.config import Env
from streamer.errors import ProtocolError
from streamer.events import WebSocketEvent
from streamer.handlers._edges import get_closer, get_quotas
from streamer.handlers._runtime import get_logger, get_service, lambda_handler
from streamer.limits import MAX_CONNECTION_SECONDS
from streamer.models import Connection
from streamer.origins import ORIGIN_REFUSED_STATUS, origin_allowed

#: HTTP status of a handshake over the user's connection quota.
TOO_MANY_CONNECTIONS_STATUS = 429

logger = get_logger()


def _resolve_secret() -> dict[str, str]:
    """On AWS the HS256 secret comes from SSM (SecureString) or Secrets Manager, by ARN, at cold start."""
    env = dict(os.environ)
    arn = env.get(Env.JWT_SECRET_ARN)
    if arn and not env.get(Env.JWT_SECRET):
        from streamer.aws.secrets import read_secret

        env[Env.JWT_SECRET] = read_secret(arn)
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
        metrics.add(metrics.CONNECTS_REFUSED, reason="bad_request")
        return {"statusCode": 400}
    cid = ev.request_context.connection_id
    logger.thread_safe_append_keys(connection_id=cid)
    service = get_service(ev)
    settings = service.settings
    if not origin_allowed(ev.headers, settings.allowed_origins, allow_missing=settings.allow_missing_origin):
        logger.info("connect refused", extra={"reason": "origin not allowed", "status": ORIGIN_REFUSED_STATUS})
        metrics.add(metrics.CONNECTS_REFUSED, reason="origin")
        return {"statusCode": ORIGIN_REFUSED_STATUS}
    token, subprotocol = extract_token(ev.headers, ev.query_string_parameters)
    if not token:
        logger.info("connect refused", extra={"reason": "no token", "status": 401})
        metrics.add(metrics.CONNECTS_REFUSED, reason="no_token")
        return {"statusCode": 401}
    try:
        principal = get_authenticator().verify(token)
    except AuthError as exc:
        logger.info("connect refused", extra={"reason": str(exc), "status": exc.status})
        metrics.add(metrics.CONNECTS_REFUSED, reason=metrics.connect_refusal_reason(exc.reason, exc.status))
        return {"statusCode": exc.status}
    now = int(time.time())
    if principal.expires_at <= now:
        # Accepted within the leeway (clock skew) but already expired: refuse rather than store a connection
        # whose every message would be FORBIDDEN.
        logger.info("connect refused", extra={"reason": "token expired", "status": AuthError.status})
        metrics.add(metrics.CONNECTS_REFUSED, reason="expired")
        return {"statusCode": AuthError.status}
    quotas = get_quotas(service)
    try:
        quotas.admit_connection(principal.user_id, cid, alive=get_closer(service, ev).alive)
    except ProtocolError as exc:
        logger.info("connect refused", extra={"reason": exc.message, "status": TOO_MANY_CONNECTIONS_STATUS})
        metrics.add(metrics.CONNECTS_REFUSED, reason="quota")
        return {"statusCode": TOO_MANY_CONNECTIONS_STATUS}
    try:
        service.connect(
            Connection(
                connection_id=cid,
                user_id=principal.user_id,
                connected_at=now,
                expires_at=min(principal.expires_at, now + MAX_CONNECTION_SECONDS),
                source_ip=ev.request_context.identity.source_ip,
            )
        )
    except Exception:
        quotas.release_connection(principal.user_id, cid)
        raise
    logger.info("connected", extra={"user_id": principal.user_id})
    response: dict[str, Any] = {"statusCode": 200}
    if subprotocol:
        # Browsers drop a connection whose response does not select one of the offered subprotocols.
        response["headers"] = {"Sec-WebSocket-Protocol": subprotocol}
    return response
