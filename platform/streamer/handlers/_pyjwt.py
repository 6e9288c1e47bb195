"""Imported first by the ``$connect`` handler: PyJWT without ``cryptography`` when the allow-list is HMAC-only.

PyJWT imports ``cryptography`` whenever it is installed, for RS*/PS*/ES*/EdDSA; HS* needs only the standard
library's ``hmac``. That import is ~85 ms of CPU, what put ``$connect``'s cold start over 1.2x a bare boto3
Lambda's (docs/performance.md, "Cold starts"), for nothing when every allowed algorithm is HMAC. So when the
environment's allow-list (``streamer.config.jwt_algorithms``: what ``AuthConfig.from_env`` reads) is
HMAC-only and neither PyJWT nor ``cryptography`` is imported yet, PyJWT is imported here with
``cryptography`` reading as not installed (``None`` in ``sys.modules``: ``ModuleNotFoundError``, which PyJWT
catches, leaving the asymmetric algorithms out). ``cryptography`` is importable again right after.

Only the handler module does this: a Lambda container's environment is fixed, and nothing else runs in it. A
process that later builds an ``Authenticator`` for an asymmetric allow-list (``streamer local``'s gateway
with a JWKS configured, a test) gets PyJWT re-imported with ``cryptography`` first
(``streamer.auth._with_cryptography``).
"""

from __future__ import annotations

import os
import sys

from streamer.config import jwt_algorithms

__all__: list[str] = []


def _import_pyjwt_without_cryptography() -> None:
    if "jwt" in sys.modules or "cryptography" in sys.modules:
        return
    if not all(alg.startswith("HS") for alg in jwt_algorithms(os.environ)):
        return
    sys.modules["cryptography"] = None  # type: ignore[assignment]
    try:
        import jwt  # noqa: F401
    finally:
        if "cryptography" in sys.modules and sys.modules["cryptography"] is None:
            del sys.modules["cryptography"]


_import_pyjwt_without_cryptography()
