"""``streamer local``: the whole platform on one machine — no AWS account, no Docker.

What runs (see ``docs/local.md``)::

    streamer local (this process, asyncio)
    ├── gateway        API Gateway WebSocket API + Management API   ws://HOST:PORT  (aiohttp)
    ├── stream poller  the requests table's event source mapping    (a thread per mapping)
    ├── event poller   EventBridge rules on execution status changes (a thread)
    ├── supervisor     restarts the Lambda endpoint if it dies
    ├── child: Lambda endpoint   the Lambda Invoke API, handlers in threads   --lambda-port
    └── child: moto server       DynamoDB, DynamoDB Streams, Step Functions   --moto-port

Everything is derived from ``infra/template.yaml`` (``streamer.deploy.template``): tables, functions, routes, the
stream mapping, state machines, the EventBridge rules on execution status changes and the functions'
environment. The supervisor binds every listening socket itself and hands the children theirs, so a taken
port is reported before anything starts, a restarted Lambda endpoint keeps its port (and the requests
queued meanwhile), and no port outlives the command.

Stdout carries one machine-readable line, ``streamer local ready ws://HOST:PORT …``, once everything is up;
the banner and the logs go to stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import errno
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from streamer.local.lambda_endpoint import function_arn

if TYPE_CHECKING:
    from streamer.local.eventbridge import RuleConfig

__all__ = [
    "ACCOUNT",
    "READY_PREFIX",
    "REGION",
    "STACK_NAME",
    "LocalPlan",
    "StartupError",
    "add_subcommand",
    "function_arn",
    "function_environment",
    "local_refs",
    "local_table_names",
    "plan_from_template",
    "run_local",
]

log = logging.getLogger("streamer.local")

STACK_NAME = "streamer"
REGION = "us-east-1"
ACCOUNT = "123456789012"
READY_PREFIX = "streamer local ready "
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8765
CHILD_READY_TIMEOUT = 90.0
#: Restarts of the Lambda endpoint allowed within RESTART_WINDOW seconds before giving up.
MAX_RESTARTS = 5
RESTART_WINDOW = 60.0
#: How often the EventBridge stand-in lists executions (seconds).
EXECUTION_EVENTS_POLL_INTERVAL = 0.5
#: Placeholders of plugin-shipped definitions that the template does not list (the documented contract).
DEFAULT_SUBSTITUTIONS = {"StepRunnerFunctionArn": "StepRunnerFunction", "NotifyFunctionArn": "NotifyFunction"}


class StartupError(Exception):
    """``streamer local`` cannot start; the message is the one-line reason printed to the user."""


def _kebab(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "-", name).lower()


def local_table_names(template: Mapping[str, Any]) -> dict[str, str]:
    """``{logical id: local table name}``: the one naming rule, ``streamer-`` + the id without ``Table``.

    ``ConnectionsTable`` → ``streamer-connections`` (the defaults of ``streamer.config.Settings``).
    """
    from streamer.deploy.template import table_definitions

    out: dict[str, str] = {}
    for logical_id in table_definitions(dict(template)):
        base = logical_id[: -len("Table")] if logical_id.endswith("Table") and logical_id != "Table" else logical_id
        out[logical_id] = f"{STACK_NAME}-{_kebab(base)}"
    return out


@dataclass(frozen=True)
class StateMachinePlan:
    workflow: str
    definition_path: Path
    substitutions: Mapping[str, str]  # ${Var} → function logical id


@dataclass
class LocalPlan:
    """Everything read from the template (and the plugins) before anything starts."""

    template_path: Path
    template: dict[str, Any]
    functions: dict[str, Any]  # logical id → streamer.deploy.template.FunctionSpec
    routes: dict[str, str]
    route_selection_expression: str
    stage: str
    tables: dict[str, dict[str, Any]]  # logical id → create_table kwargs
    table_names: dict[str, str]
    state_machines: list[StateMachinePlan]
    workflows: dict[str, str] = field(default_factory=dict)  # name → description (plugins)
    warnings: list[str] = field(default_factory=list)
    #: EventBridge rules that receive execution status changes
    event_rules: list[RuleConfig] = field(default_factory=list)

    def state_machine_arn_prefix(self) -> str:
        return f"arn:aws:states:{REGION}:{ACCOUNT}:stateMachine:{STACK_NAME}-"


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def plan_from_template(template_path: Path | str | None = None, *, check_plugins: bool = True) -> LocalPlan:
    """Read the template and the installed plugins. Raises :class:`StartupError` with a one-line reason."""
    from streamer.deploy import template as tpl

    path = Path(template_path) if template_path is not None else tpl.default_template_path()
    try:
        template = tpl.load_template(path)
        functions = tpl.functions(template)
        routes = tpl.websocket_routes(template)
        expression = tpl.route_selection_expression(template)
        tables = tpl.table_definitions(template)
        machines = tpl.state_machines(template, path)
        params = tpl.parameter_defaults(template)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise StartupError(f"template {path}: {_one_line(exc)}") from exc
    for route, fn in routes.items():
        if fn not in functions:
            raise StartupError(f"template {path}: route {route} targets unknown function {fn}")
    plan = LocalPlan(
        template_path=path,
        template=template,
        functions=dict(functions),
        routes=dict(routes),
        route_selection_expression=expression,
        stage=params.get("StageName", "local"),
        tables=tables,
        table_names=local_table_names(template),
        state_machines=[
            StateMachinePlan(sm.workflow, sm.definition_path, dict(sm.substitutions)) for sm in machines.values()
        ],
    )
    known = {sm.workflow for sm in plan.state_machines}
    if check_plugins:
        _add_plugin_workflows(plan, known)
        # Definitions the template does not list: statemachines/*.asl.json and those plugins ship.
        from streamer.deploy.statemachines import discover

        try:
            found = discover(path.parent.parent / "statemachines")
        except Exception as exc:
            raise StartupError(f"plugins: {_one_line(exc)}") from exc
        for workflow, file in found.items():
            if workflow not in known:
                known.add(workflow)
                plan.state_machines.append(StateMachinePlan(workflow, Path(file), DEFAULT_SUBSTITUTIONS))
        for name in plan.workflows:
            if name not in known:
                plan.warnings.append(f"workflow {name} has no state machine definition")
    for sm in plan.state_machines:
        for var, fn in sm.substitutions.items():
            if fn not in plan.functions:
                raise StartupError(f"state machine {sm.workflow}: ${{{var}}} names unknown function {fn}")
    from streamer.local.eventbridge import status_change_rules

    try:
        plan.event_rules = status_change_rules(template, local_refs(plan))
    except (ValueError, KeyError, TypeError) as exc:
        raise StartupError(f"template {path}: {_one_line(exc)}") from exc
    return plan


def _add_plugin_workflows(plan: LocalPlan, known: set[str]) -> None:
    """Fail on a broken plugin set; note the workflows the plugins declare."""
    from streamer import plugins

    try:
        errors = plugins.plugin_errors()
        workflows = plugins.workflows()
    except Exception as exc:
        raise StartupError(f"plugins: {_one_line(exc)}") from exc
    if errors:
        more = f" (+{len(errors) - 1} more)" if len(errors) > 1 else ""
        raise StartupError(f"plugins: {_one_line(errors[0])}{more}")
    for name, wf in workflows.items():
        plan.workflows[name] = wf.description
    for sm in plan.state_machines:
        if sm.workflow not in workflows:
            plan.warnings.append(f"state machine {sm.workflow} has no plugin workflow of that name")


def local_refs(plan: LocalPlan) -> dict[str, Any]:
    """Local values of the template's ``Ref`` / ``Fn::GetAtt`` targets and pseudo parameters."""
    from streamer.deploy.template import parameter_defaults

    refs: dict[str, Any] = dict(parameter_defaults(plan.template))
    refs.update(
        {
            "AWS::Region": REGION,
            "AWS::AccountId": ACCOUNT,
            "AWS::Partition": "aws",
            "AWS::URLSuffix": "amazonaws.com",
            "AWS::StackName": STACK_NAME,
            "AWS::NoValue": "",
        }
    )
    for logical_id, name in plan.table_names.items():
        refs[logical_id] = name
        refs[f"{logical_id}.Arn"] = f"arn:aws:dynamodb:{REGION}:{ACCOUNT}:table/{name}"
    for logical_id in plan.functions:
        refs[logical_id] = logical_id
        refs[f"{logical_id}.Arn"] = function_arn(logical_id)
    for logical_id, res in plan.template.get("Resources", {}).items():
        if isinstance(res, dict) and res.get("Type") == "AWS::ApiGatewayV2::Api":
            refs.setdefault(logical_id, "local")
    return refs


