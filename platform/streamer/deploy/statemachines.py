"""State machine definitions (``statemachines/*.asl.json``): find, validate, render, deploy; and the
``streamer plugins``, ``streamer statemachines validate`` and ``streamer deploy`` subcommands.

A definition is ASL JSON (JSONPath only) with SAM ``DefinitionSubstitutions`` placeholders:
``${StepRunnerFunctionArn}`` and ``${NotifyFunctionArn}``. The workflow ``W`` is the file ``W.asl.json``
(in the project's ``statemachines/`` directory, or shipped by a plugin as ``Workflow.definition``) and
its state machine is named ``<prefix>W`` (``streamer-W``; ``STREAMER_STATE_MACHINE_ARN_PREFIX`` ends with
that prefix).

:func:`validate` checks what the platform relies on, beyond the ASL structure (checked by ``statelint``):

* every Task has ``TimeoutSeconds`` and a ``Retry``; a Lambda Task's ``Retry`` covers the Lambda service
  errors (``Lambda.ServiceException``, ``Lambda.AWSLambdaException``, ``Lambda.SdkClientException``,
  ``Lambda.TooManyRequestsException``);
* every Task has a ``Catch`` of ``States.ALL`` (so the client always gets a terminal event) — or is
  inside a Map/Parallel that has one (a Catch inside an iteration cannot reach the machine's states), or
  is the failure notification itself (``Parameters.kind == "failure"``: where would its Catch go?);
* a step Task (``Resource: ${StepRunnerFunctionArn}``) names a step (``Parameters.step``, a constant)
  that an installed plugin declares, passes ``request.$``, and retries ``RetryableStepError``;
* no JSONata and no Variables (``QueryLanguage``, ``Assign``): the local engine (moto) cannot run them;
* the file's workflow is declared by an installed plugin.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from streamer.config import Settings
from streamer.errors import PluginError
from streamer.plugins import Registry, get_registry, plugin_errors

if TYPE_CHECKING:
    from mypy_boto3_stepfunctions import SFNClient

__all__ = [
    "DEFINITION_SUFFIX",
    "LAMBDA_SERVICE_ERRORS",
    "NOTIFY_PLACEHOLDER",
    "STEP_RUNNER_PLACEHOLDER",
    "Deployment",
    "Problem",
    "add_subcommands",
    "console_url",
    "default_directory",
    "deploy",
    "discover",
    "function_arn_substitutions",
    "placeholders",
    "render",
    "validate",
    "workflow_name",
]

DEFINITION_SUFFIX = ".asl.json"
STEP_RUNNER_PLACEHOLDER = "${StepRunnerFunctionArn}"
NOTIFY_PLACEHOLDER = "${NotifyFunctionArn}"
LAMBDA_SERVICE_ERRORS = (
    "Lambda.ServiceException",
    "Lambda.AWSLambdaException",
    "Lambda.SdkClientException",
    "Lambda.TooManyRequestsException",
)
DEFAULT_NAME_PREFIX = "streamer-"
#: Used to create state machines on a local endpoint when no role is given (moto does not check it).
LOCAL_ROLE_ARN = "arn:aws:iam::123456789012:role/streamer-local-states"

# SAM/CloudFormation DefinitionSubstitutions: ${Name}, names of letters, digits, '_', '.', '-' (no '!').
_PLACEHOLDER = re.compile(r"\$\{([A-Za-z0-9_.:-]+)\}")


# ---------------------------------------------------------------------------------------------------------
# Finding and rendering definitions
# ---------------------------------------------------------------------------------------------------------


def default_directory() -> Path:
    """The project's ``statemachines/`` (``STREAMER_STATEMACHINES_DIR`` overrides it)."""
    env = os.environ.get("STREAMER_STATEMACHINES_DIR")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[3] / "statemachines"


def workflow_name(path: Path | str) -> str:
    """``echo`` for ``…/echo.asl.json``."""
    name = Path(path).name
    return name[: -len(DEFINITION_SUFFIX)] if name.endswith(DEFINITION_SUFFIX) else Path(path).stem


