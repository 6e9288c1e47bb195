"""Exceptions raised by streamer: one root, every class the package raises under it.

The tree (classes defined outside this module name their module)::

    StreamerError
    ├── ProtocolError                a client message or request is refused; carries a wire ErrorCode
    ├── WebSocketDisconnectedError   the connection is gone (API Gateway 410 GoneException)
    ├── SendError                    a message could not be delivered after botocore's retries
    ├── StoreError                   persistence failed in a way the caller cannot fix
    │   ├── TerminalAlreadyError     the request already ended: a second terminal event is not written
    │   └── UnprocessedWriteError    (streamer.aws.batch) a batch write left the item unprocessed (throttled)
    ├── WorkflowNotDeployedError     (streamer.aws.executions) StartExecution found no state machine
    ├── ExecutionNameTakenError      (streamer.aws.executions) the execution name is another incarnation's
    ├── PluginError                  the plugin set is broken (duplicate step, failed import, missing hook)
    │   ├── UnknownStepError         no installed plugin declares the step (also a LookupError)
    │   └── UnknownWorkflowError     no installed plugin declares the workflow (also a LookupError)
    ├── StepError                    raised by a step (plugin code)
    │   ├── RetryableStepError       transient: the state machine's Retry absorbs it
    │   └── StepFailedError          permanent: ends the request FAILED with STEP_FAILED
    ├── AuthError                    (streamer.auth) a refused handshake: 401
    │   └── ForbiddenError           (streamer.auth) authenticated but not allowed: 403
    ├── StreamerClientError          (streamer.client) the server answered a client's message with an error frame
    ├── InjectedFault                (streamer.faults) a failure injected by a test (never raised otherwise)
    ├── ProjectFilesError            (streamer.deploy.resources) the template or state machines cannot be found
    ├── ArtifactError                (streamer.deploy.build) the Lambda artifact cannot be built or is broken
    ├── StartupError                 (streamer.local) ``streamer local`` cannot start (a port taken, a child died)
    ├── NotFoundError                (streamer.observe.api) no request or execution with that id
    ├── AmbiguousError               (streamer.observe.api) a request id used by several users: pass --user
    ├── CursorError                  (streamer.observe.api) a list page cursor that does not decode
    ├── SourceError                  (streamer.observe.sources) the deployment cannot be reached or read
    └── NoLocalStackError            (streamer.observe.localstate) no running ``streamer local`` recorded

``tests/unit/test_architecture.py`` checks that every exception class in the package derives from the root and
appears here.
"""

from __future__ import annotations

import enum
from typing import Any

__all__ = [
    "ErrorCode",
    "PluginError",
    "ProtocolError",
    "RetryableStepError",
    "SendError",
    "StepError",
    "StepFailedError",
    "StoreError",
    "StreamerError",
    "WebSocketDisconnectedError",
]


class ErrorCode(enum.StrEnum):
    """The closed set of error codes on the wire (``docs/protocol.md``); re-exported by ``streamer.protocol``."""

    VALIDATION_ERROR = "VALIDATION_ERROR"
    UNKNOWN_ACTION = "UNKNOWN_ACTION"
    UNKNOWN_WORKFLOW = "UNKNOWN_WORKFLOW"
    NOT_FOUND = "NOT_FOUND"
    CONFLICT = "CONFLICT"
    FORBIDDEN = "FORBIDDEN"
    PAYLOAD_TOO_LARGE = "PAYLOAD_TOO_LARGE"
    RATE_LIMITED = "RATE_LIMITED"
    STEP_FAILED = "STEP_FAILED"
    TIMEOUT = "TIMEOUT"
    CANCELLED = "CANCELLED"
    INTERNAL_ERROR = "INTERNAL_ERROR"


class StreamerError(Exception):
    """Root of every streamer exception."""


class ProtocolError(StreamerError):
    """A message or request refused with a documented wire error code."""

    def __init__(self, code: ErrorCode, message: str, details: Any = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.details = details

    def to_wire(self) -> dict[str, Any]:
        """The error frame: ``{"type": "error", "code", "message", "details"?}``."""
        body: dict[str, Any] = {"type": "error", "code": self.code.value, "message": self.message}
        if self.details is not None:
            body["details"] = self.details
        return body


class WebSocketDisconnectedError(StreamerError):
    """The connection no longer exists (API Gateway answered 410 GoneException)."""

    def __init__(self, connection_id: str) -> None:
        super().__init__(f"connection {connection_id} is gone")
        self.connection_id = connection_id


class SendError(StreamerError):
    """A message could not be delivered to a connection after bounded retries."""

    def __init__(self, connection_id: str, reason: str) -> None:
        super().__init__(f"could not send to {connection_id}: {reason}")
        self.connection_id = connection_id
        self.reason = reason


class StoreError(StreamerError):
    """Persistence failed (e.g. too much contention on a request's event log)."""


class TerminalAlreadyError(StoreError):
    """The request already ended: a second terminal event is not written."""


class PluginError(StreamerError):
    """The installed plugins cannot be used as they are."""


class UnknownStepError(PluginError, LookupError):
    """No installed plugin declares this step."""

    def __init__(self, name: str) -> None:
        super().__init__(f"no installed plugin declares a step named {name!r}")
        self.name = name


class UnknownWorkflowError(PluginError, LookupError):
    """No installed plugin declares this workflow."""

    def __init__(self, name: str) -> None:
        super().__init__(f"no installed plugin declares a workflow named {name!r}")
        self.name = name


class StepError(StreamerError):
    """Base class of the errors a step raises on purpose. The message reaches the client."""


class RetryableStepError(StepError):
    """A transient failure: the state machine retries the step (Retry on ``RetryableStepError``)."""


class StepFailedError(StepError):
    """A permanent failure: the request ends FAILED with code ``STEP_FAILED`` and this message."""