def function_environment(
    plan: LocalPlan,
    *,
    gateway_http: str,
    moto_url: str,
    lambda_url: str,
    sfn_url: str,
    jwt_secret: str,
) -> dict[str, str]:
    """The environment every local function sees (one process runs them all, so it is one merged set).

    The template's ``Globals`` and per-function variables are resolved against local values; then the AWS
    endpoints are pointed at the local services.
    """
    from streamer.deploy.template import resolve_intrinsics

    refs = local_refs(plan)
    env: dict[str, str] = {}
    origin: dict[str, str] = {}
    wired: set[str] = set()  # variables naming local resources (tables …): never overridden
    for fn_id, spec in plan.functions.items():
        for key, raw in (spec.environment or {}).items():
            try:
                value = resolve_intrinsics(raw, refs)
            except (KeyError, ValueError) as exc:
                plan.warnings.append(f"{fn_id}: environment {key} not resolvable locally ({_one_line(exc)})")
                continue
            value = str(value).lower() if isinstance(value, bool) else str(value)
            if key in env and env[key] != value:
                plan.warnings.append(
                    f"environment {key}: {origin[key]} and {fn_id} differ; all functions share {env[key]!r} locally"
                )
                continue
            env[key] = value
            origin[key] = fn_id
            if isinstance(raw, dict) and raw.get("Ref") in plan.table_names:
                wired.add(key)
    # The developer's own STREAMER_* settings (issuer, audience, algorithms …) win over the template's
    # defaults; what wires the local services together (below) does not.
    for key in list(env):
        if key.startswith("STREAMER_") and key in os.environ and key not in wired:
            env[key] = os.environ[key]
    env.update(
        {
            "AWS_REGION": REGION,
            "AWS_DEFAULT_REGION": REGION,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_SESSION_TOKEN": "testing",
            # Any other AWS service a plugin uses goes to moto too; the ones below are specific.
            "AWS_ENDPOINT_URL": moto_url,
            "AWS_ENDPOINT_URL_DYNAMODB": moto_url,
            "AWS_ENDPOINT_URL_DYNAMODB_STREAMS": moto_url,
            "AWS_ENDPOINT_URL_SFN": sfn_url,
            "AWS_ENDPOINT_URL_LAMBDA": lambda_url,
            "AWS_ENDPOINT_URL_APIGATEWAYMANAGEMENTAPI": gateway_http,
            "STREAMER_APIGW_ENDPOINT": gateway_http,
            "STREAMER_STATE_MACHINE_ARN_PREFIX": plan.state_machine_arn_prefix(),
            "STREAMER_JWT_SECRET": jwt_secret,
            "STREAMER_JWT_SECRET_ARN": "",
            "STREAMER_LOCAL": "1",
        }
    )
    for name in plan.table_names.values():  # streamer-audit-log → STREAMER_AUDIT_LOG_TABLE
        env.setdefault(f"STREAMER_{name[len(STACK_NAME) + 1 :].replace('-', '_').upper()}_TABLE", name)
    return env