def discover(directory: Path | str | None = None, *, registry: Registry | None = None) -> dict[str, Path]:
    """``{workflow: definition path}``: the directory's ``*.asl.json`` files, then the definitions plugins
    ship (``Workflow.definition``) for workflows the directory does not have."""
    d = Path(directory) if directory is not None else default_directory()
    found: dict[str, Path] = {}
    if d.is_dir():
        for p in sorted(d.glob(f"*{DEFINITION_SUFFIX}")):
            found[workflow_name(p)] = p
    reg = registry if registry is not None else get_registry()
    for name, wf in reg.workflows().items():
        if wf.definition is not None and name not in found:
            found[name] = wf.definition
    return found


def placeholders(text: str) -> set[str]:
    """The ``${Name}`` placeholders left in ``text``."""
    return set(_PLACEHOLDER.findall(text))


def render(path: Path | str, substitutions: Mapping[str, str]) -> str:
    """The definition's text with each ``${Name}`` of ``substitutions`` replaced by its value, verbatim.

    This is what CloudFormation does with a state machine's ``DefinitionSubstitutions`` (SAM's property of
    the same name): plain text replacement, no JSON escaping; placeholders without a value stay as they are
    (:func:`placeholders` finds them).
    """
    text = Path(path).read_text(encoding="utf-8")
    return _substitute(text, substitutions)


def _substitute(text: str, substitutions: Mapping[str, str]) -> str:
    def one(m: re.Match[str]) -> str:
        name = m.group(1)
        return substitutions[name] if name in substitutions else m.group(0)

    return _PLACEHOLDER.sub(one, text)


def function_arn_substitutions(prefix: str, names: Iterable[str]) -> dict[str, str]:
    """``{"StepRunnerFunctionArn": prefix + "StepRunnerFunction", ...}`` for each placeholder ending in
    ``Arn`` (the template's convention: ``StepRunnerFunctionArn: !GetAtt StepRunnerFunction.Arn``)."""
    return {n: prefix + n[: -len("Arn")] for n in names if n.endswith("Arn") and len(n) > len("Arn")}


# ---------------------------------------------------------------------------------------------------------
# Validation
# ---------------------------------------------------------------------------------------------------------


class Problem(NamedTuple):
    """One thing wrong with a definition; ``state`` is ``-`` for the machine as a whole."""

    file: str
    state: str
    reason: str

    def __str__(self) -> str:
        return f"{self.file}: {self.state}: {self.reason}"


_STATELINT_STATE = re.compile(r"\.States\.([^.\s\"]+)")
_STATELINT_UNREACHED = re.compile(r"state State Machine\.(\S+)")


def _statelint_state(message: str) -> str:
    found = _STATELINT_STATE.findall(message) or _STATELINT_UNREACHED.findall(message)
    return found[-1] if found else "-"


def _placeholder_arn(name: str) -> str:
    return f"arn:aws:lambda:us-east-1:123456789012:function:{name}"


def _statelint(definition: dict[str, Any]) -> list[tuple[str, str]]:
    from statelint.linter import Linter

    return [(_statelint_state(p), p) for p in Linter.validate(definition)]


def _catches_all(state: Mapping[str, Any]) -> bool:
    return any("States.ALL" in (c.get("ErrorEquals") or []) for c in state.get("Catch") or [])


def _retried(state: Mapping[str, Any]) -> set[str]:
    return {e for r in state.get("Retry") or [] for e in (r.get("ErrorEquals") or [])}


def _lambda_call(state: Mapping[str, Any]) -> tuple[str | None, Mapping[str, Any]]:
    """``(function, payload parameters)`` of a Lambda Task, in either integration style."""
    resource = state.get("Resource")
    raw = state.get("Parameters")
    params: Mapping[str, Any] = raw if isinstance(raw, Mapping) else {}
    if isinstance(resource, str) and resource.startswith("arn:aws:states:::lambda:invoke"):
        payload = params.get("Payload")
        return params.get("FunctionName"), payload if isinstance(payload, Mapping) else {}
    if isinstance(resource, str) and (resource.startswith("${") or ":lambda:" in resource):
        return resource, params
    return None, params


def _walk(states: Mapping[str, Any], covered: bool) -> Iterator[tuple[str, Mapping[str, Any], bool]]:
    """``(name, state, covered by an enclosing Catch)`` for every state, nested ones included."""
    for name, state in states.items():
        if not isinstance(state, Mapping):
            continue
        yield name, state, covered
        inner_covered = covered or _catches_all(state)
        processor = state.get("ItemProcessor") or state.get("Iterator")
        if isinstance(processor, Mapping) and isinstance(processor.get("States"), Mapping):
            yield from _walk(processor["States"], inner_covered)
        for branch in state.get("Branches") or []:
            if isinstance(branch, Mapping) and isinstance(branch.get("States"), Mapping):
                yield from _walk(branch["States"], inner_covered)


