"""A workflow written in JSONata passes `streamer statemachines validate` and runs on the local engine.

The definition is ``docs/examples/jsonata/echo.asl.json`` (docs/plugins.md shows it): the echo workflow with
``QueryLanguage: JSONata``, ``Arguments`` and variables (``Assign``). It runs in moto's Step Functions
interpreter with the JSONata evaluator ``streamer local`` installs (``streamer.local.moto_server``), with the
real step runner and a recording notify function (:class:`streamer.testing.LocalWorkflows`).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from moto.stepfunctions.parser.asl.jsonata import jsonata as moto_jsonata

from streamer.deploy import statemachines
from streamer.local.moto_server import enable_jsonata
from streamer.plugins import Registry, create_plugin_manager
from streamer.testing import LocalWorkflows

DEFINITION = Path(__file__).resolve().parents[2] / "docs" / "examples" / "jsonata" / "echo.asl.json"


@pytest.fixture
def workflows(monkeypatch: pytest.MonkeyPatch) -> Iterator[LocalWorkflows]:
    # enable_jsonata() replaces moto's stub process-wide; monkeypatch puts the stub back afterwards.
    monkeypatch.setattr(moto_jsonata, "_eval_jsonata", moto_jsonata._eval_jsonata)
    assert enable_jsonata()
    pm = create_plugin_manager(autoload=True)
    assert statemachines.validate([DEFINITION], registry=Registry(pm)) == []
    with LocalWorkflows(pm) as w:
        w.deploy("echo", json.loads(statemachines.render(DEFINITION, w.substitutions)))
        yield w


def test_a_jsonata_workflow_succeeds(workflows: LocalWorkflows) -> None:
    run = workflows.run("echo", {"message": "in JSONata", "steps": 2})
    assert run.status == "SUCCEEDED", (run.error, run.cause)
    assert run.output == {"message": "in JSONata"}
    assert [p.percent for p in run.progress] == [50, 100]
    assert [n["kind"] for n in run.notifications] == ["result"]
    assert run.notifications[0]["request"]["request_id"] == run.request.request_id  # $request carried it
    assert run.client_status == "SUCCEEDED"


def test_a_jsonata_workflow_fails_cleanly(workflows: LocalWorkflows) -> None:
    run = workflows.run("echo", {"message": "x", "fail": True})
    assert run.status == "FAILED"
    assert run.error == "RequestFailed" and run.cause is not None and run.cause.startswith("StepFailedError: ")
    assert [n["kind"] for n in run.notifications] == ["failure"]
    assert run.client_error == ("STEP_FAILED", "echo failed because the payload asked it to (fail: true)")
