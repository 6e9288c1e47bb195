"""State machine definitions: validation rules (JSONPath and JSONata), SAM-style rendering, deployment, the CLI."""

from __future__ import annotations

import copy
import json
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto import mock_aws

import streamer
from streamer import plugins
from streamer.cli import main as cli
from streamer.deploy import statemachines
from streamer.deploy.statemachines import Problem, validate
from streamer.plugins import Registry, create_plugin_manager
from streamer.step import Step, Workflow

ROOT = Path(__file__).resolve().parents[2]
ECHO = ROOT / "statemachines" / "echo.asl.json"
TEXTSTATS = ROOT / "statemachines" / "textstats.asl.json"
#: The echo workflow written in JSONata (docs/plugins.md shows it; tests/functional runs it).
JSONATA_ECHO = ROOT / "docs" / "examples" / "jsonata" / "echo.asl.json"


@pytest.fixture(scope="module")
def registry() -> Registry:
    return Registry(create_plugin_manager(autoload=True))


def load(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def problems_after(
    tmp_path: Path, registry: Registry, change: Callable[[dict[str, Any]], None], source: Path = ECHO
) -> list[tuple[str, str]]:
    definition = copy.deepcopy(load(source))
    change(definition)
    path = tmp_path / source.name
    path.write_text(json.dumps(definition))
    return [(p.state, p.reason) for p in validate([path], registry=registry)]


def test_the_project_definitions_are_valid(registry: Registry) -> None:
    assert validate([ECHO, TEXTSTATS], registry=registry) == []
    assert set(statemachines.discover(registry=registry)) >= {"echo", "textstats"}
    assert validate(registry=registry) == []


def test_definitions_use_the_two_substitutions() -> None:
    for path in (ECHO, TEXTSTATS, JSONATA_ECHO):
        text = path.read_text()
        assert statemachines.placeholders(text) == {"StepRunnerFunctionArn", "NotifyFunctionArn"}


def test_every_step_task_passes_the_attempt_and_every_task_is_guarded() -> None:
    for path in (ECHO, TEXTSTATS):
        for name, state, _, _ in statemachines._walk(load(path)["States"]):
            if state.get("Type") != "Task":
                continue
            assert state["TimeoutSeconds"] <= 900, name
            for retrier in state["Retry"]:
                assert retrier["IntervalSeconds"] == 1 and retrier["BackoffRate"] in (1.0, 2.0), name
                assert retrier["MaxAttempts"] >= 3, name
            if state["Resource"] == statemachines.STEP_RUNNER_PLACEHOLDER:
                assert state["Parameters"]["attempt.$"] == "$$.State.RetryCount", name


def test_step_tasks_time_out_before_the_step_runner_lambda_does() -> None:
    # Otherwise Lambda's own timeout (Sandbox.Timedout -> FAILED) would win over States.Timeout (TIMED_OUT).
    from streamer.deploy.template import functions

    lambda_timeout = functions()["StepRunnerFunction"].timeout
    for path in (ECHO, TEXTSTATS):
        for name, state, _, _ in statemachines._walk(load(path)["States"]):
            if state.get("Resource") == statemachines.STEP_RUNNER_PLACEHOLDER:
                assert state["TimeoutSeconds"] < lambda_timeout, (path.name, name)


def _task(d: dict[str, Any], name: str = "Echo") -> dict[str, Any]:
    state: dict[str, Any] = d["States"][name]
    return state


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (lambda d: _task(d).pop("TimeoutSeconds"), ("Echo", "Task has no TimeoutSeconds")),
        (lambda d: _task(d).pop("Retry"), ("Echo", "Task has no Retry")),
        (
            lambda d: _task(d).pop("Catch"),
            ("Echo", "Task has no Catch of States.ALL (the client would get no terminal event)"),
        ),
        (
            lambda d: _task(d)["Catch"][0].update(ErrorEquals=["StepFailedError"]),
            ("Echo", "Task has no Catch of States.ALL (the client would get no terminal event)"),
        ),
        (
            lambda d: _task(d)["Parameters"].update(step="nope"),
            ("Echo", "step 'nope' is not declared by any installed plugin"),
        ),
        (
            lambda d: _task(d)["Parameters"].pop("step"),
            ("Echo", "Parameters.step (the step to run) is missing"),
        ),
        (
            lambda d: _task(d)["Parameters"].update({"step.$": "$.step"}),
            ("Echo", "Parameters.step must be a constant step name, not a path (step.$)"),
        ),
        (
            lambda d: _task(d)["Parameters"].pop("request.$"),
            ("Echo", 'Parameters must pass the request ("request.$": "$.request")'),
        ),
        (
            lambda d: _task(d)["Retry"].pop(1),
            ("Echo", "Retry does not cover RetryableStepError"),
        ),
        (
            lambda d: _task(d)["Retry"][0].update(ErrorEquals=["Lambda.ServiceException"]),
            (
                "Echo",
                "Retry does not cover the Lambda service errors Lambda.AWSLambdaException, "
                "Lambda.SdkClientException, Lambda.TooManyRequestsException",
            ),
        ),
        (
            lambda d: _task(d, "NotifyResult").pop("Catch"),
            ("NotifyResult", "Task has no Catch of States.ALL (the client would get no terminal event)"),
        ),
        (
            lambda d: _task(d, "NotifyFailure").pop("TimeoutSeconds"),
            ("NotifyFailure", "Task has no TimeoutSeconds"),
        ),
        (
            lambda d: d.update(QueryLanguage="XPath"),
            ("-", "QueryLanguage 'XPath' is neither JSONPath nor JSONata"),
        ),
        (
            lambda d: _task(d).update(QueryLanguage="jsonata"),
            ("Echo", "QueryLanguage 'jsonata' is neither JSONPath nor JSONata"),
        ),
        (
            lambda d: _task(d).update(Next="Nowhere"),
            ("Echo", 'No state found named "Nowhere", referenced at State Machine.States.Echo.Next'),
        ),
    ],
    ids=[
        "no timeout",
        "no retry",
        "no catch",
        "catch not ALL",
        "unknown step",
        "no step",
        "dynamic step",
        "no request",
        "no RetryableStepError retry",
        "lambda errors not retried",
        "result notify without catch",
        "failure notify without timeout",
        "unknown query language",
        "unknown state query language",
        "statelint structure",
    ],
)
def test_each_rule(
    tmp_path: Path, registry: Registry, change: Callable[[dict[str, Any]], Any], expected: tuple[str, str]
) -> None:
    assert expected in problems_after(tmp_path, registry, change)


