"""Configuration from the environment: every ``STREAMER_*`` variable is named here once (:class:`Env`), and the
platform's own settings are read here (:meth:`Settings.from_env`)."""

from __future__ import annotations

import enum
import os
from collections.abc import Mapping
from dataclasses import dataclass

from streamer.limits import MAX_EXECUTION_INPUT_BYTES
from streamer.windows import store_mode

__all__ = ["LOCAL_ACCOUNT", "LOCAL_DEV_SECRET", "LOCAL_REGION", "Env", "Settings", "dev_jwt_secret", "restore_environ"]


class Env(enum.StrEnum):
    """Every ``STREAMER_*`` environment variable, named once. Modules read them as ``os.environ.get(Env.X)``;
    ``docs/configuration.md`` says what each does (a test keeps the two in step)."""

    # The platform's functions (Settings.from_env)
    CONNECTIONS_TABLE = "STREAMER_CONNECTIONS_TABLE"
    REQUESTS_TABLE = "STREAMER_REQUESTS_TABLE"
    EVENTS_TABLE = "STREAMER_EVENTS_TABLE"
    QUOTAS_TABLE = "STREAMER_QUOTAS_TABLE"
    STATE_MACHINE_ARN_PREFIX = "STREAMER_STATE_MACHINE_ARN_PREFIX"
    APIGW_ENDPOINT = "STREAMER_APIGW_ENDPOINT"
    PROGRESS_INTERVAL_MS = "STREAMER_PROGRESS_INTERVAL_MS"
    RATE_LIMIT_PER_MINUTE = "STREAMER_RATE_LIMIT_PER_MINUTE"
    REPLY_ROUTE_RESPONSE = "STREAMER_REPLY_ROUTE_RESPONSE"
    REQUEST_TTL_SECONDS = "STREAMER_REQUEST_TTL_SECONDS"
    MAX_CONNECTIONS_PER_USER = "STREAMER_MAX_CONNECTIONS_PER_USER"
    MAX_REQUESTS_IN_FLIGHT_PER_USER = "STREAMER_MAX_REQUESTS_IN_FLIGHT_PER_USER"
    MAX_MESSAGES_PER_SECOND_PER_USER = "STREAMER_MAX_MESSAGES_PER_SECOND_PER_USER"
    MESSAGE_WINDOWS = "STREAMER_MESSAGE_WINDOWS"
    CONNECTION_ADMISSION = "STREAMER_CONNECTION_ADMISSION"
    ALLOWED_ORIGINS = "STREAMER_ALLOWED_ORIGINS"
    ALLOW_MISSING_ORIGIN = "STREAMER_ALLOW_MISSING_ORIGIN"
    RECONCILE_PENDING_AFTER_SECONDS = "STREAMER_RECONCILE_PENDING_AFTER_SECONDS"
    RECONCILE_RUNNING_AFTER_SECONDS = "STREAMER_RECONCILE_RUNNING_AFTER_SECONDS"
    RECONCILE_GIVE_UP_AFTER_SECONDS = "STREAMER_RECONCILE_GIVE_UP_AFTER_SECONDS"
    DISABLE_PLUGIN_AUTOLOAD = "STREAMER_DISABLE_PLUGIN_AUTOLOAD"
    # JWT verification (streamer.auth.AuthConfig.from_env)
    JWT_SECRET = "STREAMER_JWT_SECRET"
    JWT_SECRET_ARN = "STREAMER_JWT_SECRET_ARN"
    JWT_ALGORITHMS = "STREAMER_JWT_ALGORITHMS"
    JWT_JWKS_URL = "STREAMER_JWT_JWKS_URL"
    JWT_ISSUER = "STREAMER_JWT_ISSUER"
    JWT_AUDIENCE = "STREAMER_JWT_AUDIENCE"
    JWT_LEEWAY = "STREAMER_JWT_LEEWAY"
    JWT_REQUIRED_SCOPE = "STREAMER_JWT_REQUIRED_SCOPE"
    # The command line and the local stack
    TEMPLATE = "STREAMER_TEMPLATE"
    STATEMACHINES_DIR = "STREAMER_STATEMACHINES_DIR"
    URL = "STREAMER_URL"
    TOKEN = "STREAMER_TOKEN"
    CONSOLE_TOKEN = "STREAMER_CONSOLE_TOKEN"
    LOG_LEVEL = "STREAMER_LOG_LEVEL"
    LOG_FORMAT = "STREAMER_LOG_FORMAT"
    LOCAL = "STREAMER_LOCAL"
    LOCAL_HOST = "STREAMER_LOCAL_HOST"
    LOCAL_PORT = "STREAMER_LOCAL_PORT"
    LOCAL_MOTO_PORT = "STREAMER_LOCAL_MOTO_PORT"
    LOCAL_LAMBDA_PORT = "STREAMER_LOCAL_LAMBDA_PORT"
    LOCAL_SFN_ENDPOINT = "STREAMER_LOCAL_SFN_ENDPOINT"
    LOCAL_IDLE_TIMEOUT = "STREAMER_LOCAL_IDLE_TIMEOUT"
    LOCAL_MAX_CONNECTION_DURATION = "STREAMER_LOCAL_MAX_CONNECTION_DURATION"
    LOCAL_INVOKE = "STREAMER_LOCAL_INVOKE"
    LOCAL_STATE_FILE = "STREAMER_LOCAL_STATE_FILE"
    LOCAL_METRICS_FILE = "STREAMER_LOCAL_METRICS_FILE"
    LOCAL_ON_FAILURE_FILE = "STREAMER_LOCAL_ON_FAILURE_FILE"
    LOCAL_RESTARTS = "STREAMER_LOCAL_RESTARTS"
    TEST_FAULTS = "STREAMER_TEST_FAULTS"


