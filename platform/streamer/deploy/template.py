"""Read the deployment template (``infra/template.yaml``): the one source of truth for AWS and local.

The local stack and the tests create their tables, functions, routes and stream mapping from what this
module reads, so adding a resource to the template makes it exist locally. CloudFormation short-form tags
(``!Ref``, ``!Sub``, ``!GetAtt``, ``!Condition`` …) are loaded as their long-form dicts (``{"Ref": …}``,
``{"Fn::Sub": …}``, ``{"Condition": …}``).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import yaml

__all__ = [
    "EventRule",
    "EventTarget",
    "FunctionSpec",
    "StateMachineSpec",
    "StreamMapping",
    "default_template_path",
    "event_rules",
    "functions",
    "load_template",
    "parameter_defaults",
    "resolve_intrinsics",
    "route_selection_expression",
    "state_machines",
    "stream_mappings",
    "table_definitions",
    "websocket_routes",
]


def default_template_path() -> Path:
    """``infra/template.yaml`` of the source checkout (``STREAMER_TEMPLATE`` overrides it)."""
    import os

    env = os.environ.get("STREAMER_TEMPLATE")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[3] / "infra" / "template.yaml"


class _CfnLoader(yaml.SafeLoader):
    pass


def _construct_tag(loader: yaml.SafeLoader, tag_suffix: str, node: yaml.Node) -> dict[str, Any]:
    name = tag_suffix if tag_suffix in ("Ref", "Condition") else f"Fn::{tag_suffix}"
    value: Any
    if isinstance(node, yaml.ScalarNode):
        value = loader.construct_scalar(node)
        if tag_suffix == "GetAtt" and isinstance(value, str):
            value = value.split(".", 1)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    elif isinstance(node, yaml.MappingNode):
        value = loader.construct_mapping(node, deep=True)
    else:  # pragma: no cover - YAML has no other node kinds
        raise yaml.constructor.ConstructorError(
            None, None, f"unexpected node for !{tag_suffix}", node.start_mark
        )
    return {name: value}


_CfnLoader.add_multi_constructor("!", _construct_tag)


def load_template(path: Path | str | None = None) -> dict[str, Any]:
    """Parse the template into plain dicts."""
    p = Path(path) if path is not None else default_template_path()
    with p.open(encoding="utf-8") as fh:
        data = yaml.load(fh, Loader=_CfnLoader)  # noqa: S506 - SafeLoader subclass
    if not isinstance(data, dict):
        raise ValueError(f"{p}: not a CloudFormation template")
    return data


_TABLE_KEYS = (
    "AttributeDefinitions",
    "KeySchema",
    "GlobalSecondaryIndexes",
    "LocalSecondaryIndexes",
    "StreamSpecification",
    "BillingMode",
)


def table_definitions(template: dict[str, Any] | None = None) -> dict[str, dict[str, Any]]:
    """``{logical_id: create_table kwargs (without TableName)}`` for each ``AWS::DynamoDB::Table``.

    ``StreamSpecification`` gains ``StreamEnabled: true`` as boto3's ``create_table`` wants it; TTL is
    returned under the extra key ``TimeToLiveSpecification`` for ``update_time_to_live``.
    """
    tpl = template if template is not None else load_template()
    out: dict[str, dict[str, Any]] = {}
    for logical_id, res in tpl.get("Resources", {}).items():
        if res.get("Type") != "AWS::DynamoDB::Table":
            continue
        props = res.get("Properties", {})
        kwargs: dict[str, Any] = {k: props[k] for k in _TABLE_KEYS if k in props}
        if "StreamSpecification" in kwargs:
            kwargs["StreamSpecification"] = {"StreamEnabled": True, **kwargs["StreamSpecification"]}
        if "TimeToLiveSpecification" in props:
            kwargs["TimeToLiveSpecification"] = props["TimeToLiveSpecification"]
        out[logical_id] = kwargs
    return out


# ---------------------------------------------------------------------------------------------------------
# Functions, routes, stream mappings, state machines: everything `streamer local` needs to mirror AWS.
# ---------------------------------------------------------------------------------------------------------

_SERVERLESS_FUNCTION = "AWS::Serverless::Function"
_LAMBDA_FUNCTION = "AWS::Lambda::Function"
_FUNCTION_TYPES = (_SERVERLESS_FUNCTION, _LAMBDA_FUNCTION)
# Lambda's own defaults when a template gives no Timeout / MemorySize.
_DEFAULT_TIMEOUT = 3
_DEFAULT_MEMORY = 128
# Lambda's defaults for a DynamoDB event source mapping.
_DEFAULT_STREAM_BATCH_SIZE = 100
_DEFAULT_STREAM_RETRIES = -1  # retry until the record expires


@dataclass(frozen=True)
class FunctionSpec:
    """One Lambda function of the template, with ``Globals.Function`` applied.

    ``environment`` keeps CloudFormation intrinsics raw (``{"Ref": "ConnectionsTable"}``,
    ``{"Fn::Sub": "..."}``); resolve them with :func:`resolve_intrinsics` against local values.
    """

    handler: str
    timeout: int
    memory: int
    environment: dict[str, Any] = field(default_factory=dict)
    runtime: str | None = None
    architectures: tuple[str, ...] = ()

    @property
    def module(self) -> str:
        """``streamer.handlers.connect`` for ``streamer.handlers.connect.handler``."""
        return self.handler.rpartition(".")[0]

    @property
    def attribute(self) -> str:
        """``handler`` for ``streamer.handlers.connect.handler``."""
        return self.handler.rpartition(".")[2]


class StreamMapping(NamedTuple):
    """A DynamoDB stream → Lambda event source mapping (logical IDs, not physical names)."""

    function: str
    table: str
    batch_size: int
    maximum_retry_attempts: int
    bisect_batch_on_function_error: bool
    function_response_types: tuple[str, ...]


class StateMachineSpec(NamedTuple):
    """A workflow's state machine.

    ``workflow`` is the suffix of its ``Name`` (``!Sub "${AWS::StackName}-<workflow>"``), so its ARN is
    ``STREAMER_STATE_MACHINE_ARN_PREFIX + workflow``. ``definition_path`` is the ASL file, resolved relative
    to the template. ``substitutions`` maps each ``${Var}`` of the definition to a function logical ID.
    """

    workflow: str
    definition_path: Path
    substitutions: dict[str, str]


def _resources(tpl: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    res = tpl.get("Resources", {})
    if not isinstance(res, dict):
        raise ValueError("template: Resources is not a mapping")
    return res


def _of_type(tpl: Mapping[str, Any], *types: str) -> Iterator[tuple[str, dict[str, Any]]]:
    for logical_id, res in _resources(tpl).items():
        if isinstance(res, dict) and res.get("Type") in types:
            yield logical_id, res.get("Properties", {}) or {}


_SUB_VAR = re.compile(r"\$\{([^!}][^}]*)\}")


def _referenced_ids(value: Any) -> list[str]:
    """Logical IDs / parameters that ``value`` refers to (``Ref``, ``Fn::GetAtt``, ``${X}`` in ``Fn::Sub``).

    For ``Fn::GetAtt`` and ``${X.Attr}`` only the logical ID ``X`` is returned. Pseudo parameters
    (``AWS::…``) are skipped. Order of first appearance, no duplicates.
    """
    found: list[str] = []

    def add(name: str) -> None:
        name = name.split(".", 1)[0]
        if not name.startswith("AWS::") and name not in found:
            found.append(name)

    def walk(v: Any) -> None:
        if isinstance(v, dict):
            if len(v) == 1:
                ((key, arg),) = v.items()
                if key == "Ref" and isinstance(arg, str):
                    add(arg)
                    return
                if key == "Fn::GetAtt":
                    parts = arg.split(".", 1) if isinstance(arg, str) else arg
                    if isinstance(parts, list) and parts and isinstance(parts[0], str):
                        add(parts[0])
                    return
                if key == "Fn::Sub":
                    text, local_vars = (arg, {}) if isinstance(arg, str) else (arg[0], arg[1])
                    for name in _SUB_VAR.findall(text):
                        if name not in local_vars:
                            add(name)
                    walk(local_vars)
                    return
            for item in v.values():
                walk(item)
        elif isinstance(v, list):
            for item in v:
                walk(item)

    walk(value)
    return found


def _function_ids(tpl: Mapping[str, Any]) -> set[str]:
    return {logical_id for logical_id, _ in _of_type(tpl, *_FUNCTION_TYPES)}


def _int(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise ValueError(f"{what}: expected an integer, got {value!r}")
    return int(value)


def functions(template: dict[str, Any] | None = None) -> dict[str, FunctionSpec]:
    """``{logical_id: FunctionSpec}`` for every ``AWS::Serverless::Function`` (and ``AWS::Lambda::Function``).

    SAM's ``Globals.Function`` (Handler, Timeout, MemorySize, Runtime, Architectures, Environment) is merged
    in the way SAM merges it: function values win, environment variables are merged key by key.
    """
    tpl = template if template is not None else load_template()
    glob: dict[str, Any] = (tpl.get("Globals") or {}).get("Function") or {}
    out: dict[str, FunctionSpec] = {}
    for logical_id, res in _resources(tpl).items():
        rtype = res.get("Type") if isinstance(res, dict) else None
        if rtype not in _FUNCTION_TYPES:
            continue
        props: dict[str, Any] = res.get("Properties", {}) or {}
        merged = {**glob, **props} if rtype == _SERVERLESS_FUNCTION else dict(props)
        env: dict[str, Any] = {}
        if rtype == _SERVERLESS_FUNCTION:
            env.update(((glob.get("Environment") or {}).get("Variables")) or {})
        env.update(((props.get("Environment") or {}).get("Variables")) or {})
        handler = merged.get("Handler")
        if not isinstance(handler, str):
            raise ValueError(f"{logical_id}: Handler must be a string, got {handler!r}")
        out[logical_id] = FunctionSpec(
            handler=handler,
            timeout=_int(merged.get("Timeout", _DEFAULT_TIMEOUT), f"{logical_id}.Timeout"),
            memory=_int(merged.get("MemorySize", _DEFAULT_MEMORY), f"{logical_id}.MemorySize"),
            environment=env,
            runtime=merged.get("Runtime"),
            architectures=tuple(merged.get("Architectures") or ()),
        )
    return out


def _websocket_api_ids(tpl: Mapping[str, Any]) -> list[str]:
    return [
        logical_id
        for logical_id, props in _of_type(tpl, "AWS::ApiGatewayV2::Api")
        if props.get("ProtocolType") == "WEBSOCKET"
    ]


def route_selection_expression(template: dict[str, Any] | None = None) -> str:
    """``RouteSelectionExpression`` of the (single) WebSocket API, e.g. ``$request.body.action``."""
    tpl = template if template is not None else load_template()
    apis = _websocket_api_ids(tpl)
    if len(apis) != 1:
        raise ValueError(f"template: expected exactly one WEBSOCKET AWS::ApiGatewayV2::Api, found {apis}")
    expr = _resources(tpl)[apis[0]]["Properties"].get("RouteSelectionExpression")
    if not isinstance(expr, str):
        raise ValueError(f"{apis[0]}: RouteSelectionExpression must be a string")
    return expr


def websocket_routes(template: dict[str, Any] | None = None) -> dict[str, str]:
    """``{route_key: function logical ID}``, e.g. ``{"$connect": "ConnectFunction", ...}``.

    Follows each ``AWS::ApiGatewayV2::Route`` of the WebSocket API through its ``Target``
    (``integrations/${SomeIntegration}``) to the integration's ``IntegrationUri`` and the function in it.
    """
    tpl = template if template is not None else load_template()
    resources = _resources(tpl)
    apis = set(_websocket_api_ids(tpl))
    fn_ids = _function_ids(tpl)
    integrations = dict(_of_type(tpl, "AWS::ApiGatewayV2::Integration"))
    out: dict[str, str] = {}
    for logical_id, props in _of_type(tpl, "AWS::ApiGatewayV2::Route"):
        if not set(_referenced_ids(props.get("ApiId"))) & apis:
            continue
        route_key = props.get("RouteKey")
        if not isinstance(route_key, str):
            raise ValueError(f"{logical_id}: RouteKey must be a string")
        targets = [i for i in _referenced_ids(props.get("Target")) if i in integrations]
        if len(targets) != 1:
            raise ValueError(f"{logical_id}: Target must name one integration, found {targets}")
        uri = integrations[targets[0]].get("IntegrationUri")
        fns = [i for i in _referenced_ids(uri) if i in fn_ids]
        if len(fns) != 1 or resources[targets[0]]["Properties"].get("IntegrationType") != "AWS_PROXY":
            raise ValueError(f"{targets[0]}: expected an AWS_PROXY integration of one function, found {fns}")
        out[route_key] = fns[0]
    return out


def stream_mappings(template: dict[str, Any] | None = None) -> list[StreamMapping]:
    """Every DynamoDB-stream → function mapping: ``AWS::Lambda::EventSourceMapping`` resources whose
    ``EventSourceArn`` is a table's ``StreamArn``, and SAM ``Events`` of ``Type: DynamoDB``."""
    tpl = template if template is not None else load_template()
    tables = {logical_id for logical_id, _ in _of_type(tpl, "AWS::DynamoDB::Table")}
    fn_ids = _function_ids(tpl)

    def mapping(where: str, function: str, props: Mapping[str, Any], source: Any) -> StreamMapping | None:
        table = [i for i in _referenced_ids(source) if i in tables]
        if not table:
            return None  # not a DynamoDB stream of this template (Kinesis, SQS, ...)
        return StreamMapping(
            function=function,
            table=table[0],
            batch_size=_int(props.get("BatchSize", _DEFAULT_STREAM_BATCH_SIZE), f"{where}.BatchSize"),
            maximum_retry_attempts=_int(
                props.get("MaximumRetryAttempts", _DEFAULT_STREAM_RETRIES), f"{where}.MaximumRetryAttempts"
            ),
            bisect_batch_on_function_error=props.get("BisectBatchOnFunctionError") in (True, "true", "True"),
            function_response_types=tuple(props.get("FunctionResponseTypes") or ()),
        )

    out: list[StreamMapping] = []
    for logical_id, props in _of_type(tpl, "AWS::Lambda::EventSourceMapping"):
        fns = [i for i in _referenced_ids(props.get("FunctionName")) if i in fn_ids]
        if len(fns) != 1:
            continue
        m = mapping(logical_id, fns[0], props, props.get("EventSourceArn"))
        if m is not None:
            out.append(m)
    for logical_id, props in _of_type(tpl, _SERVERLESS_FUNCTION):
        for event_id, event in (props.get("Events") or {}).items():
            if isinstance(event, dict) and event.get("Type") == "DynamoDB":
                eprops = event.get("Properties") or {}
                m = mapping(f"{logical_id}.Events.{event_id}", logical_id, eprops, eprops.get("Stream"))
                if m is not None:
                    out.append(m)
    return out