def _check_task(name: str, state: Mapping[str, Any], covered: bool, steps: Mapping[str, Any] | None) -> list[str]:
    """Why the Task breaks the platform's rules; ``steps`` is ``None`` when the catalogue is unusable."""
    reasons: list[str] = []
    if "TimeoutSeconds" not in state and "TimeoutSecondsPath" not in state:
        reasons.append("Task has no TimeoutSeconds")
    retried = _retried(state)
    if not state.get("Retry"):
        reasons.append("Task has no Retry")
    function, params = _lambda_call(state)
    if function is not None and "States.ALL" not in retried:
        missing = [e for e in LAMBDA_SERVICE_ERRORS if e not in retried]
        if missing:
            reasons.append(f"Retry does not cover the Lambda service errors {', '.join(missing)}")
    failure_notify = function == NOTIFY_PLACEHOLDER and params.get("kind") == "failure"
    if not covered and not failure_notify and not _catches_all(state):
        reasons.append("Task has no Catch of States.ALL (the client would get no terminal event)")
    if function == STEP_RUNNER_PLACEHOLDER:
        step = params.get("step")
        if "step.$" in params:
            reasons.append("Parameters.step must be a constant step name, not a path (step.$)")
        elif not isinstance(step, str):
            reasons.append("Parameters.step (the step to run) is missing")
        elif steps is not None and step not in steps:
            reasons.append(f"step {step!r} is not declared by any installed plugin")
        if "request.$" not in params and "request" not in params:
            reasons.append('Parameters must pass the request ("request.$": "$.request")')
        if not retried & {"RetryableStepError", "States.ALL", "States.TaskFailed"}:
            reasons.append("Retry does not cover RetryableStepError")
    return reasons


def _check_definition(file: str, definition: Any, registry: Registry, workflow: str | None) -> list[Problem]:
    if not isinstance(definition, dict):
        return [Problem(file, "-", "a state machine definition is a JSON object")]
    problems: list[Problem] = []
    text = json.dumps(definition)
    rendered = json.loads(_substitute(text, {n: _placeholder_arn(n) for n in placeholders(text)}))
    problems.extend(Problem(file, state, reason) for state, reason in _statelint(rendered))
    if definition.get("QueryLanguage") == "JSONata":
        problems.append(Problem(file, "-", "JSONata is not supported by the local engine; use JSONPath"))
    try:
        steps: Mapping[str, Any] | None = registry.steps()
    except PluginError as exc:
        problems.append(Problem(file, "-", f"cannot check step names: {exc}"))
        steps = None
    if workflow is not None:
        try:
            known = registry.workflows()
        except PluginError:
            known = {}
        if workflow not in known:
            problems.append(Problem(file, "-", f"workflow {workflow!r} is not declared by any installed plugin"))
    states = definition.get("States")
    if not isinstance(states, Mapping):
        return problems
    for name, state, covered in _walk(states, covered=False):
        if state.get("QueryLanguage") == "JSONata":
            problems.append(Problem(file, name, "JSONata is not supported by the local engine; use JSONPath"))
        if "Assign" in state:
            problems.append(Problem(file, name, "Variables (Assign) are not supported by the local engine"))
        if state.get("Type") == "Task":
            problems.extend(Problem(file, name, r) for r in _check_task(name, state, covered, steps))
    return problems


def validate(
    paths: Iterable[Path | str] | None = None,
    *,
    registry: Registry | None = None,
    check_workflow: bool = True,
) -> list[Problem]:
    """Every problem of the definitions at ``paths`` (default: :func:`discover`); empty when all is well.

    ``check_workflow`` also requires each file's workflow (its name) to be declared by a plugin.
    """
    reg = registry if registry is not None else get_registry()
    files = list(paths) if paths is not None else list(discover(registry=reg).values())
    problems: list[Problem] = []
    for p in files:
        path = Path(p)
        try:
            definition = json.loads(path.read_text(encoding="utf-8"))
        except OSError as exc:
            problems.append(Problem(str(path), "-", f"cannot read: {exc.strerror or exc}"))
            continue
        except ValueError as exc:
            problems.append(Problem(str(path), "-", f"not valid JSON: {exc}"))
            continue
        workflow = workflow_name(path) if check_workflow else None
        problems.extend(_check_definition(str(path), definition, reg, workflow))
    return problems


