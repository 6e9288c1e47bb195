"""``$connect``: check the Origin, validate the JWT, have ``RequestService.connect`` admit the connection
under the user's quota and store it, select the ``streamer.v1`` subprotocol.

Refusals store nothing: 403 for an Origin outside the allow-list (``streamer.origins``), 401 for a missing,
invalid or already expired token (``RequestService.connect`` refuses one accepted within the clock leeway
but past its ``exp``), 429 over the user's connection quota (``streamer.quotas``).
"""

from __future__ import annotations

import functools
import os
from typing import Any

# isort: off
# First: PyJWT without `cryptography` for an HMAC-only allow-list (~85 ms of a cold start).
import streamer.handlers._pyjwt  # noqa: F401
# isort: on
from streamer import metrics
from streamer.auth import AuthConfig, Authenticator, AuthError, extract_token
from streamer.config import Env
from streamer.events import WebSocketEvent
from streamer.handlers._edges import get_quotas
from streamer.handlers._runtime import get_logger, get_service, lambda_handler
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
    admission = service.connect(
        cid,
        principal.user_id,
        principal.expires_at,
        source_ip=ev.request_context.identity.source_ip,
        quotas=get_quotas(service),
    )
    if admission.refused is not None:
        status = AuthError.status if admission.refused == "expired" else TOO_MANY_CONNECTIONS_STATUS
        logger.info("connect refused", extra={"reason": admission.reason, "status": status})
        metrics.add(metrics.CONNECTS_REFUSED, reason=admission.refused)
        return {"statusCode": status}
    logger.info("connected", extra={"user_id": principal.user_id})
    response: dict[str, Any] = {"statusCode": 200}
    if subprotocol:
        # Browsers drop a connection whose response does not select one of the offered subprotocols.
        response["headers"] = {"Sec-WebSocket-Protocol": subprotocol}
    return response
