"""What ``streamer local`` runs, decided before anything starts: pure reading, no process, no socket.

:func:`plan_from_template` reads the template (``streamer.deploy.template``, i.e. plain CloudFormation from
SAM's transform) and the installed plugins into a :class:`LocalPlan`: tables and their local names, functions,
WebSocket routes, the stream mappings (:class:`~streamer.local.stream_poller.MappingConfig`), the EventBridge
rules on execution status changes and the state machines (the template's, plus the definitions it does not
list: ``statemachines/*.asl.json`` and those plugins ship). Every problem is a :class:`StartupError` with a
one-line reason. :func:`local_refs` gives the local value of every ``Ref`` / ``Fn::GetAtt`` / pseudo
parameter; :func:`function_environment` the environment every local function sees.

Local names follow one rule: the stack is ``streamer``; a table is ``streamer-`` + its logical id without
``Table``, kebab-cased; a function's name is its logical id; a state machine is ``streamer-<workflow>``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from streamer.config import LOCAL_ACCOUNT, LOCAL_REGION, Env
from streamer.errors import StreamerError
from streamer.local import StartupError
from streamer.local.lambda_endpoint import function_arn
from streamer.metrics import local_metrics_file

if TYPE_CHECKING:
    from streamer.deploy.template import FunctionSpec
    from streamer.local.eventbridge import RuleConfig
    from streamer.local.stream_poller import MappingConfig

__all__ = [
    "DEFAULT_SUBSTITUTIONS",
    "STACK_NAME",
    "LocalPlan",
    "StateMachinePlan",
    "function_environment",
    "local_refs",
    "local_table_names",
    "one_line",
    "plan_from_template",
]

STACK_NAME = "streamer"
#: Placeholders of plugin-shipped definitions that the template does not list (the documented contract).
DEFAULT_SUBSTITUTIONS = {"StepRunnerFunctionArn": "StepRunnerFunction", "NotifyFunctionArn": "NotifyFunction"}


def one_line(exc: BaseException) -> str:
    """An exception as the one-line reason ``streamer local`` prints."""
    return " ".join(str(exc).split()) or type(exc).__name__


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
    functions: dict[str, FunctionSpec]
    routes: dict[str, str]
    route_selection_expression: str
    stage: str
    tables: dict[str, dict[str, Any]]  # logical id → create_table kwargs
    table_names: dict[str, str]
    state_machines: list[StateMachinePlan]
    workflows: dict[str, str] = field(default_factory=dict)  # name → description (plugins)
    warnings: list[str] = field(default_factory=list)
    #: The DynamoDB stream → function mappings (local table names)
    stream_mappings: list[MappingConfig] = field(default_factory=list)
    #: EventBridge rules that receive execution status changes
    event_rules: list[RuleConfig] = field(default_factory=list)
    #: Route keys whose integration response the gateway sends back to the client (route responses)
    route_responses: frozenset[str] = frozenset()

    def state_machine_arn_prefix(self) -> str:
        return f"arn:aws:states:{LOCAL_REGION}:{LOCAL_ACCOUNT}:stateMachine:{STACK_NAME}-"


def plan_from_template(
    template_path: Path | str | None = None, *, project_dir: Path | str | None = None, check_plugins: bool = True
) -> LocalPlan:
    """Read the template and the installed plugins. Raises :class:`StartupError` with a one-line reason.

    The template is ``template_path``, else ``<project_dir>/infra/template.yaml``, else the default
    (``STREAMER_TEMPLATE``, or the template bundled with the package); state machine definitions the
    template does not list are read from the ``statemachines/`` directory next to its ``infra/``.
    """
    from streamer.deploy import template as tpl
    from streamer.deploy.resources import template_path as project_template

    try:
        if template_path is not None:
            path = Path(template_path)
        elif project_dir is not None:
            path = project_template(project_dir)
        else:
            path = tpl.default_template_path()
    except StreamerError as exc:  # no such project directory, no template bundled with the package
        raise StartupError(one_line(exc)) from exc
    try:
        template = tpl.load_template(path)
        functions = tpl.functions(template)
        routes = tpl.websocket_routes(template)
        route_responses = tpl.websocket_route_responses(template)
        expression = tpl.route_selection_expression(template)
        tables = tpl.table_definitions(template)
        machines = tpl.state_machines(template, path)
        params = tpl.parameter_defaults(template)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise StartupError(f"template {path}: {one_line(exc)}") from exc
    for route, fn in routes.items():
        if fn not in functions:
            raise StartupError(f"template {path}: route {route} targets unknown function {fn}")
    for fn_id, spec in functions.items():
        named = str(spec.environment.get(Env.REPLY_ROUTE_RESPONSE, ""))
        for route in (r.strip() for r in named.split(",") if r.strip()):
            if route not in route_responses:
                raise StartupError(
                    f"template {path}: {fn_id} sets {Env.REPLY_ROUTE_RESPONSE} but route {route} has no route "
                    "response (AWS::ApiGatewayV2::RouteResponse): its replies would never reach the client"
                )
    plan = LocalPlan(
        template_path=path,
        template=template,
        functions=dict(functions),
        routes=dict(routes),
        route_selection_expression=expression,
        route_responses=route_responses,
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
            raise StartupError(f"plugins: {one_line(exc)}") from exc
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
    from streamer.local.stream_poller import mappings_from_template

    try:
        plan.stream_mappings = mappings_from_template(template, plan.table_names)
        plan.event_rules = status_change_rules(template, local_refs(plan))
    except (ValueError, KeyError, TypeError) as exc:
        raise StartupError(f"template {path}: {one_line(exc)}") from exc
    return plan


def _add_plugin_workflows(plan: LocalPlan, known: set[str]) -> None:
    """Fail on a broken plugin set; note the workflows the plugins declare."""
    from streamer import plugins

    try:
        errors = plugins.plugin_errors()
        workflows = plugins.workflows()
    except Exception as exc:
        raise StartupError(f"plugins: {one_line(exc)}") from exc
    if errors:
        more = f" (+{len(errors) - 1} more)" if len(errors) > 1 else ""
        raise StartupError(f"plugins: {one_line(errors[0])}{more}")
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
            "AWS::Region": LOCAL_REGION,
            "AWS::AccountId": LOCAL_ACCOUNT,
            "AWS::Partition": "aws",
            "AWS::URLSuffix": "amazonaws.com",
            "AWS::StackName": STACK_NAME,
            "AWS::NoValue": "",
        }
    )
    for logical_id, name in plan.table_names.items():
        refs[logical_id] = name
        refs[f"{logical_id}.Arn"] = f"arn:aws:dynamodb:{LOCAL_REGION}:{LOCAL_ACCOUNT}:table/{name}"
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
    endpoints are pointed at the local services. Conflicts and unresolvable values become plan warnings.
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
                plan.warnings.append(f"{fn_id}: environment {key} not resolvable locally ({one_line(exc)})")
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
            "AWS_REGION": LOCAL_REGION,
            "AWS_DEFAULT_REGION": LOCAL_REGION,
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
            Env.APIGW_ENDPOINT: gateway_http,
            Env.STATE_MACHINE_ARN_PREFIX: plan.state_machine_arn_prefix(),
            Env.JWT_SECRET: jwt_secret,
            Env.JWT_SECRET_ARN: "",
            Env.LOCAL: "1",
            # No X-Ray daemon here: the tracer stays off (and never looks for one).
            "POWERTOOLS_TRACE_DISABLED": "true",
            # The handlers' EMF lines go to a file the console's overview reads (streamer.metrics).
            Env.LOCAL_METRICS_FILE: str(local_metrics_file()),
        }
    )
    for name in plan.table_names.values():  # streamer-audit-log → STREAMER_AUDIT_LOG_TABLE
        env.setdefault(f"STREAMER_{name[len(STACK_NAME) + 1 :].replace('-', '_').upper()}_TABLE", name)
    return env