# ---------------------------------------------------------------------------------------------------------
# Deployment
# ---------------------------------------------------------------------------------------------------------


def console_url(arn: str) -> str:
    """The AWS console page of a state machine (its region is the ARN's fourth field)."""
    region = arn.split(":")[3] if arn.count(":") >= 3 else "us-east-1"
    return f"https://{region}.console.aws.amazon.com/states/home?region={region}#/statemachines/view/{arn}"


class Deployment(NamedTuple):
    name: str
    arn: str
    #: ``created`` or ``updated``.
    action: str

    @property
    def console_url(self) -> str:
        return console_url(self.arn)


def _client(endpoint_url: str | None, region: str | None, profile: str | None) -> SFNClient:
    import boto3

    session = boto3.Session(profile_name=profile, region_name=region)
    return session.client("stepfunctions", endpoint_url=endpoint_url)


def deploy(
    definitions: Mapping[str, Path | str] | Iterable[Path | str],
    *,
    endpoint_url: str | None = None,
    region: str | None = None,
    profile: str | None = None,
    role_arn: str | None = None,
    name_prefix: str = DEFAULT_NAME_PREFIX,
    substitutions: Mapping[str, str] | None = None,
    client: SFNClient | None = None,
) -> list[Deployment]:
    """Create or update one state machine per definition, named ``name_prefix + workflow``.

    ``definitions`` maps workflow names to files, or is a list of files (workflow = file name). Works
    against any Step Functions endpoint: AWS (``endpoint_url=None``), moto, Step Functions Local.
    ``role_arn`` is required to create a state machine (not to update one). Raises ``ValueError`` if a
    definition keeps a placeholder without a value or is not JSON after substitution.
    """
    defs: dict[str, Path] = (
        {k: Path(v) for k, v in definitions.items()}
        if isinstance(definitions, Mapping)
        else {workflow_name(p): Path(p) for p in definitions}
    )
    subs = dict(substitutions or {})
    rendered: dict[str, str] = {}
    for workflow, path in defs.items():
        text = render(path, subs)
        missing = placeholders(text)
        if missing:
            names = ", ".join("${" + n + "}" for n in sorted(missing))
            raise ValueError(f"{path}: no substitution for {names}")
        try:
            json.loads(text)
        except ValueError as exc:
            raise ValueError(f"{path}: not valid JSON after substitution: {exc}") from exc
        rendered[workflow] = text
    sfn = client if client is not None else _client(endpoint_url, region, profile)
    existing: dict[str, str] = {}
    for page in sfn.get_paginator("list_state_machines").paginate():
        for sm in page["stateMachines"]:
            existing[sm["name"]] = sm["stateMachineArn"]
    out: list[Deployment] = []
    for workflow, text in rendered.items():
        name = name_prefix + workflow
        if name in existing:
            kwargs: dict[str, Any] = {"stateMachineArn": existing[name], "definition": text}
            if role_arn:
                kwargs["roleArn"] = role_arn
            sfn.update_state_machine(**kwargs)
            out.append(Deployment(name, existing[name], "updated"))
        else:
            if not role_arn:
                raise ValueError(f"a role ARN is needed to create the state machine {name}")
            arn = sfn.create_state_machine(name=name, definition=text, roleArn=role_arn)["stateMachineArn"]
            out.append(Deployment(name, arn, "created"))
    return out


# ---------------------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------------------


def _cmd_plugins(args: argparse.Namespace) -> int:
    try:
        listing = get_registry().list_plugins()
    except PluginError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    errors = plugin_errors()
    if args.json:
        print(json.dumps(listing, indent=2))
    else:
        if not listing:
            print("no plugins installed")
        for p in listing:
            origin = f"{p['distribution']} {p['version']}" if p["distribution"] else "registered directly"
            print(f"{p['name']} ({origin})")
            print(f"  steps:     {', '.join(p['steps']) or '-'}")
            print(f"  workflows: {', '.join(p['workflows']) or '-'}")
            print(f"  hooks:     {', '.join(p['hooks']) or '-'}")
    for err in errors:
        print(f"error: {err}", file=sys.stderr)
    return 1 if errors else 0