def _child_base_env() -> dict[str, str]:
    """The parent's environment without AWS settings that could send a child to a real account."""
    drop = ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE")
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_ENDPOINT_URL") and k not in drop}
    env["AWS_CONFIG_FILE"] = os.devnull
    env["AWS_SHARED_CREDENTIALS_FILE"] = os.devnull
    env["PYTHONUNBUFFERED"] = "1"
    return env


def _listen(host: str, port: int, what: str) -> socket.socket:
    try:
        return socket.create_server((host, port), backlog=1024)
    except OSError as exc:
        reason = "address already in use" if exc.errno == errno.EADDRINUSE else (exc.strerror or str(exc))
        raise StartupError(f"cannot listen on {host}:{port} for the {what}: {reason}") from exc


def _url(sock: socket.socket, scheme: str = "http") -> str:
    host, port = sock.getsockname()[:2]
    return f"{scheme}://[{host}]:{port}" if ":" in host else f"{scheme}://{host}:{port}"


class Child:
    """One supervised subprocess serving on a socket the supervisor owns."""

    def __init__(self, name: str, argv: list[str], env: Mapping[str, str], sock: socket.socket, ready: str) -> None:
        self.name = name
        self.argv = argv
        self.env = dict(env)
        self.sock = sock
        self.ready_prefix = ready
        self.proc: subprocess.Popen[bytes] | None = None
        self._ready = threading.Event()
        self._stderr_tail: list[str] = []
        self._threads: list[threading.Thread] = []
        self.stopping = False

    def start(self) -> None:
        self._ready.clear()
        self._stderr_tail = []
        fd = self.sock.fileno()
        self.proc = subprocess.Popen(
            [*self.argv, "--fd", str(fd), "--watch-stdin"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=self.env,
            pass_fds=(fd,),
            start_new_session=True,  # Ctrl-C reaches only the supervisor, which stops children in order
        )
        assert self.proc.stdout is not None and self.proc.stderr is not None
        self._threads = [
            threading.Thread(target=self._pump_stdout, args=(self.proc.stdout,), daemon=True),
            threading.Thread(target=self._pump_stderr, args=(self.proc.stderr,), daemon=True),
        ]
        for t in self._threads:
            t.start()

    def _pump_stdout(self, stream: IO[bytes]) -> None:
        out = logging.getLogger(f"streamer.local.{self.name}.stdout")
        for raw in iter(stream.readline, b""):
            line = raw.decode(errors="replace").rstrip("\n")
            if not self._ready.is_set() and line.startswith(self.ready_prefix):
                self._ready.set()
                continue
            out.info("%s", line)
        stream.close()

    def _pump_stderr(self, stream: IO[bytes]) -> None:
        for raw in iter(stream.readline, b""):
            line = raw.decode(errors="replace").rstrip("\n")
            self._stderr_tail = [*self._stderr_tail[-19:], line]
            sys.stderr.write(line + "\n")
            sys.stderr.flush()
        stream.close()

    def wait_ready(self, timeout: float) -> None:
        """Block until the child printed its ready line; :class:`StartupError` if it died or hung."""
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        while not self._ready.wait(0.05):
            code = self.proc.poll()
            if code is not None:
                for t in self._threads:
                    t.join(2)
                raise StartupError(f"{self.name} exited with code {code}: {self.last_error()}")
            if time.monotonic() > deadline:
                raise StartupError(f"{self.name} not ready after {timeout:.0f}s")

    def last_error(self) -> str:
        lines = [ln.strip() for ln in self._stderr_tail if ln.strip()]
        for ln in reversed(lines):
            if not ln.startswith(("File ", "Traceback", "^", "~")):
                return ln[:300]
        return "no output"

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout: float = 10.0) -> int | None:
        """SIGTERM, then SIGKILL after ``timeout``; returns the exit code."""
        self.stopping = True
        proc = self.proc
        if proc is None:
            return None
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                log.warning("%s did not stop within %.0fs; killing it", self.name, timeout)
                proc.kill()
                proc.wait(5)
        if proc.stdin is not None:
            with contextlib.suppress(OSError):
                proc.stdin.close()
        for t in self._threads:
            t.join(5)
        return proc.returncode


