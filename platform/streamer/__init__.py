"""streamer: long-running requests over WebSockets on AWS.

What a plugin author needs is re-exported here (see ``docs/plugins.md``)::

    import streamer

    @streamer.hookimpl
    def streamer_steps() -> list[streamer.Step]: ...

The names are loaded on first use (PEP 562 ``__getattr__``): a Lambda handler that imports one of the package's
modules (``streamer.handlers.connect`` and its ``streamer.auth``, ``streamer.service``, ...) does not pay for the
plugin contract (pluggy, the step and workflow models) at its cold start unless it uses it.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
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

#: Each re-exported name and the module that defines it.
_EXPORTS = {
    "RetryableStepError": "streamer.errors",
    "StepFailedError": "streamer.errors",
    "hookimpl": "streamer.hookspecs",
    "Step": "streamer.step",
    "StepContext": "streamer.step",
    "Workflow": "streamer.step",
}


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'streamer' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # found by the module's dict from now on; __getattr__ is not called again
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
