"""The web console: executions, one execution's graph and history, connections, overview — in a browser.

Contract:

* :func:`create_app` returns an aiohttp application serving the console under ``/console/`` (its pages at
  ``/console/``, the JSON API at ``/console/api/…``, the static files and the vendored libraries at
  ``/console/static/…``). ``streamer local`` mounts it on the WebSocket endpoint's own port; ``streamer console``
  serves it alone against a deployed stack (``streamer.cli.console``).
* Every answer comes from ``streamer.observe`` (the same functions the terminal's ``streamer executions`` calls)
  and is ``model.model_dump(mode="json")`` of its result; live updates (Server-Sent Events) re-read the same
  sources, they never keep a parallel record.
* Security: without a token the console answers only requests whose ``Host`` is a loopback name (a page on
  another site cannot reach it by DNS rebinding); with a token every request must carry it (``Authorization:
  Bearer``, the ``streamer_console`` cookie, or ``?token=`` once, which sets the cookie), else 401. Actions
  (``POST``) also require the ``X-Streamer-Console`` header, which a cross-site form cannot send.
"""

from __future__ import annotations

from streamer.console.app import CONSOLE_PREFIX, TOKEN_ENV, ConsoleConfig, create_app, mount, token_required

__all__ = ["CONSOLE_PREFIX", "TOKEN_ENV", "ConsoleConfig", "create_app", "mount", "token_required"]
