"""Read the deployment template (``infra/template.yaml``): the one source of truth for AWS and local.

The local stack and the tests create their tables, functions, routes, stream mappings, event rules and
state machines from what this module reads, so adding a resource to the template makes it exist locally.

Contract:

* :func:`load_template` parses the file as written. CloudFormation short-form tags (``!Ref``, ``!Sub``,
  ``!GetAtt``, ``!Condition`` …) are loaded as their long-form dicts (``{"Ref": …}``, ``{"Fn::Sub": …}``,
  ``{"Condition": …}``).
* The readers (:func:`functions`, :func:`stream_mappings`, :func:`event_rules`, :func:`state_machines`,
  :func:`websocket_routes` …) read plain CloudFormation. A template with ``Transform:
  AWS::Serverless-2016-10-31`` is first translated by AWS's own SAM translator (``samtranslator``, the library
  behind ``sam`` and the CloudFormation transform; :func:`translate`), so ``Globals``, a function's
  ``Events`` and ``AWS::Serverless::StateMachine`` mean here exactly what they mean on AWS. An invalid SAM
  template raises ``ValueError`` with SAM's own messages.
* Before translating, code and definition locations are "packaged" the way ``sam package`` would, without
  uploading anything: functions get a placeholder S3 ``CodeUri`` (local runs never read it) and a
  state machine's local ``DefinitionUri`` becomes the S3 location ``{Bucket: streamer-local, Key: <the
  path>}``, which :func:`state_machines` turns back into the file next to the template.
* Intrinsics stay raw (SAM resolves only a few of them); :func:`resolve_intrinsics` evaluates them against
  local values.
"""

from __future__ import annotations

import copy
import json
import logging
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import yaml

from streamer.config import Env

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
    "translate",
    "websocket_route_responses",
    "websocket_routes",
]


def default_template_path() -> Path:
    """``STREAMER_TEMPLATE``, else the template bundled with the package (in the checkout: ``infra/template.yaml``
    itself; :func:`streamer.deploy.resources.template_path`, which raises ``ProjectFilesError`` without one)."""
    import os

    from streamer.deploy.resources import template_path

    env = os.environ.get(Env.TEMPLATE)
    if env:
        return Path(env)
    return template_path()


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
        raise yaml.constructor.ConstructorError(None, None, f"unexpected node for !{tag_suffix}", node.start_mark)
    return {name: value}


_CfnLoader.add_multi_constructor("!", _construct_tag)


def load_template(path: Path | str | None = None) -> dict[str, Any]:
    """Parse the template into plain dicts (as written: SAM resources are not translated here)."""
    p = Path(path) if path is not None else default_template_path()
    with p.open(encoding="utf-8") as fh:
        data = yaml.load(fh, Loader=_CfnLoader)  # noqa: S506 - SafeLoader subclass
    if not isinstance(data, dict):
        raise ValueError(f"{p}: not a CloudFormation template")
    return data


# ---------------------------------------------------------------------------------------------------------
# SAM → CloudFormation
# ---------------------------------------------------------------------------------------------------------

_SAM_TRANSFORM = "AWS::Serverless-2016-10-31"
#: The placeholder bucket of "packaged" code and definitions (nothing is uploaded, nothing reads it).
LOCAL_BUCKET = "streamer-local"
_PLACEHOLDER_CODE = f"s3://{LOCAL_BUCKET}/code.zip"
_translated: dict[str, dict[str, Any]] = {}
_TRANSLATION_CACHE_SIZE = 8


def _is_sam(template: Mapping[str, Any]) -> bool:
    transform = template.get("Transform")
    transforms = transform if isinstance(transform, list) else [transform]
    return _SAM_TRANSFORM in transforms


def _packaged(template: Mapping[str, Any]) -> dict[str, Any]:
    """What ``sam package`` would send, with placeholder S3 locations instead of uploads.

    samtranslator accepts only S3 locations for ``CodeUri`` / ``DefinitionUri`` (a local path is resolved
    by the SAM CLI before the transform runs); the definition's path travels in the location's ``Key``.
    """
    out = copy.deepcopy(dict(template))
    for res in (out.get("Resources") or {}).values():
        if not isinstance(res, dict):
            continue
        props = res.get("Properties")
        if not isinstance(props, dict):
            continue
        if res.get("Type") == "AWS::Serverless::Function":
            if props.get("PackageType") != "Image" and "InlineCode" not in props:
                props["CodeUri"] = _PLACEHOLDER_CODE
        elif res.get("Type") == "AWS::Serverless::StateMachine":
            uri = props.get("DefinitionUri")
            if isinstance(uri, str) and not uri.startswith("s3://"):
                props["DefinitionUri"] = {"Bucket": LOCAL_BUCKET, "Key": uri}
    return out


