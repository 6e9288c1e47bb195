"""``streamer local``: the whole platform on one machine — no AWS account, no Docker.

What runs (see ``docs/local.md``)::

    streamer local (this process, asyncio)
    ├── gateway        API Gateway WebSocket API + Management API   ws://HOST:PORT  (aiohttp)
    │                  + the WebSocket route functions, in a thread pool (streamer.local.inprocess)
    ├── stream poller  the requests table's event source mapping    (a thread per mapping)
    ├── event poller   EventBridge rules on execution status changes (a thread)
    ├── supervisor     restarts the Lambda endpoint if it dies
    ├── child: Lambda endpoint   the Lambda Invoke API, handlers in threads   --lambda-port
    └── child: moto server       DynamoDB, DynamoDB Streams, Step Functions   --moto-port

This module assembles the rooms: the plan (:mod:`streamer.local.plan`, everything derived from the template),
the children on their sockets (:mod:`streamer.local.supervise`), tables and state machines
(:mod:`streamer.local.provision`), then the gateway and the pollers; it prints the banner and the ready line
and runs the signal loop (:func:`run_local`). The command line is ``streamer.cli.local``.

Stdout carries one machine-readable line, ``streamer local ready ws://HOST:PORT …``, once everything is up;
the banner and the logs go to stderr. Exit code 0 after Ctrl-C / SIGTERM, 1 with a one-line reason on stderr
(``streamer local: <reason>``) when it cannot start or loses a child for good.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import sys
import threading
from dataclasses import dataclass
from typing import Any

from streamer.config import LOCAL_ACCOUNT, LOCAL_REGION, Env
from streamer.local import StartupError
from streamer.local.plan import LocalPlan, function_environment, one_line, plan_from_template
from streamer.local.provision import client, provision
from streamer.local.supervise import Child, Supervisor, child_base_env, listen, url_of
from streamer.windows import MEMORY

__all__ = [
    "DEFAULT_HOST",
    "DEFAULT_PORT",
    "READY_PREFIX",
    "LocalOptions",
    "LocalStack",
    "StartupError",
    "run_local",
]

log = logging.getLogger("streamer.local")

READY_PREFIX = "streamer local ready "
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8765
#: How often the EventBridge stand-in lists executions (seconds).
EXECUTION_EVENTS_POLL_INTERVAL = 0.5


@dataclass
class LocalOptions:
    """What ``streamer local`` is asked for (the command line's flags, see ``streamer.cli.local``)."""

    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    moto_port: int = 0
    lambda_port: int = 0
    sfn_endpoint: str | None = None
    idle_timeout: float = 600.0
    max_connection_duration: float = 7200.0
    template: str | None = None
    project_dir: str | None = None
    log_level: str = "INFO"
    log_format: str = "text"
    on_failure_file: str | None = None
    poll_interval: float = 0.1


class LocalStack:
    """Start, supervise and stop everything. Use :func:`run_local` from the command line."""

    plan: LocalPlan

    def __init__(self, options: LocalOptions) -> None:
        self.options = options
        self.supervisor = Supervisor()
        self.sockets: list[socket.socket] = []
        self.pollers: list[Any] = []
        self.poller_threads: list[threading.Thread] = []
        self.gateway: Any = None
        self.invoker: Any = None
        self.on_failure: Any = None
        self._stop = asyncio.Event()
        self._fatal: str | None = None

    @property
    def children(self) -> dict[str, Child]:
        return self.supervisor.children

    # -- start ------------------------------------------------------------------------------------------

    def _jwt_secret(self) -> str:
        from streamer.config import dev_jwt_secret

        if not os.environ.get(Env.JWT_SECRET):
            log.warning(
                "STREAMER_JWT_SECRET is not set: using the PUBLIC local development secret. Anyone can mint "
                "tokens for this stack; never expose it beyond this machine."
            )
        return dev_jwt_secret()  # what `streamer token` signs with, so its tokens are accepted

    async def start(self) -> None:
        opts = self.options
        plan = await asyncio.to_thread(plan_from_template, opts.template, project_dir=opts.project_dir)
        self.plan = plan
        for w in plan.warnings:
            log.warning("%s", w)
        from streamer.local.exposure import LOOPBACK, exposure_refusal

        refusal = exposure_refusal(opts.host)
        if refusal:
            raise StartupError(refusal)
        gw_sock = self._listen(opts.host, opts.port, "WebSocket gateway")
        # No authentication on these two: never beyond this machine, whatever --host says.
        moto_sock = self._listen(LOOPBACK, opts.moto_port, "moto server")
        # Step Functions in a moto process of its own (unless an external engine is named): its interpreter's
        # threads and the DynamoDB calls of every message then hold two GILs, not one — moto was one core's
        # ceiling in every benchmark (docs/performance.md, "Local stack").
        sfn_sock = None if opts.sfn_endpoint else self._listen(LOOPBACK, 0, "moto server (Step Functions)")
        lambda_sock = self._listen(LOOPBACK, opts.lambda_port, "Lambda endpoint")
        self.gateway_http = url_of(gw_sock)
        self.ws_url = url_of(gw_sock, "ws")
        self.moto_url = url_of(moto_sock)
        self.lambda_url = url_of(lambda_sock)
        self.sfn_url = url_of(sfn_sock) if sfn_sock is not None else (opts.sfn_endpoint or "")
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
        if not os.environ.get(Env.ALLOWED_ORIGINS):
            # The stack's own pages (the console on the gateway's port) may connect; other origins may not.
            from streamer.origins import local_origins

            fn_env[Env.ALLOWED_ORIGINS] = ",".join(local_origins(opts.host, gw_sock.getsockname()[1]))
        self.allowed_origins = tuple(o for o in fn_env.get(Env.ALLOWED_ORIGINS, "").split(",") if o)
        self.function_env = fn_env
        for w in plan.warnings[seen:]:
            log.warning("%s", w)
        base = child_base_env()
        common = ["--log-level", opts.log_level, "--log-format", opts.log_format]
        lambda_argv = [sys.executable, "-m", "streamer.local.lambda_endpoint", "--template", str(plan.template_path)]
        self.supervisor.add(
            Child("lambda", [*lambda_argv, *common], {**base, **fn_env}, lambda_sock, "lambda endpoint ready "),
            restart=True,
        )
        moto_env = {
            **base,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_REGION": LOCAL_REGION,
        }
        moto_argv = [sys.executable, "-m", "streamer.local.moto_server", "--lambda-endpoint", self.lambda_url]
        # --role only labels the process (`ps`, the benchmarks' per-process figures).
        moto_role = ["--role", "dynamodb"]  # and DynamoDB Streams
        self.supervisor.add(
            Child("moto", [*moto_argv, *moto_role, *common], moto_env, moto_sock, "moto server ready "), restart=False
        )
        if sfn_sock is not None:
            sfn_role = ["--role", "stepfunctions"]
            self.supervisor.add(
                Child("moto-sfn", [*moto_argv, *sfn_role, *common], moto_env, sfn_sock, "moto server ready "),
                restart=False,
            )
        await self.supervisor.start_all()
        await asyncio.to_thread(
            provision,
            plan,
            dynamodb=client("dynamodb", self.moto_url),
            sfn=client("stepfunctions", self.sfn_url),
        )
        await self._start_gateway(gw_sock)
        self._start_pollers()
        await self._start_event_rules()
        self._start_reconciler()
        # Start-up is over: what it built is frozen out of the collector's way (streamer.local.heap).
        import gc

        from streamer.local.heap import settle_heap

        log.info("heap settled: %d objects frozen, gc thresholds %s", settle_heap(), gc.get_threshold())

    def _listen(self, host: str, port: int, what: str) -> socket.socket:
        sock = listen(host, port, what)
        self.sockets.append(sock)
        return sock

    async def _start_gateway(self, sock: socket.socket) -> None:
        from streamer.local.gateway import INTEGRATION_TIMEOUT, Gateway, GatewayConfig
        from streamer.local.inprocess import InProcessInvoker, invoke_mode
        from streamer.local.invoke import HttpAsyncInvoker

        opts = self.options
        try:
            self.invoke_mode = invoke_mode()
        except ValueError as exc:
            raise StartupError(str(exc)) from exc
        if self.invoke_mode == "http":  # the parity path: every route through the Lambda endpoint
            self.invoker = HttpAsyncInvoker(self.lambda_url, timeout=INTEGRATION_TIMEOUT)
        else:  # the route functions in this process, replies straight to the socket (streamer.local.inprocess)
            routed = {f: self.plan.functions[f] for f in self.plan.routes.values() if f in self.plan.functions}
            # One process runs every WebSocket route invocation: the message windows can live in it
            # (streamer.windows), and connections be admitted in it (streamer.admission).
            env = {**self.function_env, Env.MESSAGE_WINDOWS: MEMORY, Env.CONNECTION_ADMISSION: MEMORY}
            self.invoker = InProcessInvoker(routed, environment=env, integration_timeout=INTEGRATION_TIMEOUT)
            try:
                await asyncio.to_thread(self.invoker.preload)
            except Exception as exc:
                raise StartupError(f"cannot import a route handler: {type(exc).__name__}: {exc}") from exc
        self.gateway = Gateway(
            GatewayConfig(
                routes=self.plan.routes,
                route_selection_expression=self.plan.route_selection_expression,
                route_responses=self.plan.route_responses,
                stage=self.plan.stage,
                idle_timeout=opts.idle_timeout,
                max_duration=opts.max_connection_duration,
                allowed_origins=self.allowed_origins,
            ),
            self.invoker,
        )
        from streamer.console.local import mount_local  # the web console on this port (docs/console.md)

        self.console_path = mount_local(self, opts.host)
        if not isinstance(self.invoker, HttpAsyncInvoker):
            self.invoker.bind(self.gateway, asyncio.get_running_loop(), self.gateway_http)
        await self.gateway.start(sock=sock)
        where = "in the Lambda endpoint (HTTP)" if self.invoke_mode == "http" else "in this process"
        log.info("route functions run %s", where)

    def _invoker_for(self, functions: list[str]) -> Any:
        """A synchronous invoker that waits as long as the slowest of ``functions`` may run, plus slack."""
        from streamer.local.invoke import HttpLambdaInvoker

        timeout = max((self.plan.functions[f].timeout for f in functions if f in self.plan.functions), default=900)
        return HttpLambdaInvoker(self.lambda_url, timeout=float(timeout) + 30)

    def _run_poller(self, poller: Any, name: str) -> None:
        t = threading.Thread(target=poller.run, name=name, daemon=True)
        t.start()
        self.pollers.append(poller)
        self.poller_threads.append(t)

    def _start_pollers(self) -> None:
        from streamer.local.inprocess import InProcessInvoker
        from streamer.local.stream_poller import OnFailureStore, StreamPoller

        self.on_failure = OnFailureStore(self.options.on_failure_file)
        for mapping in self.plan.stream_mappings:
            poller = StreamPoller(
                mapping,
                dynamodb=client("dynamodb", self.moto_url),
                streams=client("dynamodbstreams", self.moto_url),
                invoke=self._invoker_for([mapping.function_name]),
                on_failure=self.on_failure,
                poll_interval=self.options.poll_interval,
                region=LOCAL_REGION,
            )
            if isinstance(self.invoker, InProcessInvoker):
                # A write to the table by a route function (the router's submit, cancel) wakes the poller:
                # the new record is read at once, not at the next poll.
                self.invoker.on_writes(mapping.table_name, poller.wake)
            self._run_poller(poller, f"stream-{mapping.table_name}")
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

        rules = self.plan.event_rules
        if not rules or not self.plan.state_machines:
            return
        poller = ExecutionEventsPoller(
            rules,
            sfn=client("stepfunctions", self.sfn_url),
            state_machine_arns=[self.plan.state_machine_arn_prefix() + sm.workflow for sm in self.plan.state_machines],
            invoke=self._invoker_for([t.function_name for r in rules for t in r.targets]),
            poll_interval=EXECUTION_EVENTS_POLL_INTERVAL,
            account=LOCAL_ACCOUNT,
            region=LOCAL_REGION,
        )
        # Executions that ended before now are not delivered (a rule only sees events after it exists).
        await asyncio.to_thread(poller.prime)
        self._run_poller(poller, "execution-events")
        for rule in rules:
            log.info(
                "event rule %s: Step Functions execution status changes -> %s (polled every %gs)",
                rule.name,
                ", ".join(t.function_name for t in rule.targets),
                EXECUTION_EVENTS_POLL_INTERVAL,
            )

    def _start_reconciler(self) -> None:
        """The reconciler's schedule (``streamer.local.reconciler_task``), when the template has the function."""
        from streamer.local.reconciler_task import FUNCTION, ReconcilerTask

        if FUNCTION in self.plan.functions:
            self._run_poller(ReconcilerTask(self._invoker_for([FUNCTION])), "reconciler")

    # -- supervise --------------------------------------------------------------------------------------

    async def supervise(self) -> None:
        """Until stopped: restart the Lambda endpoint when it dies; a dead moto is fatal (data lost)."""
        reason = await self.supervisor.watch(self._stop)
        if reason is not None:
            self._fatal = reason
            self._stop.set()

    def request_stop(self) -> None:
        self._stop.set()

    # -- stop -------------------------------------------------------------------------------------------

    async def stop(self) -> None:
        """Gateway first (connections closed with 1001; $disconnect still reaches the Lambda endpoint),
        then the pollers, then the children; every socket closed."""
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
        await self.supervisor.stop_all(("lambda", "moto-sfn", "moto"))
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
            f"  web console      {self.gateway_http}"
            f"{self.console_path or '/console/ (off: set $STREAMER_CONSOLE_TOKEN)'}",
            f"  Lambda Invoke    {self.lambda_url}   ({', '.join(sorted(plan.functions))})",
            f"  moto             {self.moto_url}   (DynamoDB, DynamoDB Streams)",
            "  Step Functions   "
            + (
                f"{opts.sfn_endpoint} (external; start it with LAMBDA_ENDPOINT={self.lambda_url})"
                if opts.sfn_endpoint
                else f"{self.sfn_url}   (moto's ASL interpreter, a process of its own)"
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
            stack.supervisor.kill_all()

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_signal, sig)
    start = asyncio.ensure_future(stack.start())
    stopper = asyncio.ensure_future(stack._stop.wait())
    reason: str | None = None
    state_file = None
    try:
        await asyncio.wait({start, stopper}, return_when=asyncio.FIRST_COMPLETED)
        if not start.done():  # a signal during start-up
            start.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await start
        else:
            start.result()
            print(stack.banner(), file=sys.stderr, flush=True)
            # The per-user state file `streamer executions` and the console find this stack by
            # (observe.localstate); written before the ready line, so whoever waits for that line finds it.
            from streamer.observe.localstate import publish, remove_state

            state_file = publish(stack)
            print(stack.ready_line(), flush=True)
            await stack.supervise()
    except StartupError as exc:
        reason = str(exc)
    except Exception as exc:
        log.debug("start-up failed", exc_info=True)
        reason = f"{type(exc).__name__}: {one_line(exc)}"
    finally:
        stopper.cancel()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
        if state_file is not None:
            remove_state(state_file)
        await asyncio.shield(stack.stop())
    reason = reason or stack._fatal
    if reason:
        # Last line on stderr, after the shutdown logs: what a user (or a script) reads.
        print(f"streamer local: {reason}", file=sys.stderr, flush=True)
        return 1
    log.info("stopped")
    return 0


def run_local(options: LocalOptions) -> int:
    """Run until Ctrl-C / SIGTERM. 0 after a clean stop; 1 with a one-line reason when it cannot start."""
    from streamer.local._logging import configure_logging

    configure_logging("local", options.log_level, options.log_format)
    try:
        return asyncio.run(_run(options))
    except KeyboardInterrupt:  # pragma: no cover - signals are handled in the loop
        return 130