@dataclass
class LocalOptions:
    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    moto_port: int = 0
    lambda_port: int = 0
    sfn_endpoint: str | None = None
    idle_timeout: float = 600.0
    max_connection_duration: float = 7200.0
    template: str | None = None
    log_level: str = "INFO"
    log_format: str = "text"
    on_failure_file: str | None = None
    poll_interval: float = 0.1

    @classmethod
    def from_namespace(cls, ns: argparse.Namespace) -> LocalOptions:
        fields = cls.__dataclass_fields__
        return cls(**{k: v for k, v in vars(ns).items() if k in fields})


class LocalStack:
    """Start, supervise and stop everything. Use :func:`run_local` from the command line."""

    def __init__(self, options: LocalOptions) -> None:
        self.options = options
        self.children: dict[str, Child] = {}
        self.sockets: list[socket.socket] = []
        self.pollers: list[Any] = []
        self.poller_threads: list[threading.Thread] = []
        self.gateway: Any = None
        self.invoker: Any = None
        self.on_failure: Any = None
        self._stop = asyncio.Event()
        self._fatal: str | None = None
        self._restarts: list[float] = []

    # -- start ------------------------------------------------------------------------------------------

    def _jwt_secret(self) -> str:
        from streamer.config import dev_jwt_secret as jwt_secret

        if not os.environ.get("STREAMER_JWT_SECRET"):
            log.warning(
                "STREAMER_JWT_SECRET is not set: using the PUBLIC local development secret. Anyone can mint "
                "tokens for this stack; never expose it beyond this machine."
            )
        return jwt_secret()  # what `streamer token` signs with, so its tokens are accepted

    async def start(self) -> None:
        opts = self.options
        plan = await asyncio.to_thread(plan_from_template, opts.template)
        self.plan = plan
        for w in plan.warnings:
            log.warning("%s", w)
        gw_sock = _listen(opts.host, opts.port, "WebSocket gateway")
        self.sockets.append(gw_sock)
        moto_sock = _listen(opts.host, opts.moto_port, "moto server")
        self.sockets.append(moto_sock)
        lambda_sock = _listen(opts.host, opts.lambda_port, "Lambda endpoint")
        self.sockets.append(lambda_sock)
        self.gateway_http = _url(gw_sock)
        self.ws_url = _url(gw_sock, "ws")
        self.moto_url = _url(moto_sock)
        self.lambda_url = _url(lambda_sock)
        self.sfn_url = opts.sfn_endpoint or self.moto_url
        self.jwt_secret = self._jwt_secret()
        seen = len(plan.warnings)
        fn_env = function_environment(
            plan,
            gateway_http=self.gateway_http,
            moto_url=self.moto_url,
            lambda_url=self.lambda_url,
            sfn_url=self.sfn_url,
            jwt_secret=self.jwt_secret,
        )
        for w in plan.warnings[seen:]:
            log.warning("%s", w)
        base = _child_base_env()
        common = ["--log-level", opts.log_level, "--log-format", opts.log_format]
        self.children["lambda"] = Child(
            "lambda",
            [
                sys.executable,
                "-m",
                "streamer.local.lambda_endpoint",
                "--template",
                str(plan.template_path),
                *common,
            ],
            {**base, **fn_env},
            lambda_sock,
            "lambda endpoint ready ",
        )
        moto_env = {
            **base,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_REGION": REGION,
        }
        self.children["moto"] = Child(
            "moto",
            [
                sys.executable,
                "-m",
                "streamer.local.moto_server",
                "--lambda-endpoint",
                self.lambda_url,
                *common,
            ],
            moto_env,
            moto_sock,
            "moto server ready ",
        )
        for child in self.children.values():
            child.start()
        await asyncio.gather(*(asyncio.to_thread(c.wait_ready, CHILD_READY_TIMEOUT) for c in self.children.values()))
        await asyncio.to_thread(self._provision)
        await self._start_gateway(gw_sock)
        self._start_pollers()
        await self._start_event_rules()

    def _client(self, service: str, endpoint: str) -> Any:
        import boto3
        from botocore.config import Config

        return boto3.session.Session().client(
            service,  # type: ignore[call-overload]
            endpoint_url=endpoint,
            region_name=REGION,
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
            config=Config(retries={"max_attempts": 3, "mode": "standard"}),
        )

    def _provision(self) -> None:
        """Tables and state machines, from the plan."""
        plan = self.plan
        ddb = self._client("dynamodb", self.moto_url)
        for logical_id, kwargs in plan.tables.items():
            kwargs = dict(kwargs)
            ttl = kwargs.pop("TimeToLiveSpecification", None)
            name = plan.table_names[logical_id]
            ddb.create_table(TableName=name, **kwargs)
            if ttl:
                ddb.update_time_to_live(TableName=name, TimeToLiveSpecification=ttl)
            log.info("table %s (%s)", name, logical_id)
        self._deploy_state_machines()

    def _deploy_state_machines(self) -> None:
        from streamer.deploy.statemachines import LOCAL_ROLE_ARN, deploy, validate

        plan = self.plan
        if not plan.state_machines:
            return
        problems = validate([sm.definition_path for sm in plan.state_machines], check_workflow=False)
        for problem in problems:
            log.warning("state machine definition %s: %s: %s", problem.file, problem.state, problem.reason)
        substitutions: dict[str, str] = {}
        for sm in plan.state_machines:
            substitutions.update({var: function_arn(fn) for var, fn in sm.substitutions.items()})
        try:
            deployed = deploy(
                {sm.workflow: sm.definition_path for sm in plan.state_machines},
                client=self._client("stepfunctions", self.sfn_url),
                role_arn=LOCAL_ROLE_ARN,
                name_prefix=f"{STACK_NAME}-",
                substitutions=substitutions,
            )
        except Exception as exc:
            raise StartupError(f"state machines: {_one_line(exc)}") from exc
        for d in deployed:
            expected = plan.state_machine_arn_prefix() + d.name[len(STACK_NAME) + 1 :]
            if d.arn != expected:
                log.warning("state machine %s has ARN %s, expected %s", d.name, d.arn, expected)
            log.info("state machine %s %s", d.name, d.action)

    async def _start_gateway(self, sock: socket.socket) -> None:
        from streamer.local.gateway import Gateway, GatewayConfig, HttpAsyncInvoker

        opts = self.options
        self.invoker = HttpAsyncInvoker(self.lambda_url)
        self.gateway = Gateway(
            GatewayConfig(
                routes=self.plan.routes,
                route_selection_expression=self.plan.route_selection_expression,
                stage=self.plan.stage,
                idle_timeout=opts.idle_timeout,
                max_duration=opts.max_connection_duration,
            ),
            self.invoker,
        )
        await self.gateway.start(sock=sock)

    def _start_pollers(self) -> None:
        from streamer.local.stream_poller import (
            HttpLambdaInvoker,
            OnFailureStore,
            StreamPoller,
            mappings_from_template,
        )

        self.on_failure = OnFailureStore(self.options.on_failure_file)
        timeouts = {name: float(spec.timeout) for name, spec in self.plan.functions.items()}
        for mapping in mappings_from_template(self.plan.template, self.plan.table_names):
            poller = StreamPoller(
                mapping,
                dynamodb=self._client("dynamodb", self.moto_url),
                streams=self._client("dynamodbstreams", self.moto_url),
                invoke=HttpLambdaInvoker(self.lambda_url, timeout=timeouts.get(mapping.function_name, 900) + 30),
                on_failure=self.on_failure,
                poll_interval=self.options.poll_interval,
                region=REGION,
            )
            t = threading.Thread(target=poller.run, name=f"stream-{mapping.table_name}", daemon=True)
            t.start()
            self.pollers.append(poller)
            self.poller_threads.append(t)
            log.info(
                "stream %s -> %s (batch %d, retries %d, bisect %s, partial batch responses %s)",
                mapping.table_name,
                mapping.function_name,
                mapping.batch_size,
                mapping.maximum_retry_attempts,
                mapping.bisect_batch_on_function_error,
                mapping.report_batch_item_failures,
            )

    async def _start_event_rules(self) -> None:
        """EventBridge for the rules on execution status changes (``streamer.local.eventbridge``)."""
        from streamer.local.eventbridge import ExecutionEventsPoller
        from streamer.local.stream_poller import HttpLambdaInvoker

        rules = self.plan.event_rules
        if not rules or not self.plan.state_machines:
            return
        timeout = max(self.plan.functions[t.function_name].timeout for r in rules for t in r.targets) + 30
        poller = ExecutionEventsPoller(
            rules,
            sfn=self._client("stepfunctions", self.sfn_url),
            state_machine_arns=[self.plan.state_machine_arn_prefix() + sm.workflow for sm in self.plan.state_machines],
            invoke=HttpLambdaInvoker(self.lambda_url, timeout=float(timeout)),
            poll_interval=EXECUTION_EVENTS_POLL_INTERVAL,
            account=ACCOUNT,
            region=REGION,
        )
        # Executions that ended before now are not delivered (a rule only sees events after it exists).
        await asyncio.to_thread(poller.prime)
        t = threading.Thread(target=poller.run, name="execution-events", daemon=True)
        t.start()
        self.pollers.append(poller)
        self.poller_threads.append(t)
        for rule in rules:
            log.info(
                "event rule %s: Step Functions execution status changes -> %s (polled every %gs)",
                rule.name,
                ", ".join(t.function_name for t in rule.targets),
                EXECUTION_EVENTS_POLL_INTERVAL,
            )

    # -- supervise --------------------------------------------------------------------------------------

    async def supervise(self) -> None:
        """Until stopped: restart the Lambda endpoint when it dies; a dead moto is fatal (data lost)."""
        while not self._stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), timeout=0.5)
            if self._stop.is_set():
                return
            moto = self.children["moto"]
            if not moto.alive() and not moto.stopping:
                code = moto.proc.poll() if moto.proc else None
                self._fatal = f"moto server exited with code {code}: {moto.last_error()}"
                self._stop.set()
                return
            lam = self.children["lambda"]
            if not lam.alive() and not lam.stopping:
                code = lam.proc.poll() if lam.proc else None
                now = time.monotonic()
                self._restarts = [t for t in self._restarts if now - t < RESTART_WINDOW] + [now]
                if len(self._restarts) > MAX_RESTARTS:
                    self._fatal = (
                        f"Lambda endpoint died {len(self._restarts)} times in {RESTART_WINDOW:.0f}s "
                        f"(last exit code {code}: {lam.last_error()})"
                    )
                    self._stop.set()
                    return
                log.error("Lambda endpoint exited with code %s (%s); restarting it", code, lam.last_error())
                await asyncio.to_thread(lam.stop, 1.0)
                lam.stopping = False
                lam.start()
                try:
                    await asyncio.to_thread(lam.wait_ready, CHILD_READY_TIMEOUT)
                except StartupError as exc:
                    log.error("Lambda endpoint restart failed: %s", exc)
                    continue
                log.info("Lambda endpoint restarted on %s", self.lambda_url)

    def request_stop(self) -> None:
        self._stop.set()

    # -- stop -------------------------------------------------------------------------------------------

    async def stop(self) -> None:
        """Gateway first (connections closed with 1001; $disconnect still reaches the Lambda endpoint),
        then the stream pollers, then the children; every socket closed."""
        if self.gateway is not None:
            try:
                await asyncio.wait_for(self.gateway.stop(), timeout=20)
            except Exception:
                log.exception("gateway did not stop cleanly")
        if self.invoker is not None:
            await self.invoker.close()
        for poller in self.pollers:
            poller.stop()
        for t in self.poller_threads:
            await asyncio.to_thread(t.join, 30)
        for name in ("lambda", "moto"):
            child = self.children.get(name)
            if child is not None:
                code = await asyncio.to_thread(child.stop)
                log.info("%s stopped (exit code %s)", name, code)
        for s in self.sockets:
            s.close()
        self.sockets.clear()

    # -- banner -----------------------------------------------------------------------------------------

    def banner(self) -> str:
        plan, opts = self.plan, self.options
        workflows = [sm.workflow for sm in plan.state_machines]
        example = "echo" if "echo" in workflows else (workflows[0] if workflows else "<workflow>")
        payload = '{"message": "hi"}' if example == "echo" else "{}"
        stage_url = f"{self.ws_url}/{plan.stage}"
        lines = [
            "streamer local — the whole platform on this machine (no AWS account, no Docker)",
            f"  WebSocket        {self.ws_url}   (or {stage_url}; stage {plan.stage})",
            f"  Management API   {self.gateway_http}/@connections/{{connectionId}}",
            f"  Lambda Invoke    {self.lambda_url}   ({', '.join(sorted(plan.functions))})",
            f"  moto             {self.moto_url}   (DynamoDB, DynamoDB Streams"
            + (", Step Functions)" if not opts.sfn_endpoint else ")"),
            "  Step Functions   "
            + (
                f"{opts.sfn_endpoint} (external; start it with LAMBDA_ENDPOINT={self.lambda_url})"
                if opts.sfn_endpoint
                else "embedded (moto's ASL interpreter)"
            ),
            f"  tables           {', '.join(plan.table_names[t] for t in plan.tables)}",
            "  workflows        "
            + (", ".join(f"{sm.workflow}" for sm in plan.state_machines) or "none (install a plugin)"),
            f"  routes           {', '.join(f'{k} -> {v}' for k, v in plan.routes.items())}"
            f"   (selection {plan.route_selection_expression})",
            "  event rules      "
            + (
                ", ".join(f"{r.name} -> {', '.join(t.function_name for t in r.targets)}" for r in plan.event_rules)
                + f"   (Step Functions execution status changes, polled every {EXECUTION_EVENTS_POLL_INTERVAL:g}s)"
                if plan.event_rules
                else "none"
            ),
            f"  limits           128 KiB per message, idle {opts.idle_timeout:g}s, "
            f"max connection {opts.max_connection_duration:g}s",
            "",
            "  get a token      streamer token --sub alice",
            f"  try it           streamer submit {example} --url {self.ws_url} --payload '{payload}'",
            "  stop             Ctrl-C",
        ]
        return "\n".join(lines)

    def ready_line(self) -> str:
        return (
            f"{READY_PREFIX}{self.ws_url} http={self.gateway_http} lambda={self.lambda_url} "
            f"moto={self.moto_url} sfn={self.sfn_url}"
        )


