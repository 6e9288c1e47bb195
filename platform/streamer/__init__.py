"""streamer: long-running requests over WebSockets on AWS.

What a plugin author needs is re-exported here (see ``docs/plugins.md``)::

    import streamer

    @streamer.hookimpl
    def streamer_steps() -> list[streamer.Step]: ...
"""

from streamer.errors import RetryableStepError, StepFailedError
from streamer.hookspecs import hookimpl
from streamer.step import Step, StepContext, Workflow

__version__ = "0.1.0"

__all__ = [
    "RetryableStepError",
    "Step",
    "StepContext",
    "StepFailedError",
    "Workflow",
    "__version__",
    "hookimpl",
]