def test_the_failure_notification_needs_no_catch(registry: Registry) -> None:
    assert "Catch" not in load(ECHO)["States"]["NotifyFailure"]
    assert validate([ECHO], registry=registry) == []


# --------------------------------------------------------------------------------------- JSONata


def test_a_jsonata_definition_is_valid(registry: Registry) -> None:
    assert load(JSONATA_ECHO)["QueryLanguage"] == "JSONata"
    assert validate([JSONATA_ECHO], registry=registry) == []


_JSONATA_REQUEST = 'Arguments must pass the request ("request": "{% $states.input.request %}")'


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (
            lambda d: _task(d)["Arguments"].update(step="{% $states.input.step %}"),
            ("Echo", "Arguments.step must be a constant step name, not a JSONata expression"),
        ),
        (lambda d: _task(d)["Arguments"].pop("step"), ("Echo", "Arguments.step (the step to run) is missing")),
        (
            lambda d: _task(d).update(Parameters=_task(d).pop("Arguments")),
            ("Echo", "Arguments.step (the step to run) is missing"),
        ),
        (
            lambda d: _task(d)["Arguments"].update(step="nope"),
            ("Echo", "step 'nope' is not declared by any installed plugin"),
        ),
        (lambda d: _task(d)["Arguments"].pop("request"), ("Echo", _JSONATA_REQUEST)),
        (
            lambda d: _task(d).pop("Catch"),
            ("Echo", "Task has no Catch of States.ALL (the client would get no terminal event)"),
        ),
        (lambda d: _task(d)["Retry"].pop(1), ("Echo", "Retry does not cover RetryableStepError")),
        (lambda d: _task(d, "NotifyFailure").pop("TimeoutSeconds"), ("NotifyFailure", "Task has no TimeoutSeconds")),
        (lambda d: _task(d, "NotifyResult").pop("Retry"), ("NotifyResult", "Task has no Retry")),
    ],
    ids=[
        "dynamic step",
        "no step",
        "payload in Parameters",
        "unknown step",
        "no request",
        "no catch",
        "no RetryableStepError retry",
        "failure notify without timeout",
        "notify without retry",
    ],
)
def test_each_rule_in_jsonata(
    tmp_path: Path, registry: Registry, change: Callable[[dict[str, Any]], Any], expected: tuple[str, str]
) -> None:
    assert expected in problems_after(tmp_path, registry, change, JSONATA_ECHO)


