"""Every size, length and naming limit of the platform, defined once (each with the AWS document behind it).

Modules import these names; a literal such as ``128 * 1024`` or ``1000`` for one of these concepts appears
nowhere else in the package (``tests/unit/test_architecture.py`` checks the obvious ones).
"""

from __future__ import annotations

__all__ = [
    "ENTRYPOINT_GROUP",
    "MAX_CONNECTION_SECONDS",
    "MAX_ERROR_MESSAGE_CHARS",
    "MAX_EXECUTION_INPUT_BYTES",
    "MAX_EXECUTION_NAME",
    "MAX_MESSAGE_BYTES",
    "MAX_STEP_OUTPUT_BYTES",
    "PROGRESS_AUDIENCE_SECONDS",
    "STEP_NAME_PATTERN",
    "SUBPROTOCOL",
    "WORKFLOW_NAME_PATTERN",
    "clamp_percent",
]

#: The WebSocket subprotocol of wire protocol v1 (``docs/protocol.md``).
SUBPROTOCOL = "streamer.v1"

#: The entry-point group plugins register under (``[project.entry-points."streamer.plugins"]``).
ENTRYPOINT_GROUP = "streamer.plugins"

#: API Gateway WebSocket frame limit: 128 KiB per message (32 KiB per frame fragment)
#: (https://docs.aws.amazon.com/apigateway/latest/developerguide/limits.html).
MAX_MESSAGE_BYTES = 128 * 1024

#: API Gateway closes every WebSocket connection after 2 hours (same page).
MAX_CONNECTION_SECONDS = 2 * 60 * 60

#: Step Functions' payload limit for an execution input and a state's output: 256 KiB
#: (https://docs.aws.amazon.com/step-functions/latest/dg/limits-overview.html).
MAX_EXECUTION_INPUT_BYTES = 256 * 1024
MAX_STEP_OUTPUT_BYTES = MAX_EXECUTION_INPUT_BYTES

#: Execution names: 1 to 80 characters from [A-Za-z0-9_-]
#: (https://docs.aws.amazon.com/step-functions/latest/apireference/API_StartExecution.html).
MAX_EXECUTION_NAME = 80

#: A message a step writes (progress text, a StepFailedError's message) is cut to this many characters.
MAX_ERROR_MESSAGE_CHARS = 1000

#: Step names (``Step.name``) and workflow names (the state machine is ``<prefix><workflow>``, so a workflow
#: name obeys the execution-name alphabet).
#: How long one step invocation's progress events reuse the user's connection set they read (one DynamoDB
#: ``Query`` for a burst of events instead of one per event). A connection opened meanwhile gets the step's
#: events from the next read on (at most this much later); ``resume`` returns what it missed.
PROGRESS_AUDIENCE_SECONDS = 1.0

STEP_NAME_PATTERN = r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,79}$"
WORKFLOW_NAME_PATTERN = r"^[A-Za-z0-9_-]{1,80}$"


def clamp_percent(value: float) -> int:
    """A progress percentage: rounded, then clamped to 0..100."""
    return max(0, min(100, round(value)))
