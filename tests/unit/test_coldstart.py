"""Cold start: a handler imports only what it uses (issue 11; docs/performance.md, "Cold starts").

Each handler is imported in a fresh interpreter: modules another test imported would hide a regression.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

HANDLERS = ("connect", "disconnect", "router", "stream_router", "notify", "step_runner", "execution_events")
#: Only ``$connect`` verifies tokens; PyJWT imports ``cryptography`` whenever it is installed.
TOKEN_LIBRARIES = ("jwt", "cryptography")


def _loaded(module: str) -> set[str]:
    code = f"import json, sys; import {module}; print(json.dumps(sorted({{m.split('.')[0] for m in sys.modules}})))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    return set(json.loads(out.stdout))


@pytest.mark.parametrize("handler", HANDLERS)
def test_only_connect_imports_the_token_libraries(handler: str) -> None:
    loaded = _loaded(f"streamer.handlers.{handler}")
    heavy = sorted(m for m in TOKEN_LIBRARIES if m in loaded)
    if handler == "connect":
        assert "jwt" in heavy
    else:
        assert heavy == [], f"{handler} imports {heavy} at cold start"


def test_no_handler_builds_the_xray_sdk_when_tracing_is_off() -> None:
    # Outside Lambda Powertools' Tracer is off; the handlers then do not even build one (it imports X-Ray).
    for handler in HANDLERS:
        assert "aws_xray_sdk" not in _loaded(f"streamer.handlers.{handler}"), handler


def test_redaction_needs_no_token_library() -> None:
    loaded = _loaded("streamer.redact")
    assert not loaded & set(TOKEN_LIBRARIES)
    from streamer import auth, redact

    assert auth.RedactTokensFilter is redact.RedactTokensFilter  # still importable from where it was
    assert auth.redact_tokens is redact.redact_tokens