def test_the_jsonata_failure_notification_needs_no_catch(registry: Registry) -> None:
    assert "Catch" not in load(JSONATA_ECHO)["States"]["NotifyFailure"]
    assert "Catch" in load(JSONATA_ECHO)["States"]["NotifyResult"]


def _echo_state_in_jsonata(d: dict[str, Any]) -> None:
    """Only the Echo state of the JSONPath echo switches to JSONata (a per-state QueryLanguage)."""
    echo = _task(d)
    echo["QueryLanguage"] = "JSONata"
    del echo["Parameters"], echo["ResultPath"]
    echo["Arguments"] = {
        "step": "echo",
        "request": "{% $states.input.request %}",
        "input": "{% $states.input.payload %}",
        "attempt": "{% $states.context.State.RetryCount %}",
    }
    echo["Output"] = "{% $merge([$states.input, {'output': $states.result}]) %}"
    echo["Catch"] = [
        {
            "ErrorEquals": ["States.ALL"],
            "Output": "{% $merge([$states.input, {'error': $states.errorOutput}]) %}",
            "Next": "NotifyFailure",
        }
    ]


def test_one_jsonata_state_in_a_jsonpath_machine(tmp_path: Path, registry: Registry) -> None:
    assert problems_after(tmp_path, registry, _echo_state_in_jsonata) == []

    def without_request(d: dict[str, Any]) -> None:
        _echo_state_in_jsonata(d)
        del _task(d)["Arguments"]["request"]

    assert problems_after(tmp_path, registry, without_request) == [("Echo", _JSONATA_REQUEST)]


def test_jsonata_inside_a_map_inherits_the_maps_query_language(tmp_path: Path, registry: Registry) -> None:
    def inner_task_in_jsonata_without_request(d: dict[str, Any]) -> None:
        d["States"]["Count"]["ItemProcessor"]["QueryLanguage"] = "JSONata"
        inner = d["States"]["Count"]["ItemProcessor"]["States"]["CountChunk"]
        params = inner.pop("Parameters")
        inner.pop("ResultSelector", None)
        inner.pop("ResultPath", None)
        inner["Arguments"] = {"step": params["step"], "input": "{% $states.input %}"}

    assert ("CountChunk", _JSONATA_REQUEST) in problems_after(
        tmp_path, registry, inner_task_in_jsonata_without_request, TEXTSTATS
    )


def test_tasks_inside_a_map_are_covered_by_the_map_catch(tmp_path: Path, registry: Registry) -> None:
    def drop_map_catch(d: dict[str, Any]) -> None:
        d["States"]["Count"].pop("Catch")

    def break_inner_task(d: dict[str, Any]) -> None:
        inner = d["States"]["Count"]["ItemProcessor"]["States"]["CountChunk"]
        inner.pop("TimeoutSeconds")
        inner["Parameters"]["step"] = "textstats.nope"

    assert validate([TEXTSTATS], registry=registry) == []
    assert problems_after(tmp_path, registry, drop_map_catch, TEXTSTATS) == [
        ("CountChunk", "Task has no Catch of States.ALL (the client would get no terminal event)")
    ]
    assert problems_after(tmp_path, registry, break_inner_task, TEXTSTATS) == [
        ("CountChunk", "Task has no TimeoutSeconds"),
        ("CountChunk", "step 'textstats.nope' is not declared by any installed plugin"),
    ]


def test_parallel_branches_are_checked(tmp_path: Path, registry: Registry) -> None:
    def wrap_in_parallel(d: dict[str, Any]) -> None:
        echo = d["States"].pop("Echo")
        echo.pop("Catch")
        echo.pop("Next")
        echo["End"] = True
        echo.pop("TimeoutSeconds")
        d["States"]["Both"] = {
            "Type": "Parallel",
            "Branches": [{"StartAt": "Echo", "States": {"Echo": echo}}],
            "ResultPath": "$.output",
            "Catch": [{"ErrorEquals": ["States.ALL"], "ResultPath": "$.error", "Next": "NotifyFailure"}],
            "Next": "NotifyResult",
        }
        d["StartAt"] = "Both"

    assert problems_after(tmp_path, registry, wrap_in_parallel) == [("Echo", "Task has no TimeoutSeconds")]


