"""streamer plugin ``echo``: the workflow ``echo``, one step ``echo``.

The step reports ``steps`` progress events (each step takes ``delay_ms``) and returns the message. It can
be told to fail, for trying out the platform: ``fail_times: n`` raises a ``RetryableStepError`` on the
first ``n`` attempts (the state machine's ``Retry`` absorbs up to 3), ``fail: true`` raises a
``StepFailedError`` (the request ends ``FAILED`` with ``STEP_FAILED``).
"""

from __future__ import annotations

import time

from pydantic import BaseModel, ConfigDict, Field

import streamer
from streamer import RetryableStepError, Step, StepContext, StepFailedError, Workflow

__all__ = ["EchoOutput", "EchoPayload", "echo", "streamer_steps", "streamer_workflows"]
__version__ = "0.1.0"


class EchoPayload(BaseModel):
    """What a client submits to ``echo`` (and the step's input)."""

    model_config = ConfigDict(extra="forbid")

    message: str
    #: How many progress events to report.
    steps: int = Field(default=3, ge=1, le=100)
    #: How long each step takes, in milliseconds.
    delay_ms: int = Field(default=0, ge=0, le=10_000)
    #: Fail with RetryableStepError on the first ``fail_times`` attempts.
    fail_times: int = Field(default=0, ge=0)
    #: Fail for good with StepFailedError.
    fail: bool = False


class EchoOutput(BaseModel):
    message: str


def echo(payload: EchoPayload, context: StepContext) -> EchoOutput:
    """Report ``steps`` progress events (percent = round(100 * i / steps)), then return the message."""
    if payload.fail:
        raise StepFailedError("echo failed because the payload asked it to (fail: true)")
    if context.attempt <= payload.fail_times:
        raise RetryableStepError(
            f"echo attempt {context.attempt} failed because the payload asked it to (fail_times: {payload.fail_times})"
        )
    for i in range(1, payload.steps + 1):
        if payload.delay_ms:
            time.sleep(payload.delay_ms / 1000)
        context.progress(round(100 * i / payload.steps), f"step {i} of {payload.steps}")
    return EchoOutput(message=payload.message)


@streamer.hookimpl
def streamer_steps() -> list[Step]:
    return [
        Step(
            name="echo",
            func=echo,
            input_model=EchoPayload,
            output_model=EchoOutput,
            description="Reports `steps` progress events, then returns the message.",
        )
    ]


@streamer.hookimpl
def streamer_workflows() -> list[Workflow]:
    return [
        Workflow(
            name="echo",
            description="Echoes a message back after reporting progress (can be told to fail).",
            payload_model=EchoPayload,
        )
    ]
