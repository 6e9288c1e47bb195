"""pytest plugin for streamer plugin authors (registered through the ``pytest11`` entry point).

Fixtures:

``streamer_plugin_manager``
    A fresh ``pluggy.PluginManager`` with the installed plugins (none if
    ``STREAMER_DISABLE_PLUGIN_AUTOLOAD=1``); register throwaway plugins on it.
``streamer_steps``
    A :class:`streamer.testing.StepHarness` on that manager: ``streamer_steps.run("echo", {...})``.
``streamer_workflows``
    A started :class:`streamer.testing.LocalWorkflows` on that manager: runs whole state machines in moto
    (``streamer_workflows.run("echo", {...})``). moto is imported only when this fixture is used.

This module imports nothing heavy at import time: pytest loads it in every session of every project that
has streamer installed.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

from streamer.config import LOCAL_REGION

if TYPE_CHECKING:
    import pluggy

    from streamer.testing import LocalWorkflows, StepHarness


@pytest.fixture
def streamer_plugin_manager() -> pluggy.PluginManager:
    from streamer.plugins import create_plugin_manager

    return create_plugin_manager()


@pytest.fixture
def streamer_steps(streamer_plugin_manager: pluggy.PluginManager) -> StepHarness:
    from streamer.testing import StepHarness

    return StepHarness(streamer_plugin_manager)


@pytest.fixture
def streamer_workflows(
    streamer_plugin_manager: pluggy.PluginManager, monkeypatch: pytest.MonkeyPatch
) -> Iterator[LocalWorkflows]:
    from streamer.testing import LocalWorkflows

    # moto needs credentials and a region to exist, never real ones.
    for key, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SESSION_TOKEN": "testing",
        "AWS_DEFAULT_REGION": LOCAL_REGION,
    }.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    with LocalWorkflows(streamer_plugin_manager) as local:
        yield local
