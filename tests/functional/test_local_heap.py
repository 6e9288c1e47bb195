"""``streamer.local.heap``: the gateway process's collector set for latency after start-up.

Each check runs in a fresh interpreter: freezing the heap or changing the thresholds of the test process
would change every other test's garbage collection.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

from streamer.local.heap import GEN0_THRESHOLD, WARM_SERVICES


def _run(code: str, **env: str) -> dict[str, object]:
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "AWS_DEFAULT_REGION": "us-east-1", **env},
    )
    assert proc.returncode == 0, proc.stderr
    result: dict[str, object] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def test_settle_heap_freezes_what_start_up_built_and_raises_the_young_threshold() -> None:
    out = _run(
        """
        import gc, json
        before = gc.get_threshold()
        survivors = [[i] for i in range(20_000)]  # start-up's objects (lists: always tracked by the collector)
        from streamer.local.heap import settle_heap
        frozen = settle_heap()
        garbage = []
        garbage.append(garbage)  # a cycle made after: still collected
        del garbage
        print(json.dumps({"before": before, "after": gc.get_threshold(), "frozen": frozen,
                          "freeze_count": gc.get_freeze_count(), "collected_after": gc.collect()}))
        """
    )
    before = out["before"]
    assert isinstance(before, list) and before[0] < GEN0_THRESHOLD  # the interpreter's default (3.11: 700)
    assert out["after"] == [GEN0_THRESHOLD, *before[1:]]  # the older generations' thresholds kept
    assert out["frozen"] == out["freeze_count"]
    assert isinstance(out["frozen"], int) and out["frozen"] > 20_000
    assert out["collected_after"] == 1  # what is made after the freeze is collected as before


def test_warm_clients_loads_the_service_models_the_functions_clients_then_reuse() -> None:
    out = _run(
        """
        import json, boto3
        from streamer.local.heap import warm_clients
        warm_clients()
        loader = boto3.DEFAULT_SESSION._session.get_component("data_loader")
        cached = sorted({k[1] for k in loader._cache if k[0] == "load_service_model"})
        print(json.dumps({"cached": cached}))
        """
    )
    assert out["cached"] == sorted(WARM_SERVICES)


def test_warm_clients_skips_a_service_it_cannot_create() -> None:
    out = _run(
        """
        import json
        from streamer.local.heap import warm_clients
        warm_clients(("no-such-service", "dynamodb"))
        import boto3
        loader = boto3.DEFAULT_SESSION._session.get_component("data_loader")
        print(json.dumps({"cached": sorted({k[1] for k in loader._cache if k[0] == "load_service_model"})}))
        """
    )
    assert out["cached"] == ["dynamodb"]