async def _run(options: LocalOptions) -> int:
    stack = LocalStack(options)
    loop = asyncio.get_running_loop()
    signals_seen: list[int] = []

    def on_signal(signum: int) -> None:
        signals_seen.append(signum)
        if len(signals_seen) == 1:
            log.info("%s received: shutting down", signal.Signals(signum).name)
            stack.request_stop()
        else:
            log.warning("second signal: stopping children now")
            for child in stack.children.values():
                if child.proc is not None and child.proc.poll() is None:
                    child.proc.kill()

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_signal, sig)
    start = asyncio.ensure_future(stack.start())
    stopper = asyncio.ensure_future(stack._stop.wait())
    reason: str | None = None
    try:
        await asyncio.wait({start, stopper}, return_when=asyncio.FIRST_COMPLETED)
        if not start.done():  # a signal during start-up
            start.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await start
        else:
            start.result()
            print(stack.banner(), file=sys.stderr, flush=True)
            print(stack.ready_line(), flush=True)
            await stack.supervise()
    except StartupError as exc:
        reason = str(exc)
    except Exception as exc:
        log.debug("start-up failed", exc_info=True)
        reason = f"{type(exc).__name__}: {_one_line(exc)}"
    finally:
        stopper.cancel()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
        await asyncio.shield(stack.stop())
    reason = reason or stack._fatal
    if reason:
        # Last line on stderr, after the shutdown logs: what a user (or a script) reads.
        print(f"streamer local: {reason}", file=sys.stderr, flush=True)
        return 1
    log.info("stopped")
    return 0