def test_unreadable_and_unknown_files(tmp_path: Path, registry: Registry) -> None:
    bad_json = tmp_path / "broken.asl.json"
    bad_json.write_text("{not json")
    missing = tmp_path / "missing.asl.json"
    unknown = tmp_path / "unknown.asl.json"
    unknown.write_text(ECHO.read_text())
    problems = validate([bad_json, missing, unknown], registry=registry)
    assert [(Path(p.file).name, p.state) for p in problems] == [
        ("broken.asl.json", "-"),
        ("missing.asl.json", "-"),
        ("unknown.asl.json", "-"),
    ]
    assert problems[0].reason.startswith("not valid JSON")
    assert problems[1].reason.startswith("cannot read")
    assert problems[2].reason == "workflow 'unknown' is not declared by any installed plugin"
    assert str(problems[2]) == f"{unknown}: -: workflow 'unknown' is not declared by any installed plugin"
    assert validate([unknown], registry=registry, check_workflow=False) == []


def test_a_definition_must_be_a_json_object(tmp_path: Path, registry: Registry) -> None:
    path = tmp_path / "echo.asl.json"
    path.write_text("[]")
    assert validate([path], registry=registry) == [
        Problem(str(path), "-", "a state machine definition is a JSON object")
    ]


def test_a_plugin_can_ship_its_own_definition(tmp_path: Path) -> None:
    definition = tmp_path / "shipped.asl.json"
    definition.write_text(ECHO.read_text())

    class Shipper:
        @streamer.hookimpl
        def streamer_workflows(self) -> list[Workflow]:
            return [Workflow(name="shipped", description="Shipped.", definition=definition)]

        @streamer.hookimpl
        def streamer_steps(self) -> list[Step]:
            return [Step(name="echo", func=lambda d, c: {})]

    pm = create_plugin_manager(autoload=False)
    pm.register(Shipper(), name="shipper")
    found = statemachines.discover(tmp_path / "empty", registry=Registry(pm))
    assert found == {"shipped": definition}
    assert validate(found.values(), registry=Registry(pm)) == []


# --------------------------------------------------------------------------------------- render


def test_render_substitutes_like_definition_substitutions(tmp_path: Path) -> None:
    path = tmp_path / "x.asl.json"
    path.write_text('{"A": "${One}", "B": "${One}-${Two}", "C": "${Unknown}", "D": "$.plain", "E": "${}"}')
    out = statemachines.render(path, {"One": "1", "Two": 'quote"d', "Unused": "u"})
    assert out == '{"A": "1", "B": "1-quote"d", "C": "${Unknown}", "D": "$.plain", "E": "${}"}'
    assert statemachines.placeholders(out) == {"Unknown"}


def test_render_the_real_definition() -> None:
    arns = {
        "StepRunnerFunctionArn": "arn:aws:lambda:eu-west-1:111122223333:function:streamer-StepRunner",
        "NotifyFunctionArn": "arn:aws:lambda:eu-west-1:111122223333:function:streamer-Notify",
    }
    rendered = json.loads(statemachines.render(ECHO, arns))
    assert rendered["States"]["Echo"]["Resource"] == arns["StepRunnerFunctionArn"]
    assert rendered["States"]["NotifyFailure"]["Resource"] == arns["NotifyFunctionArn"]


def test_function_arn_substitutions() -> None:
    prefix = "arn:aws:lambda:us-east-1:123456789012:function:"
    names = ["StepRunnerFunctionArn", "NotifyFunctionArn", "X", "Arn"]
    assert statemachines.function_arn_substitutions(prefix, names) == {
        "StepRunnerFunctionArn": prefix + "StepRunnerFunction",
        "NotifyFunctionArn": prefix + "NotifyFunction",
    }


def test_workflow_names_and_console_urls() -> None:
    assert statemachines.workflow_name("/a/b/text-stats.asl.json") == "text-stats"
    arn = "arn:aws:states:eu-central-1:123456789012:stateMachine:streamer-echo"
    assert statemachines.console_url(arn) == (
        "https://eu-central-1.console.aws.amazon.com/states/home?region=eu-central-1"
        "#/statemachines/view/arn:aws:states:eu-central-1:123456789012:stateMachine:streamer-echo"
    )


# --------------------------------------------------------------------------------------- deploy