def _cmd_validate(args: argparse.Namespace) -> int:
    paths = [Path(p) for p in args.paths] if args.paths else None
    try:
        if paths is None:
            paths = list(discover().values())
        problems = validate(paths)
    except PluginError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    for problem in problems:
        print(problem)
    if problems:
        print(f"{len(problems)} problem(s) in {len({p.file for p in problems})} file(s)", file=sys.stderr)
        return 1
    print(f"{len(paths)} state machine definition(s) OK")
    return 0


def _parse_substitutions(values: Sequence[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for v in values:
        name, sep, value = v.partition("=")
        if not sep or not name:
            raise ValueError(f"--substitution expects NAME=VALUE, got {v!r}")
        out[name] = value
    return out


def _default_prefix() -> str:
    arn_prefix = Settings.from_env().state_machine_arn_prefix
    return arn_prefix.rpartition(":stateMachine:")[2] if ":stateMachine:" in arn_prefix else DEFAULT_NAME_PREFIX


def _cmd_deploy(args: argparse.Namespace) -> int:
    try:
        defs: dict[str, Path] = {workflow_name(p): Path(p) for p in args.paths} if args.paths else discover()
        if not defs:
            print("error: no state machine definitions found", file=sys.stderr)
            return 1
        if not args.no_validate:
            problems = validate(defs.values())
            for problem in problems:
                print(problem, file=sys.stderr)
            if problems:
                print("not deploying: fix the problems above (or pass --no-validate)", file=sys.stderr)
                return 1
        names: set[str] = set()
        for path in defs.values():
            names |= placeholders(Path(path).read_text(encoding="utf-8"))
        subs: dict[str, str] = {}
        if args.function_arn_prefix:
            subs.update(function_arn_substitutions(args.function_arn_prefix, names))
        subs.update(_parse_substitutions(args.substitution))
        role = args.role_arn or (LOCAL_ROLE_ARN if args.endpoint_url else None)
        results = deploy(
            defs,
            endpoint_url=args.endpoint_url,
            region=args.region,
            profile=args.profile,
            role_arn=role,
            name_prefix=args.prefix if args.prefix is not None else _default_prefix(),
            substitutions=subs,
        )
    except (ValueError, PluginError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except Exception as exc:  # botocore errors: no credentials, access denied, endpoint down
        print(f"error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    for d in results:
        print(f"{d.action} {d.name} {d.arn}")
        if not args.endpoint_url:
            print(f"  {d.console_url}")
    return 0


def add_subcommands(subparsers: Any) -> None:
    """Register ``plugins``, ``statemachines validate`` and ``deploy`` on an argparse subparsers object.

    Each sets ``func`` (``args.func(args) -> int``, the exit code).
    """
    p = subparsers.add_parser("plugins", help="list installed plugins, their steps and workflows")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=_cmd_plugins)

    sm = subparsers.add_parser("statemachines", help="state machine definitions")
    sm_sub = sm.add_subparsers(dest="statemachines_command", required=True, metavar="COMMAND")
    v = sm_sub.add_parser("validate", help="check definitions (default: the project's and the plugins')")
    v.add_argument("paths", nargs="*", metavar="PATH", help="*.asl.json files")
    v.set_defaults(func=_cmd_validate)

    d = subparsers.add_parser(
        "deploy", help="create or update the workflows' state machines on AWS or a local endpoint"
    )
    d.add_argument("paths", nargs="*", metavar="PATH", help="*.asl.json files (default: all workflows)")
    d.add_argument("--endpoint-url", help="a Step Functions endpoint (moto server, Step Functions Local)")
    d.add_argument("--region")
    d.add_argument("--profile")
    d.add_argument("--role-arn", help="execution role (needed to create; a dummy one is used with --endpoint-url)")
    d.add_argument(
        "--prefix",
        help=f"state machine name prefix (default: {DEFAULT_NAME_PREFIX!r} or the one "
        "in STREAMER_STATE_MACHINE_ARN_PREFIX)",
    )
    d.add_argument(
        "--substitution",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="value of a ${NAME} placeholder (repeatable)",
    )
    d.add_argument(
        "--function-arn-prefix",
        metavar="PREFIX",
        help="${XFunctionArn} becomes PREFIX + 'XFunction', e.g. arn:aws:lambda:us-east-1:123456789012:function:",
    )
    d.add_argument("--no-validate", action="store_true", help="deploy even if validation finds problems")
    d.set_defaults(func=_cmd_deploy)
