"""State machine definitions (``statemachines/*.asl.json``): find, validate, render, deploy.

Plain functions only; the ``streamer plugins`` and ``streamer statemachines validate|deploy`` commands that
use them are in :mod:`streamer.cli`.

A definition is ASL JSON with SAM ``DefinitionSubstitutions`` placeholders: ``${StepRunnerFunctionArn}`` and
``${NotifyFunctionArn}``. The workflow ``W`` is the file ``W.asl.json`` (in the project's ``statemachines/``
directory — by default the copy bundled with the package, see :mod:`streamer.deploy.resources` — or shipped
by a plugin as ``Workflow.definition``) and its state machine is named ``<prefix>W`` (``streamer-W``;
``STREAMER_STATE_MACHINE_ARN_PREFIX`` ends with that prefix).

Either query language may be used, for the whole machine or per state (``QueryLanguage``): JSONPath (the
default) or JSONata, with Variables (``Assign``) in both. AWS runs both, and so does the local engine
(``streamer local`` replaces moto's JSONata stub with ``jsonata-python``). A JSONata state passes its
payload in ``Arguments`` (no ``Parameters``, no ``.$`` keys:
https://docs.aws.amazon.com/step-functions/latest/dg/transforming-data.html), so the rules below read the
payload from ``Parameters`` or ``Arguments`` according to the state's query language.

:func:`validate` checks what the platform relies on, beyond the ASL structure (checked by ``statelint``):

* every Task has ``TimeoutSeconds`` and a ``Retry``; a Lambda Task's ``Retry`` covers the Lambda service
  errors (``Lambda.ServiceException``, ``Lambda.AWSLambdaException``, ``Lambda.SdkClientException``,
  ``Lambda.TooManyRequestsException``);
* every Task has a ``Catch`` of ``States.ALL`` (so the client always gets a terminal event) — or is
  inside a Map/Parallel that has one (a Catch inside an iteration cannot reach the machine's states), or
  is the failure notification itself (``kind == "failure"``: where would its Catch go?);
* a step Task (``Resource: ${StepRunnerFunctionArn}``) names a step (``step``, a constant: not a JSONPath
  ``step.$`` nor a JSONata ``{% … %}`` expression) that an installed plugin declares, passes the request
  (``request.$`` in JSONPath, ``request`` in JSONata), and retries ``RetryableStepError``;
* ``QueryLanguage`` is ``JSONPath`` or ``JSONata``;
* the machine has an execution-level ``TimeoutSeconds`` (a Standard execution may otherwise run for a
  year: https://docs.aws.amazon.com/step-functions/latest/dg/statemachine-structure.html), so a request
  whose execution hangs still ends ``TIMED_OUT`` (docs/reliability.md);
* the file's workflow is declared by an installed plugin.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from streamer.config import LOCAL_ACCOUNT, LOCAL_REGION, Env
from streamer.deploy.resources import statemachines_dir
from streamer.errors import PluginError
from streamer.plugins import Registry, get_registry

if TYPE_CHECKING:
    from mypy_boto3_stepfunctions import SFNClient

__all__ = [
    "DEFAULT_NAME_PREFIX",
    "DEFINITION_SUFFIX",
    "LAMBDA_SERVICE_ERRORS",
    "LOCAL_ROLE_ARN",
    "NOTIFY_PLACEHOLDER",
    "QUERY_LANGUAGES",
    "STEP_RUNNER_PLACEHOLDER",
    "Deployment",
    "Problem",
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
#: ASL's two query languages; JSONPath when a definition says nothing.
QUERY_LANGUAGES = ("JSONPath", "JSONata")
DEFAULT_NAME_PREFIX = "streamer-"
#: Used to create state machines on a local endpoint when no role is given (moto does not check it).
LOCAL_ROLE_ARN = f"arn:aws:iam::{LOCAL_ACCOUNT}:role/streamer-local-states"

# SAM/CloudFormation DefinitionSubstitutions: ${Name}, names of letters, digits, '_', '.', '-' (no '!').
_PLACEHOLDER = re.compile(r"\$\{([A-Za-z0-9_.:-]+)\}")


# ---------------------------------------------------------------------------------------------------------
# Finding and rendering definitions
# ---------------------------------------------------------------------------------------------------------


def default_directory(project_dir: Path | str | None = None) -> Path:
    """``<project_dir>/statemachines``; without a project directory ``STREAMER_STATEMACHINES_DIR``, else the
    definitions bundled with the package (:func:`streamer.deploy.resources.statemachines_dir`).

    Raises :class:`~streamer.deploy.resources.ProjectFilesError` when the directory does not exist."""
    if project_dir is None:
        env = os.environ.get(Env.STATEMACHINES_DIR)
        if env:
            return Path(env)
    return statemachines_dir(project_dir)


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
    return f"arn:aws:lambda:{LOCAL_REGION}:{LOCAL_ACCOUNT}:function:{name}"


def _statelint(definition: dict[str, Any]) -> list[tuple[str, str]]:
    from statelint.linter import Linter

    return [(_statelint_state(p), p) for p in Linter.validate(definition)]


def _catches_all(state: Mapping[str, Any]) -> bool:
    return any("States.ALL" in (c.get("ErrorEquals") or []) for c in state.get("Catch") or [])


def _retried(state: Mapping[str, Any]) -> set[str]:
    return {e for r in state.get("Retry") or [] for e in (r.get("ErrorEquals") or [])}


def _payload_field(language: str) -> str:
    """Where a Task's payload is: ``Parameters`` (JSONPath) or ``Arguments`` (JSONata)."""
    return "Arguments" if language == "JSONata" else "Parameters"