SUBS = {
    "StepRunnerFunctionArn": "arn:aws:lambda:us-east-1:123456789012:function:StepRunnerFunction",
    "NotifyFunctionArn": "arn:aws:lambda:us-east-1:123456789012:function:NotifyFunction",
}
ROLE = "arn:aws:iam::123456789012:role/states"


def test_deploy_creates_then_updates() -> None:
    with mock_aws():
        sfn = boto3.client("stepfunctions", region_name="us-east-1")
        first = statemachines.deploy(
            {"echo": ECHO, "textstats": TEXTSTATS}, client=sfn, role_arn=ROLE, substitutions=SUBS
        )
        assert [(d.name, d.action) for d in first] == [("streamer-echo", "created"), ("streamer-textstats", "created")]
        described = sfn.describe_state_machine(stateMachineArn=first[0].arn)
        assert json.loads(described["definition"]) == json.loads(statemachines.render(ECHO, SUBS))
        assert first[0].console_url.endswith("#/statemachines/view/" + first[0].arn)

        second = statemachines.deploy([ECHO], region="us-east-1", substitutions=SUBS, name_prefix="streamer-")
        assert second == [statemachines.Deployment("streamer-echo", first[0].arn, "updated")]
        assert len(sfn.list_state_machines()["stateMachines"]) == 2


def test_deploy_refuses_missing_substitutions_and_roles() -> None:
    with mock_aws():
        sfn = boto3.client("stepfunctions", region_name="us-east-1")
        with pytest.raises(ValueError, match=r"no substitution for \$\{NotifyFunctionArn\}"):
            statemachines.deploy([ECHO], client=sfn, role_arn=ROLE, substitutions={"StepRunnerFunctionArn": "x"})
        with pytest.raises(ValueError, match="role ARN"):
            statemachines.deploy([ECHO], client=sfn, substitutions=SUBS)
        with pytest.raises(ValueError, match="not valid JSON after substitution"):
            statemachines.deploy([ECHO], client=sfn, role_arn=ROLE, substitutions={**SUBS, "NotifyFunctionArn": 'a"b'})
        assert sfn.list_state_machines()["stateMachines"] == []


# --------------------------------------------------------------------------------------- CLI