def run_local(options: argparse.Namespace | LocalOptions) -> int:
    """Run until Ctrl-C / SIGTERM. 0 after a clean stop; 1 with a one-line reason when it cannot start."""
    opts = options if isinstance(options, LocalOptions) else LocalOptions.from_namespace(options)
    from streamer.local._logging import configure_logging

    configure_logging("local", opts.log_level, opts.log_format)
    try:
        return asyncio.run(_run(opts))
    except KeyboardInterrupt:  # pragma: no cover - signals are handled in the loop
        return 130


def _env_float(name: str, default: float) -> float:
    value = os.environ.get(name)
    try:
        return float(value) if value else default
    except ValueError:
        return default


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    try:
        return int(value) if value else default
    except ValueError:
        return default


def add_subcommand(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``streamer local`` on the ``streamer`` command's subparsers."""
    p: argparse.ArgumentParser = subparsers.add_parser(
        "local",
        help="run the whole platform on this machine (no AWS account, no Docker)",
        description=(__doc__ or "").split("\n\n")[0],
    )
    p.add_argument(
        "--host",
        default=os.environ.get("STREAMER_LOCAL_HOST", DEFAULT_HOST),
        help="interface for every port (default 127.0.0.1; $STREAMER_LOCAL_HOST)",
    )
    p.add_argument(
        "--port",
        type=int,
        default=_env_int("STREAMER_LOCAL_PORT", DEFAULT_PORT),
        help="WebSocket + Management API port (default 8765; $STREAMER_LOCAL_PORT)",
    )
    p.add_argument(
        "--moto-port",
        type=int,
        default=_env_int("STREAMER_LOCAL_MOTO_PORT", 0),
        help="moto server port (default 0 = a free port)",
    )
    p.add_argument(
        "--lambda-port",
        type=int,
        default=_env_int("STREAMER_LOCAL_LAMBDA_PORT", 0),
        help="Lambda Invoke endpoint port (default 0 = a free port)",
    )
    p.add_argument(
        "--sfn-endpoint",
        default=os.environ.get("STREAMER_LOCAL_SFN_ENDPOINT") or None,
        help="use this Step Functions endpoint (e.g. AWS Step Functions Local) instead of the "
        "embedded engine; run it with LAMBDA_ENDPOINT=<the printed Lambda endpoint>",
    )
    p.add_argument(
        "--idle-timeout",
        type=float,
        default=_env_float("STREAMER_LOCAL_IDLE_TIMEOUT", 600.0),
        help="close idle WebSocket connections after this many seconds (API Gateway: 600; "
        "$STREAMER_LOCAL_IDLE_TIMEOUT)",
    )
    p.add_argument(
        "--max-connection-duration",
        type=float,
        default=_env_float("STREAMER_LOCAL_MAX_CONNECTION_DURATION", 7200.0),
        help="close every WebSocket connection after this many seconds (API Gateway: 7200; "
        "$STREAMER_LOCAL_MAX_CONNECTION_DURATION)",
    )
    p.add_argument("--template", default=None, help="deployment template (default infra/template.yaml)")
    p.add_argument(
        "--on-failure-file",
        default=os.environ.get("STREAMER_LOCAL_ON_FAILURE_FILE") or None,
        help="append stream records given up on to this JSON-lines file (always logged)",
    )
    p.add_argument(
        "--log-level",
        default=os.environ.get("STREAMER_LOG_LEVEL", "INFO"),
        choices=("DEBUG", "INFO", "WARNING", "ERROR"),
        type=str.upper,
    )
    p.add_argument("--log-format", choices=("text", "json"), default=os.environ.get("STREAMER_LOG_FORMAT", "text"))
    p.set_defaults(func=run_local)
    return p


def main(argv: list[str] | None = None) -> int:
    """``python -m streamer.local.stack`` (same as ``streamer local``)."""
    parser = argparse.ArgumentParser(prog="streamer")
    sub = parser.add_subparsers(dest="command", required=True)
    add_subcommand(sub)
    args = parser.parse_args(["local", *(argv if argv is not None else sys.argv[1:])])
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