def _is_expression(value: Any, language: str) -> bool:
    """A JSONata ``{% … %}`` expression (evaluated at run time), not a constant."""
    return language == "JSONata" and isinstance(value, str) and value.strip().startswith("{%")


def _lambda_call(state: Mapping[str, Any], language: str) -> tuple[str | None, Mapping[str, Any]]:
    """``(function, payload)`` of a Lambda Task, in either integration style and either query language."""
    resource = state.get("Resource")
    raw = state.get(_payload_field(language))
    params: Mapping[str, Any] = raw if isinstance(raw, Mapping) else {}
    if isinstance(resource, str) and resource.startswith("arn:aws:states:::lambda:invoke"):
        payload = params.get("Payload")
        return params.get("FunctionName"), payload if isinstance(payload, Mapping) else {}
    if isinstance(resource, str) and (resource.startswith("${") or ":lambda:" in resource):
        return resource, params
    return None, params


class _Visit(NamedTuple):
    name: str
    state: Mapping[str, Any]
    #: Inside a Map/Parallel whose Catch covers States.ALL.
    covered: bool
    #: The state's query language: its own ``QueryLanguage``, else the enclosing one's.
    language: Any


def _walk(states: Mapping[str, Any], covered: bool = False, language: Any = "JSONPath") -> Iterator[_Visit]:
    """Every state, nested ones included."""
    for name, state in states.items():
        if not isinstance(state, Mapping):
            continue
        own = state.get("QueryLanguage", language)
        yield _Visit(name, state, covered, own)
        inner_covered = covered or _catches_all(state)
        processor = state.get("ItemProcessor") or state.get("Iterator")
        if isinstance(processor, Mapping) and isinstance(processor.get("States"), Mapping):
            yield from _walk(processor["States"], inner_covered, processor.get("QueryLanguage", own))
        for branch in state.get("Branches") or []:
            if isinstance(branch, Mapping) and isinstance(branch.get("States"), Mapping):
                yield from _walk(branch["States"], inner_covered, branch.get("QueryLanguage", own))


def _check_task(visit: _Visit, steps: Mapping[str, Any] | None) -> list[str]:
    """Why the Task breaks the platform's rules; ``steps`` is ``None`` when the catalogue is unusable."""
    state, covered, language = visit.state, visit.covered, visit.language
    reasons: list[str] = []
    if "TimeoutSeconds" not in state and "TimeoutSecondsPath" not in state:
        reasons.append("Task has no TimeoutSeconds")
    retried = _retried(state)
    if not state.get("Retry"):
        reasons.append("Task has no Retry")
    function, params = _lambda_call(state, language)
    if function is not None and "States.ALL" not in retried:
        missing = [e for e in LAMBDA_SERVICE_ERRORS if e not in retried]
        if missing:
            reasons.append(f"Retry does not cover the Lambda service errors {', '.join(missing)}")
    failure_notify = function == NOTIFY_PLACEHOLDER and params.get("kind") == "failure"
    if not covered and not failure_notify and not _catches_all(state):
        reasons.append("Task has no Catch of States.ALL (the client would get no terminal event)")
    if function == STEP_RUNNER_PLACEHOLDER:
        field = _payload_field(language)
        step = params.get("step")
        if "step.$" in params:
            reasons.append(f"{field}.step must be a constant step name, not a path (step.$)")
        elif _is_expression(step, language):
            reasons.append(f"{field}.step must be a constant step name, not a JSONata expression")
        elif not isinstance(step, str):
            reasons.append(f"{field}.step (the step to run) is missing")
        elif steps is not None and step not in steps:
            reasons.append(f"step {step!r} is not declared by any installed plugin")
        if language == "JSONata" and "request" not in params:
            reasons.append('Arguments must pass the request ("request": "{% $states.input.request %}")')
        elif language != "JSONata" and "request.$" not in params and "request" not in params:
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
    timeout = definition.get("TimeoutSeconds")
    if not (isinstance(timeout, int) and not isinstance(timeout, bool) and timeout > 0):
        problems.append(Problem(file, "-", "the state machine has no execution-level TimeoutSeconds"))
    language = definition.get("QueryLanguage", "JSONPath")
    if language not in QUERY_LANGUAGES:
        problems.append(Problem(file, "-", f"QueryLanguage {language!r} is neither JSONPath nor JSONata"))
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
    for visit in _walk(states, covered=False, language=language):
        if "QueryLanguage" in visit.state and visit.language not in QUERY_LANGUAGES:
            problems.append(
                Problem(file, visit.name, f"QueryLanguage {visit.language!r} is neither JSONPath nor JSONata")
            )
        if visit.state.get("Type") == "Task":
            problems.extend(Problem(file, visit.name, r) for r in _check_task(visit, steps))
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
    region = arn.split(":")[3] if arn.count(":") >= 3 else LOCAL_REGION
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
