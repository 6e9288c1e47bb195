"""streamer plugin: the ``greet`` workflow and its one step, ``greeter.greet``."""

from __future__ import annotations

import time
from pathlib import Path

from pydantic import BaseModel, Field

import streamer

DEFINITION = Path(__file__).with_name("greet.asl.json")


class GreetInput(BaseModel):
    name: str = Field(min_length=1, max_length=100)
    times: int = Field(default=1, ge=1, le=10)


class GreetOutput(BaseModel):
    greeting: str


def greet(data: GreetInput, context: streamer.StepContext) -> GreetOutput:
    if data.name == "nobody":
        raise streamer.StepFailedError("there is nobody to greet")  # the client sees this message
    parts = []
    for i in range(1, data.times + 1):
        time.sleep(0.01)  # real work goes here
        parts.append(f"Hello, {data.name}!")
        context.progress(100 * i / data.times, f"greeting {i} of {data.times}")
    context.logger.info("greeted %d times", data.times)  # never log the input itself
    return GreetOutput(greeting=" ".join(parts))


@streamer.hookimpl
def streamer_steps() -> list[streamer.Step]:
    return [
        streamer.Step(
            name="greeter.greet",
            func=greet,
            input_model=GreetInput,
            output_model=GreetOutput,
            description="Greets someone, a few times.",
        )
    ]


@streamer.hookimpl
def streamer_workflows() -> list[streamer.Workflow]:
    return [
        streamer.Workflow(
            name="greet",
            description="Greets someone.",
            payload_model=GreetInput,
            definition=DEFINITION,
        )
    ]