def translate(template: Mapping[str, Any]) -> dict[str, Any]:
    """The template as plain CloudFormation: SAM's own transform for a SAM template, else a copy.

    Raises ``ValueError`` with SAM's messages when SAM rejects the template. Results are cached by content
    (the local stack reads one template many times at start-up); callers get their own copy.
    """
    if not _is_sam(template):
        return copy.deepcopy(dict(template))
    key = json.dumps(template, sort_keys=True, default=str)
    cached = _translated.get(key)
    if cached is None:
        cached = _sam_translate(_packaged(template))
        if len(_translated) >= _TRANSLATION_CACHE_SIZE:
            _translated.pop(next(iter(_translated)))
        _translated[key] = cached
    return copy.deepcopy(cached)


def _sam_translate(template: dict[str, Any]) -> dict[str, Any]:
    import boto3
    from samtranslator.metrics.metrics import Metrics
    from samtranslator.model.exceptions import InvalidDocumentException
    from samtranslator.parser.parser import Parser
    from samtranslator.translator.translator import Translator

    from streamer.config import LOCAL_REGION

    # The session only names the partition (no call is made); the managed-policy map is consulted for
    # policies given by short name only (a template naming none needs no IAM call).
    metrics = Metrics()
    translator = Translator({}, Parser(), boto_session=boto3.session.Session(region_name=LOCAL_REGION), metrics=metrics)
    try:
        out: dict[str, Any] = translator.translate(template, {}, get_managed_policy_map=lambda: {})
    except InvalidDocumentException as exc:
        reasons = "; ".join(cause.message for cause in exc.causes)
        raise ValueError(f"template: SAM rejects it: {reasons}") from exc
    finally:
        metrics.publish()  # the offline publisher: keeps samtranslator from warning about unpublished metrics
    logging.getLogger("samtranslator").debug("translated %d resources", len(out.get("Resources", {})))
    return out


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
    for logical_id, props in _of_type(tpl, "AWS::DynamoDB::Table"):
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

_LAMBDA_FUNCTION = "AWS::Lambda::Function"
# Lambda's own defaults when a template gives no Timeout / MemorySize.
_DEFAULT_TIMEOUT = 3
_DEFAULT_MEMORY = 128
# Lambda's defaults for a DynamoDB event source mapping
# (https://docs.aws.amazon.com/AWSCloudFormation/latest/UserGuide/aws-resource-lambda-eventsourcemapping.html).
_DEFAULT_STREAM_BATCH_SIZE = 100
_DEFAULT_STREAM_RETRIES = -1  # retry until the record expires
_DEFAULT_RECORD_AGE = -1  # no limit

#: A function's handler: the template's dotted ``module.function`` or, in tests, the callable itself.
HandlerRef = str | Callable[[Any, Any], Any]


@dataclass(frozen=True)
class FunctionSpec:
    """One Lambda function: what the template says of it (after SAM's ``Globals`` are applied).

    ``environment`` keeps CloudFormation intrinsics raw (``{"Ref": "ConnectionsTable"}``,
    ``{"Fn::Sub": "..."}``); resolve them with :func:`resolve_intrinsics` against local values. The local
    Lambda endpoint serves these specs by name; a test may give a callable as ``handler``.
    """

    handler: HandlerRef
    timeout: float = _DEFAULT_TIMEOUT
    memory: int = _DEFAULT_MEMORY
    environment: dict[str, Any] = field(default_factory=dict)
    runtime: str | None = None
    architectures: tuple[str, ...] = ()

    @property
    def module(self) -> str:
        """``streamer.handlers.connect`` for ``streamer.handlers.connect.handler``."""
        return str(self.handler).rpartition(".")[0]

    @property
    def attribute(self) -> str:
        """``handler`` for ``streamer.handlers.connect.handler``."""
        return str(self.handler).rpartition(".")[2]


class StreamMapping(NamedTuple):
    """A DynamoDB stream → Lambda event source mapping (logical IDs, not physical names), with every
    property the local poller plays (AWS's defaults where the template gives none)."""

    function: str
    table: str
    batch_size: int
    maximum_retry_attempts: int
    bisect_batch_on_function_error: bool
    function_response_types: tuple[str, ...]
    starting_position: str = "TRIM_HORIZON"
    maximum_batching_window_seconds: float = 0.0
    maximum_record_age_seconds: int = _DEFAULT_RECORD_AGE
    #: ``FilterCriteria.Filters[].Pattern``, parsed (EventBridge pattern syntax).
    filters: tuple[dict[str, Any], ...] = ()
    enabled: bool = True