class EventTarget(NamedTuple):
    """A function an EventBridge rule invokes, with the target's ``RetryPolicy`` (``None``: EventBridge's
    defaults, 185 attempts / 24 h) and its ``DeadLetterConfig`` queue (a logical ID, or ``None``)."""

    function: str
    maximum_retry_attempts: int | None = None
    maximum_event_age_seconds: int | None = None
    dead_letter_queue: str | None = None


class EventRule(NamedTuple):
    """An enabled EventBridge rule on the default bus with an event pattern and function targets.

    ``pattern`` is the ``EventPattern`` with CloudFormation intrinsics kept raw (resolve them with
    :func:`resolve_intrinsics`); ``targets`` are the targets that are functions of the template.
    """

    pattern: dict[str, Any]
    targets: tuple[EventTarget, ...]


_DEFAULT_BUS = "default"
_SAM_RULE_EVENTS = ("EventBridgeRule", "CloudWatchEvent")


def _event_target(where: str, function: str, props: Mapping[str, Any]) -> EventTarget:
    retry = props.get("RetryPolicy") or {}
    attempts, age = retry.get("MaximumRetryAttempts"), retry.get("MaximumEventAgeInSeconds")
    queues = _referenced_ids((props.get("DeadLetterConfig") or {}).get("Arn"))
    return EventTarget(
        function=function,
        maximum_retry_attempts=None if attempts is None else _int(attempts, f"{where}.MaximumRetryAttempts"),
        maximum_event_age_seconds=None if age is None else _int(age, f"{where}.MaximumEventAgeInSeconds"),
        dead_letter_queue=queues[0] if queues else None,
    )