def jwt_algorithms(environ: Mapping[str, str]) -> tuple[str, ...]:
    """The JWT allow-list ``STREAMER_JWT_*`` asks for (``streamer.auth.AuthConfig`` checks it):
    ``STREAMER_JWT_ALGORITHMS``, else ``RS256`` when only a JWKS URL is configured, else ``HS256``. Empty
    values count as unset."""
    algorithms_raw = environ.get(Env.JWT_ALGORITHMS, "").strip()
    if algorithms_raw:
        return tuple(part.strip() for part in algorithms_raw.split(",") if part.strip())
    if environ.get(Env.JWT_JWKS_URL, "").strip() and not environ.get(Env.JWT_SECRET):
        return ("RS256",)
    return ("HS256",)


#: The region and account the local stack (moto, the local gateway) pretends to be in.
LOCAL_REGION = "us-east-1"
LOCAL_ACCOUNT = "123456789012"
#: The public development secret ``streamer local`` and ``streamer token`` use when STREAMER_JWT_SECRET is
#: unset (``streamer local`` warns loudly). Never accepted by a deployed stack: it reads its secret by ARN.
LOCAL_DEV_SECRET = "streamer-local-development-secret-do-not-use-in-production"


def restore_environ(saved: dict[str, str | None]) -> None:
    """Put back the variables a caller overrode (``None``: it was unset), and forget them."""
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    saved.clear()


def dev_jwt_secret(environ: Mapping[str, str] | None = None) -> str:
    """The HS256 secret local tools sign and verify with: ``STREAMER_JWT_SECRET``, else the public dev secret."""
    env = os.environ if environ is None else environ
    return env.get(Env.JWT_SECRET) or LOCAL_DEV_SECRET


def _flag(value: str | None, default: bool) -> bool:
    """A boolean variable: unset → ``default``; ``0``/``false``/``no`` → False; anything else → True."""
    return default if value is None else value.strip().lower() not in ("0", "false", "no")


def _keys(value: str) -> tuple[str, ...]:
    """A comma-separated list, blanks dropped."""
    return tuple(v.strip() for v in value.split(",") if v.strip())