class StateMachineSpec(NamedTuple):
    """A workflow's state machine.

    ``workflow`` is the suffix of its name (``!Sub "${AWS::StackName}-<workflow>"``), so its ARN is
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


def _function_ids(cfn: Mapping[str, Any]) -> set[str]:
    return {logical_id for logical_id, _ in _of_type(cfn, _LAMBDA_FUNCTION)}


def _int(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise ValueError(f"{what}: expected an integer, got {value!r}")
    return int(value)


def functions(template: dict[str, Any] | None = None) -> dict[str, FunctionSpec]:
    """``{logical_id: FunctionSpec}`` for every function (``AWS::Lambda::Function`` after SAM's transform:
    ``AWS::Serverless::Function`` with its ``Globals.Function`` merged in as SAM merges it)."""
    cfn = translate(template if template is not None else load_template())
    out: dict[str, FunctionSpec] = {}
    for logical_id, props in _of_type(cfn, _LAMBDA_FUNCTION):
        handler = props.get("Handler")
        if not isinstance(handler, str):
            raise ValueError(f"{logical_id}: Handler must be a string, got {handler!r}")
        out[logical_id] = FunctionSpec(
            handler=handler,
            timeout=_int(props.get("Timeout", _DEFAULT_TIMEOUT), f"{logical_id}.Timeout"),
            memory=_int(props.get("MemorySize", _DEFAULT_MEMORY), f"{logical_id}.MemorySize"),
            environment=dict(((props.get("Environment") or {}).get("Variables")) or {}),
            runtime=props.get("Runtime"),
            architectures=tuple(props.get("Architectures") or ()),
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


def websocket_route_responses(template: dict[str, Any] | None = None) -> frozenset[str]:
    """The route keys whose integration response goes back to the client (two-way routes): the route has a
    ``RouteResponseSelectionExpression`` and an ``AWS::ApiGatewayV2::RouteResponse`` with
    ``RouteResponseKey: $default`` names it
    (https://docs.aws.amazon.com/apigateway/latest/developerguide/apigateway-websocket-api-route-response.html).
    """
    cfn = translate(template if template is not None else load_template())
    apis = set(_websocket_api_ids(cfn))
    routes = {
        logical_id: props.get("RouteKey")
        for logical_id, props in _of_type(cfn, "AWS::ApiGatewayV2::Route")
        if set(_referenced_ids(props.get("ApiId"))) & apis and props.get("RouteResponseSelectionExpression")
    }
    out: set[str] = set()
    for _, props in _of_type(cfn, "AWS::ApiGatewayV2::RouteResponse"):
        if props.get("RouteResponseKey") != "$default":
            continue
        for route_id in _referenced_ids(props.get("RouteId")):
            key = routes.get(route_id)
            if isinstance(key, str):
                out.add(key)
    return frozenset(out)


def websocket_routes(template: dict[str, Any] | None = None) -> dict[str, str]:
    """``{route_key: function logical ID}``, e.g. ``{"$connect": "ConnectFunction", ...}``.

    Follows each ``AWS::ApiGatewayV2::Route`` of the WebSocket API through its ``Target``
    (``integrations/${SomeIntegration}``) to the integration's ``IntegrationUri`` and the function in it.
    """
    cfn = translate(template if template is not None else load_template())
    resources = _resources(cfn)
    apis = set(_websocket_api_ids(cfn))
    fn_ids = _function_ids(cfn)
    integrations = dict(_of_type(cfn, "AWS::ApiGatewayV2::Integration"))
    out: dict[str, str] = {}
    for logical_id, props in _of_type(cfn, "AWS::ApiGatewayV2::Route"):
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


def _filters(where: str, criteria: Any) -> tuple[dict[str, Any], ...]:
    out: list[dict[str, Any]] = []
    for i, f in enumerate((criteria or {}).get("Filters") or []):
        raw = f.get("Pattern") if isinstance(f, Mapping) else None
        try:
            pattern = json.loads(raw) if isinstance(raw, str) else raw
        except ValueError as exc:
            raise ValueError(f"{where}.FilterCriteria.Filters[{i}]: the pattern is not JSON ({exc})") from exc
        if not isinstance(pattern, dict):
            raise ValueError(f"{where}.FilterCriteria.Filters[{i}]: the pattern must be an object")
        out.append(pattern)
    return tuple(out)


def stream_mappings(template: dict[str, Any] | None = None) -> list[StreamMapping]:
    """Every DynamoDB-stream → function mapping: the ``AWS::Lambda::EventSourceMapping`` resources (SAM
    ``Events`` of ``Type: DynamoDB`` included, after the transform) whose ``EventSourceArn`` is a table's
    ``StreamArn``."""
    cfn = translate(template if template is not None else load_template())
    tables = {logical_id for logical_id, _ in _of_type(cfn, "AWS::DynamoDB::Table")}
    fn_ids = _function_ids(cfn)
    out: list[StreamMapping] = []
    for logical_id, props in _of_type(cfn, "AWS::Lambda::EventSourceMapping"):
        fns = [i for i in _referenced_ids(props.get("FunctionName")) if i in fn_ids]
        table = [i for i in _referenced_ids(props.get("EventSourceArn")) if i in tables]
        if len(fns) != 1 or not table:
            continue  # not a DynamoDB stream of this template (Kinesis, SQS, ...) or not our function
        window = props.get("MaximumBatchingWindowInSeconds", 0)
        out.append(
            StreamMapping(
                function=fns[0],
                table=table[0],
                batch_size=_int(props.get("BatchSize", _DEFAULT_STREAM_BATCH_SIZE), f"{logical_id}.BatchSize"),
                maximum_retry_attempts=_int(
                    props.get("MaximumRetryAttempts", _DEFAULT_STREAM_RETRIES), f"{logical_id}.MaximumRetryAttempts"
                ),
                bisect_batch_on_function_error=props.get("BisectBatchOnFunctionError") in (True, "true", "True"),
                function_response_types=tuple(props.get("FunctionResponseTypes") or ()),
                starting_position=str(props.get("StartingPosition") or "TRIM_HORIZON"),
                maximum_batching_window_seconds=float(_int(window, f"{logical_id}.MaximumBatchingWindowInSeconds")),
                maximum_record_age_seconds=_int(
                    props.get("MaximumRecordAgeInSeconds", _DEFAULT_RECORD_AGE),
                    f"{logical_id}.MaximumRecordAgeInSeconds",
                ),
                filters=_filters(logical_id, props.get("FilterCriteria")),
                enabled=props.get("Enabled", True) not in (False, "false", "False"),
            )
        )
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
    """``{logical_id: EventRule}``: ``AWS::Events::Rule`` resources (SAM ``Events`` of ``Type:
    EventBridgeRule`` / ``CloudWatchEvent`` included, after the transform: SAM names the rule
    ``<Function><EventId>``).

    Only enabled rules on the default event bus with an ``EventPattern`` and at least one function target
    are returned: those are what Step Functions (and other AWS services) deliver events to.
    """
    cfn = translate(template if template is not None else load_template())
    fn_ids = _function_ids(cfn)
    out: dict[str, EventRule] = {}
    for logical_id, props in _of_type(cfn, "AWS::Events::Rule"):
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
    return out


_STACK_PREFIX = "${AWS::StackName}-"


def state_machines(
    template: dict[str, Any] | None = None, template_path: Path | str | None = None
) -> dict[str, StateMachineSpec]:
    """``{logical_id: StateMachineSpec}`` for every state machine whose definition is a file next to the
    template (an ``AWS::Serverless::StateMachine`` with a local ``DefinitionUri``).

    ``template_path`` is where the template lives (``DefinitionUri`` is relative to it); it defaults to
    :func:`default_template_path`, and the template is loaded from it when ``template`` is not given.
    """
    path = Path(template_path) if template_path is not None else default_template_path()
    cfn = translate(template if template is not None else load_template(path))
    fn_ids = _function_ids(cfn)
    out: dict[str, StateMachineSpec] = {}
    for logical_id, props in _of_type(cfn, "AWS::StepFunctions::StateMachine"):
        name = props.get("StateMachineName")
        text = name.get("Fn::Sub") if isinstance(name, dict) else None
        if not isinstance(text, str) or not text.startswith(_STACK_PREFIX) or "$" in text[len(_STACK_PREFIX) :]:
            raise ValueError(f'{logical_id}: Name must be !Sub "{_STACK_PREFIX}<workflow>", got {name!r}')
        location = props.get("DefinitionS3Location")
        if not isinstance(location, dict) or location.get("Bucket") != LOCAL_BUCKET:
            raise ValueError(f"{logical_id}: DefinitionUri must be a path relative to the template")
        subs: dict[str, str] = {}
        for var, value in (props.get("DefinitionSubstitutions") or {}).items():
            ids = [i for i in _referenced_ids(value) if i in fn_ids]
            if len(ids) != 1:
                raise ValueError(f"{logical_id}: substitution {var} must be a function's ARN, got {value!r}")
            subs[str(var)] = ids[0]
        out[logical_id] = StateMachineSpec(
            workflow=text[len(_STACK_PREFIX) :],
            definition_path=(path.parent / str(location["Key"])).resolve(),
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