def _event_pattern(where: str, value: Any) -> dict[str, Any] | None:
    if value is None:
        return None  # a scheduled rule
    pattern = json.loads(value) if isinstance(value, str) else value
    if not isinstance(pattern, dict):
        raise ValueError(f"{where}: the event pattern must be an object")
    return pattern


def event_rules(template: dict[str, Any] | None = None) -> dict[str, EventRule]:
    """``{logical_id: EventRule}``: ``AWS::Events::Rule`` resources, and SAM ``Events`` of ``Type:
    EventBridgeRule`` / ``CloudWatchEvent`` (logical ID ``<Function><EventId>``, as SAM names the rule).

    Only enabled rules on the default event bus with an ``EventPattern`` and at least one function target
    are returned: those are what Step Functions (and other AWS services) deliver events to.
    """
    tpl = template if template is not None else load_template()
    fn_ids = _function_ids(tpl)
    out: dict[str, EventRule] = {}
    for logical_id, props in _of_type(tpl, "AWS::Events::Rule"):
        bus = props.get("EventBusName", _DEFAULT_BUS)
        if props.get("State", "ENABLED") != "ENABLED" or bus != _DEFAULT_BUS:
            continue
        pattern = _event_pattern(logical_id, props.get("EventPattern"))
        targets = []
        for i, target in enumerate(props.get("Targets") or []):
            fns = [f for f in _referenced_ids(target.get("Arn")) if f in fn_ids] if isinstance(target, dict) else []
            if len(fns) == 1:
                targets.append(_event_target(f"{logical_id}.Targets[{i}]", fns[0], target))
        if pattern is not None and targets:
            out[logical_id] = EventRule(pattern, tuple(targets))
    for logical_id, props in _of_type(tpl, _SERVERLESS_FUNCTION):
        for event_id, event in (props.get("Events") or {}).items():
            if not isinstance(event, dict) or event.get("Type") not in _SAM_RULE_EVENTS:
                continue
            eprops = event.get("Properties") or {}
            where = f"{logical_id}.Events.{event_id}"
            enabled = eprops.get("State", "ENABLED") == "ENABLED" and eprops.get("Enabled", True) is not False
            pattern = _event_pattern(where, eprops.get("Pattern"))
            if enabled and eprops.get("EventBusName", _DEFAULT_BUS) == _DEFAULT_BUS and pattern is not None:
                out[f"{logical_id}{event_id}"] = EventRule(pattern, (_event_target(where, logical_id, eprops),))
    return out