@dataclass(frozen=True)
class Settings:
    connections_table: str = "streamer-connections"
    requests_table: str = "streamer-requests"
    events_table: str = "streamer-events"
    #: ARN of workflow W's state machine = prefix + W.
    state_machine_arn_prefix: str = f"arn:aws:states:{LOCAL_REGION}:{LOCAL_ACCOUNT}:stateMachine:streamer-"
    #: API Gateway Management API endpoint (https://{api-id}.execute-api.{region}.amazonaws.com/{stage}).
    apigw_endpoint: str | None = None
    progress_interval_ms: int = 100
    rate_limit_per_minute: int = 120
    #: The route keys that have a route response (``$default``): on them the router returns its last reply as
    #: the integration response's body instead of posting it (one ``PostToConnection`` less per message).
    reply_route_response: tuple[str, ...] = ()
    request_ttl_seconds: int = 7 * 24 * 3600
    max_execution_input_bytes: int = MAX_EXECUTION_INPUT_BYTES
    #: Per-user quotas (``streamer.quotas``; 0 turns one off). A well-behaved client never meets them.
    quotas_table: str = "streamer-quotas"
    max_connections_per_user: int = 10
    max_requests_in_flight_per_user: int = 100
    max_messages_per_second_per_user: int = 20
    #: Where the per-message windows (the connection's rate, the user's messages per second) are counted:
    #: ``dynamodb``, or ``memory`` where one process runs every ``$default`` invocation (``streamer.windows``).
    message_windows: str = "dynamodb"
    #: Where connections are admitted (the user's connection slots, the rows' writes): ``dynamodb``, or
    #: ``memory`` where one process runs every ``$connect`` and ``$disconnect`` (``streamer.admission``).
    connection_admission: str = "dynamodb"
    #: Browser origins allowed to open a connection (exact matches, ``$connect``); a handshake without an
    #: ``Origin`` header (a non-browser client) is allowed unless ``allow_missing_origin`` is False.
    allowed_origins: tuple[str, ...] = ()
    allow_missing_origin: bool = True
    #: The reconciler (``streamer.reconciler``): a request PENDING this long is re-driven, one RUNNING with no
    #: activity this long is compared with its execution, one PENDING or RUNNING this long is ended.
    reconcile_pending_after_seconds: int = 300
    reconcile_running_after_seconds: int = 900
    reconcile_give_up_after_seconds: int = 24 * 3600

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ
        d = cls()
        return cls(
            connections_table=env.get(Env.CONNECTIONS_TABLE, d.connections_table),
            requests_table=env.get(Env.REQUESTS_TABLE, d.requests_table),
            events_table=env.get(Env.EVENTS_TABLE, d.events_table),
            state_machine_arn_prefix=env.get(Env.STATE_MACHINE_ARN_PREFIX, d.state_machine_arn_prefix),
            apigw_endpoint=env.get(Env.APIGW_ENDPOINT) or None,
            progress_interval_ms=int(env.get(Env.PROGRESS_INTERVAL_MS, d.progress_interval_ms)),
            rate_limit_per_minute=int(env.get(Env.RATE_LIMIT_PER_MINUTE, d.rate_limit_per_minute)),
            reply_route_response=_keys(env.get(Env.REPLY_ROUTE_RESPONSE, "")),
            request_ttl_seconds=int(env.get(Env.REQUEST_TTL_SECONDS, d.request_ttl_seconds)),
            quotas_table=env.get(Env.QUOTAS_TABLE, d.quotas_table),
            max_connections_per_user=int(env.get(Env.MAX_CONNECTIONS_PER_USER, d.max_connections_per_user)),
            max_requests_in_flight_per_user=int(
                env.get(Env.MAX_REQUESTS_IN_FLIGHT_PER_USER, d.max_requests_in_flight_per_user)
            ),
            max_messages_per_second_per_user=int(
                env.get(Env.MAX_MESSAGES_PER_SECOND_PER_USER, d.max_messages_per_second_per_user)
            ),
            message_windows=store_mode(Env.MESSAGE_WINDOWS, env.get(Env.MESSAGE_WINDOWS)),
            connection_admission=store_mode(Env.CONNECTION_ADMISSION, env.get(Env.CONNECTION_ADMISSION)),
            allowed_origins=_keys(env.get(Env.ALLOWED_ORIGINS, "")),
            allow_missing_origin=_flag(env.get(Env.ALLOW_MISSING_ORIGIN), d.allow_missing_origin),
            reconcile_pending_after_seconds=int(
                env.get(Env.RECONCILE_PENDING_AFTER_SECONDS, d.reconcile_pending_after_seconds)
            ),
            reconcile_running_after_seconds=int(
                env.get(Env.RECONCILE_RUNNING_AFTER_SECONDS, d.reconcile_running_after_seconds)
            ),
            reconcile_give_up_after_seconds=int(
                env.get(Env.RECONCILE_GIVE_UP_AFTER_SECONDS, d.reconcile_give_up_after_seconds)
            ),
        )

    def state_machine_arn(self, workflow: str) -> str:
        return self.state_machine_arn_prefix + workflow