def test_cli_validate_ok(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli(["statemachines", "validate"]) == 0
    assert "state machine definition(s) OK" in capsys.readouterr().out
    assert cli(["statemachines", "validate", str(ECHO)]) == 0


def test_cli_validate_reports_a_catalogue_that_cannot_be_built(capsys: pytest.CaptureFixture[str]) -> None:
    class Clash:
        @streamer.hookimpl
        def streamer_workflows(self) -> list[Workflow]:
            return [Workflow(name="echo", description="Another echo.")]

    plugins.reset_plugin_manager()
    try:
        plugins.get_plugin_manager().register(Clash(), name="clash")
        assert cli(["statemachines", "validate"]) == 1
    finally:
        plugins.reset_plugin_manager()
    out, err = capsys.readouterr()
    assert out == ""
    assert err == "error: workflow 'echo' is declared by both plugin 'clash' and plugin 'echo'\n"


def test_cli_validate_reports_file_state_reason(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    definition = load(ECHO)
    del definition["States"]["Echo"]["TimeoutSeconds"]
    path = tmp_path / "echo.asl.json"
    path.write_text(json.dumps(definition))
    assert cli(["statemachines", "validate", str(path)]) == 1
    out, err = capsys.readouterr()
    assert out.splitlines() == [f"{path}: Echo: Task has no TimeoutSeconds"]
    assert "1 problem(s) in 1 file(s)" in err


def test_cli_deploy(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("STREAMER_STATE_MACHINE_ARN_PREFIX", raising=False)
    with mock_aws():
        code = cli(
            [
                "statemachines",
                "deploy",
                str(ECHO),
                "--region",
                "eu-west-1",
                "--role-arn",
                ROLE,
                "--function-arn-prefix",
                "arn:aws:lambda:eu-west-1:123456789012:function:",
                "--substitution",
                "NotifyFunctionArn=arn:aws:lambda:eu-west-1:123456789012:function:custom-notify",
            ]
        )
        out = capsys.readouterr().out
        assert code == 0, out
        arn = "arn:aws:states:eu-west-1:123456789012:stateMachine:streamer-echo"
        assert out.splitlines() == [
            f"created streamer-echo {arn}",
            f"  https://eu-west-1.console.aws.amazon.com/states/home?region=eu-west-1#/statemachines/view/{arn}",
        ]
        definition = json.loads(
            boto3.client("stepfunctions", region_name="eu-west-1").describe_state_machine(stateMachineArn=arn)[
                "definition"
            ]
        )
        assert definition["States"]["Echo"]["Resource"].endswith(":function:StepRunnerFunction")
        assert definition["States"]["NotifyResult"]["Resource"].endswith(":function:custom-notify")

        monkeypatch.setenv(
            "STREAMER_STATE_MACHINE_ARN_PREFIX", "arn:aws:states:eu-west-1:123456789012:stateMachine:prod-"
        )
        assert cli(["statemachines", "deploy", str(TEXTSTATS), "--region", "eu-west-1", "--function-arn-prefix", "arn:x:"]) == 1
        assert "a role ARN is needed to create the state machine prod-textstats" in capsys.readouterr().err


def test_cli_deploy_refuses_invalid_definitions(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    definition = load(ECHO)
    del definition["States"]["Echo"]["Retry"]
    path = tmp_path / "echo.asl.json"
    path.write_text(json.dumps(definition))
    assert cli(["statemachines", "deploy", str(path), "--role-arn", ROLE, "--function-arn-prefix", "arn:x:"]) == 1
    err = capsys.readouterr().err
    assert f"{path}: Echo: Task has no Retry" in err and "not deploying" in err


def test_cli_deploy_refuses_a_malformed_substitution(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli(["statemachines", "deploy", str(ECHO), "--role-arn", ROLE, "--substitution", "NotifyFunctionArn"]) == 1
    assert capsys.readouterr().err == "error: --substitution expects NAME=VALUE, got 'NotifyFunctionArn'\n"


def test_cli_deploy_with_nothing_to_deploy(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STREAMER_STATEMACHINES_DIR", str(tmp_path))  # empty; the installed plugins ship none
    assert cli(["statemachines", "deploy"]) == 1
    assert capsys.readouterr().err == "error: no state machine definitions found\n"


def test_cli_reads_a_project_directory(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "statemachines").mkdir()
    (tmp_path / "statemachines" / "echo.asl.json").write_text(JSONATA_ECHO.read_text())
    assert cli(["statemachines", "validate", "--project-dir", str(tmp_path)]) == 0
    assert capsys.readouterr().out == "1 state machine definition(s) OK\n"  # the plugins ship none
    with mock_aws():
        args = ["--project-dir", str(tmp_path), "--region", "eu-west-1", "--role-arn", ROLE]
        assert cli(["statemachines", "deploy", *args, "--function-arn-prefix", "arn:aws:lambda:eu-west-1:1:function:"]) == 0
        assert capsys.readouterr().out.startswith("created streamer-echo arn:aws:states:eu-west-1:")


def test_cli_says_what_is_missing_in_a_project_directory(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "nope"
    assert cli(["statemachines", "validate", "--project-dir", str(missing)]) == 1
    assert capsys.readouterr().err == f"error: project directory {missing} does not exist\n"
    assert cli(["statemachines", "deploy", "--project-dir", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"error: no statemachines/ in project directory {tmp_path}") and "--project-dir" in err


def test_cli_deploy_to_an_endpoint_that_is_down(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")  # one try: the point is the message, not botocore's retries
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    with socket.socket() as s:  # a port that was free a moment ago: nothing listens there
        s.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{s.getsockname()[1]}"
    args = [str(ECHO), "--endpoint-url", url, "--region", "us-east-1", "--function-arn-prefix", "arn:x:"]
    assert cli(["statemachines", "deploy", *args]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: EndpointConnectionError: ") and url in err


def test_problem_is_a_named_triple() -> None:
    p = Problem("f.asl.json", "S", "why")
    assert tuple(p) == ("f.asl.json", "S", "why") and str(p) == "f.asl.json: S: why"


def test_a_broken_plugin_set_is_one_problem_not_one_per_task() -> None:
    class Clash:
        @streamer.hookimpl
        def streamer_steps(self) -> list[Step]:
            return [Step(name="echo", func=lambda d, c: {})]

    pm = create_plugin_manager(autoload=True)
    pm.register(Clash(), name="clash")
    problems = validate([ECHO], registry=Registry(pm))
    assert [(p.state, p.reason.split(":")[0]) for p in problems] == [("-", "cannot check step names")]
    assert "'clash'" in problems[0].reason and "'echo'" in problems[0].reason
