"""Cold start: a handler imports only what it uses (issue 11; docs/performance.md, "Cold starts").

Each handler is imported in a fresh interpreter: modules another test imported would hide a regression.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

HANDLERS = ("connect", "disconnect", "router", "stream_router", "notify", "step_runner", "execution_events")
#: Only ``$connect`` verifies tokens; it loads ``cryptography`` (through PyJWT) only for an asymmetric allow-list.
TOKEN_LIBRARIES = ("jwt", "cryptography")


def _fresh(code: str, **env: str) -> str:
    """Run ``code`` in a fresh interpreter with ``env`` added; its stdout."""
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env={**os.environ, **env}
    )
    assert out.returncode == 0, out.stderr
    return out.stdout


def _loaded_modules(code: str) -> set[str]:
    """Every module a fresh interpreter holds after running ``code``."""
    return set(json.loads(_fresh(f"import json, sys; {code}; print(json.dumps(sorted(sys.modules)))")))


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


def test_connect_loads_cryptography_only_for_an_asymmetric_allow_list() -> None:
    """PyJWT imports ``cryptography`` (~85 ms) whenever it can; an HMAC-only ``$connect`` does without it."""
    check = "import sys, streamer.handlers.connect; print('cryptography' in sys.modules)"
    assert _fresh(check).strip() == "False"  # the default allow-list: HS256
    assert _fresh(check, STREAMER_JWT_ALGORITHMS="HS256,HS512").strip() == "False"
    asymmetric = {"STREAMER_JWT_ALGORITHMS": "RS256", "STREAMER_JWT_JWKS_URL": "https://example.com/jwks.json"}
    assert _fresh(check, **asymmetric).strip() == "True"
    assert _fresh(check, STREAMER_JWT_JWKS_URL="https://example.com/jwks.json").strip() == "True"  # RS256


ASYMMETRIC_AFTER_HMAC = """
import sys, time
import streamer.handlers.connect
from streamer.auth import AuthConfig, Authenticator, mint_token
assert "cryptography" not in sys.modules
secret = "s" * 32
hs = Authenticator(AuthConfig(secret=secret))
assert hs.verify(mint_token(secret, "alice")).user_id == "alice"

# Later in the same process: an asymmetric allow-list. PyJWT is imported again, with cryptography.
rs = Authenticator(AuthConfig(algorithms=("RS256",), jwks_url="http://127.0.0.1:1/jwks.json"),
                   jwks_client=None)
import jwt
from cryptography.hazmat.primitives.asymmetric import rsa
key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
jwk = jwt.PyJWK(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key(), as_dict=True), algorithm="RS256")

class Keys:
    def get_signing_key(self, kid):
        assert kid == "k1"
        return jwk

rs._jwks_client = Keys()
now = int(time.time())
token = jwt.encode({"sub": "bob", "iat": now, "exp": now + 60}, key, algorithm="RS256", headers={"kid": "k1"})
assert rs.verify(token).user_id == "bob"
assert hs.verify(mint_token(secret, "carol")).user_id == "carol"  # the HMAC one still works
print("ok")
"""


def test_an_asymmetric_allow_list_after_an_hmac_only_import_gets_cryptography_back() -> None:
    assert _fresh(ASYMMETRIC_AFTER_HMAC).strip() == "ok"


def test_an_asymmetric_allow_list_without_cryptography_installed_is_a_configuration_error() -> None:
    code = (
        "import sys; sys.modules['cryptography'] = None  # as if not installed\n"
        "from streamer.auth import AuthConfig, Authenticator\n"
        "try:\n"
        "    Authenticator(AuthConfig(algorithms=('RS256',), jwks_url='https://example.com/jwks.json'))\n"
        "except ValueError as exc:\n"
        "    print(exc)\n"
    )
    assert _fresh(code).strip() == "asymmetric JWT algorithms need the 'cryptography' package"
