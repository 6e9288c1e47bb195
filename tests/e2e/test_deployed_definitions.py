"""What runs is what was validated: the state machines deployed (locally, and by the template) are the
files `streamer statemachines validate` checks, after SAM-style substitution and nothing else."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from streamer.deploy import statemachines
from streamer.deploy.template import load_template, state_machines

ROOT = Path(__file__).resolve().parents[2]


def test_template_state_machines_are_the_validated_files() -> None:
    validated = statemachines.discover()
    assert statemachines.validate(list(validated.values())) == []
    specs = state_machines(load_template())
    assert {s.workflow: s.definition_path.resolve() for s in specs.values()} == {
        w: p.resolve() for w, p in validated.items()
    }
    for spec in specs.values():
        subs = {name: f"arn:aws:lambda:eu-west-1:111122223333:function:{fn}" for name, fn in spec.substitutions.items()}
        rendered = statemachines.render(spec.definition_path, subs)
        assert "${" not in rendered
        assert statemachines.placeholders(spec.definition_path.read_text()) == set(spec.substitutions)


def test_local_stack_runs_exactly_the_rendered_files(local_stack: Any) -> None:
    sfn = local_stack.client("stepfunctions")
    for workflow, path in statemachines.discover().items():
        arn = f"arn:aws:states:us-east-1:123456789012:stateMachine:streamer-{workflow}"
        deployed = json.loads(sfn.describe_state_machine(stateMachineArn=arn)["definition"])
        subs = statemachines.function_arn_substitutions(
            "arn:aws:lambda:us-east-1:123456789012:function:", statemachines.placeholders(path.read_text())
        )
        assert deployed == json.loads(statemachines.render(path, subs)), workflow
