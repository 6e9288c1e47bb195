from streamer.testing import LocalWorkflows, StepHarness


def test_greet(streamer_steps: StepHarness) -> None:
    result = streamer_steps.run("greeter.greet", {"name": "Ada", "times": 2})
    assert result.output == {"greeting": "Hello, Ada! Hello, Ada!"}
    assert result.percents == [50, 100]


def test_greet_refuses_nobody(streamer_steps: StepHarness) -> None:
    result = streamer_steps.run("greeter.greet", {"name": "nobody"})
    assert result.error_type == "StepFailedError"
    assert str(result.error) == "there is nobody to greet"


def test_the_workflow(streamer_workflows: LocalWorkflows) -> None:
    run = streamer_workflows.run("greet", {"name": "Ada"})
    assert run.status == "SUCCEEDED"
    assert run.output == {"greeting": "Hello, Ada!"}
    assert run.client_status == "SUCCEEDED"


def test_the_workflow_fails_cleanly(streamer_workflows: LocalWorkflows) -> None:
    run = streamer_workflows.run("greet", {"name": "nobody"})
    assert run.status == "FAILED"
    assert run.client_error == ("STEP_FAILED", "there is nobody to greet")