_STACK_PREFIX = "${AWS::StackName}-"


def state_machines(
    template: dict[str, Any] | None = None, template_path: Path | str | None = None
) -> dict[str, StateMachineSpec]:
    """``{logical_id: StateMachineSpec}`` for every ``AWS::Serverless::StateMachine``.

    ``template_path`` is where the template lives (``DefinitionUri`` is relative to it); it defaults to
    :func:`default_template_path`, and the template is loaded from it when ``template`` is not given.
    """
    path = Path(template_path) if template_path is not None else default_template_path()
    tpl = template if template is not None else load_template(path)
    fn_ids = _function_ids(tpl)
    out: dict[str, StateMachineSpec] = {}
    for logical_id, props in _of_type(tpl, "AWS::Serverless::StateMachine"):
        name = props.get("Name")
        text = name.get("Fn::Sub") if isinstance(name, dict) else None
        if (
            not isinstance(text, str)
            or not text.startswith(_STACK_PREFIX)
            or "$" in text[len(_STACK_PREFIX) :]
        ):
            raise ValueError(f'{logical_id}: Name must be !Sub "{_STACK_PREFIX}<workflow>", got {name!r}')
        uri = props.get("DefinitionUri")
        if not isinstance(uri, str):
            raise ValueError(f"{logical_id}: DefinitionUri must be a path relative to the template")
        subs: dict[str, str] = {}
        for var, value in (props.get("DefinitionSubstitutions") or {}).items():
            ids = [i for i in _referenced_ids(value) if i in fn_ids]
            if len(ids) != 1:
                raise ValueError(f"{logical_id}: substitution {var} must be a function's ARN, got {value!r}")
            subs[str(var)] = ids[0]
        out[logical_id] = StateMachineSpec(
            workflow=text[len(_STACK_PREFIX) :],
            definition_path=(path.parent / uri).resolve(),
            substitutions=subs,
        )
    return out


