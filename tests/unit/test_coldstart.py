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


def _loaded_modules(code: str) -> set[str]:
    """Every module a fresh interpreter holds after running ``code``."""
    out = subprocess.run(
        [sys.executable, "-c", f"import json, sys; {code}; print(json.dumps(sorted(sys.modules)))"],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    return set(json.loads(out.stdout))


def _loaded(module: str) -> set[str]:
    """The top-level packages a fresh interpreter holds after importing ``module``."""
    return {m.split(".")[0] for m in _loaded_modules(f"import {module}")}


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


#: The plugin contract (pluggy and the step/workflow models), which ``import streamer`` re-exports.
PLUGIN_CONTRACT = ("pluggy", "streamer.hookspecs", "streamer.step")


@pytest.mark.parametrize("handler", HANDLERS)
def test_only_the_handlers_that_run_plugins_load_the_plugin_contract(handler: str) -> None:
    loaded = _loaded_modules(f"import streamer.handlers.{handler}")
    contract = sorted(m for m in PLUGIN_CONTRACT if m in loaded)
    if handler in ("router", "step_runner"):  # the router lists workflows, the step runner runs steps
        assert contract == sorted(PLUGIN_CONTRACT)
    else:
        assert contract == [], f"{handler} loads {contract} at cold start"


def test_the_package_still_re_exports_the_plugin_contract_on_first_use() -> None:
    loaded = _loaded_modules(
        "import streamer; assert 'streamer.step' not in sys.modules; "
        "from streamer import Step, StepContext, Workflow, hookimpl, RetryableStepError, StepFailedError; "
        "import streamer.step, streamer.hookspecs, streamer.errors; "
        "assert streamer.Step is streamer.step.Step and streamer.hookimpl is streamer.hookspecs.hookimpl; "
        "assert streamer.StepFailedError is streamer.errors.StepFailedError; "
        "assert set(streamer.__all__) <= set(dir(streamer))"
    )
    assert set(PLUGIN_CONTRACT) <= loaded


def test_an_unknown_name_is_still_an_attribute_error() -> None:
    import streamer

    with pytest.raises(AttributeError, match="no attribute 'Stepp'"):
        getattr(streamer, "Stepp")