def parameter_defaults(template: dict[str, Any] | None = None) -> dict[str, str]:
    """``{parameter: Default}`` (as strings, as CloudFormation passes them) for parameters with a default."""
    tpl = template if template is not None else load_template()
    return {
        name: str(spec["Default"])
        for name, spec in (tpl.get("Parameters") or {}).items()
        if isinstance(spec, dict) and "Default" in spec
    }


def resolve_intrinsics(value: Any, refs: Mapping[str, Any]) -> Any:
    """Evaluate ``Ref``, ``Fn::GetAtt``, ``Fn::Sub``, ``Fn::Join``, ``Fn::Select``, ``Fn::Split``.

    ``refs`` maps ``Ref`` targets (logical IDs, parameters, pseudo parameters such as ``AWS::Region``) and
    ``"LogicalId.Attribute"`` for ``Fn::GetAtt`` to their local values. Unknown names raise ``KeyError``;
    other intrinsics (``Fn::If`` …) raise ``ValueError``.
    """

    def lookup(name: str) -> Any:
        if name not in refs:
            raise KeyError(f"no local value for {name!r}")
        return refs[name]

    def sub(text: str, local_vars: Mapping[str, Any]) -> str:
        def one(m: re.Match[str]) -> str:
            inner = m.group(1)
            if inner.startswith("!"):
                return "${" + inner[1:] + "}"
            return str(local_vars[inner] if inner in local_vars else lookup(inner))

        return re.sub(r"\$\{([^}]*)\}", one, text)

    def ev(v: Any) -> Any:
        if isinstance(v, list):
            return [ev(i) for i in v]
        if not isinstance(v, dict):
            return v
        if len(v) == 1:
            ((key, arg),) = v.items()
            if key == "Ref":
                return lookup(arg)
            if key == "Fn::GetAtt":
                parts = arg.split(".", 1) if isinstance(arg, str) else arg
                return lookup(f"{parts[0]}.{parts[1]}")
            if key == "Fn::Sub":
                if isinstance(arg, str):
                    return sub(arg, {})
                return sub(arg[0], {k: ev(x) for k, x in arg[1].items()})
            if key == "Fn::Join":
                return str(arg[0]).join(str(ev(x)) for x in ev(arg[1]))
            if key == "Fn::Select":
                return ev(arg[1])[int(ev(arg[0]))]
            if key == "Fn::Split":
                return str(ev(arg[1])).split(str(arg[0]))
            if key.startswith("Fn::") or key == "Condition":
                raise ValueError(f"unsupported intrinsic {key}")
        return {k: ev(x) for k, x in v.items()}

    return ev(value)
