"""streamer.observe.metricsfile: the metrics file parsed once, then followed as the handlers append and rotate it."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from streamer import metrics
from streamer.observe import metricsfile
from streamer.observe.metricsfile import KEEP_SECONDS, MetricsTail


def submitted(workflow: str, *, at: float | None = None) -> str:
    """One EMF line as the handlers write it: RequestsSubmitted=1 for ``workflow`` (at ``at``, default now)."""
    (doc,) = metrics.emf_documents([metrics.Point(metrics.REQUESTS_SUBMITTED, 1.0, (("workflow", workflow),))])
    if at is not None:
        doc["_aws"]["Timestamp"] = int(at * 1000)
    return json.dumps(doc)


def count(series: list[metrics.Series]) -> dict[str, int]:
    out: dict[str, int] = {}
    for s in series:
        if s.name == "RequestsSubmitted":
            wf = dict(s.dimensions)["workflow"]
            out[wf] = out.get(wf, 0) + int(sum(s.values))
    return out


def test_it_follows_appended_lines_and_waits_for_a_line_being_written(tmp_path: Path) -> None:
    path = tmp_path / "local.metrics.jsonl"
    tail = MetricsTail(path)
    assert tail.read() == []  # no file yet: nothing, not an error
    writer = metrics.JsonLinesFile(path)
    writer.append(submitted("echo"))
    assert count(tail.read()) == {"echo": 1}
    writer.append(submitted("echo"))
    writer.append("not json")  # skipped, as read_local skips it
    half = submitted("textstats")
    with path.open("a") as f:
        f.write(half[:20])  # a line still being written
    assert count(tail.read()) == {"echo": 2}
    with path.open("a") as f:
        f.write(half[20:] + "\n")
    assert count(tail.read()) == {"echo": 2, "textstats": 1}
    assert count(tail.read()) == count(metrics.read_local(path))  # the same as parsing it all again


def test_a_rotated_or_truncated_file_is_read_again_with_its_rotated_part(tmp_path: Path) -> None:
    path = tmp_path / "local.metrics.jsonl"
    line = submitted("echo")
    writer = metrics.JsonLinesFile(path, max_bytes=len(line) * 3 + 10)  # rotates on the fourth line
    tail = MetricsTail(path)
    for _ in range(3):
        writer.append(line)
    assert count(tail.read()) == {"echo": 3}
    writer.append(line)  # past max_bytes: renamed to .1
    assert not path.exists() and path.with_name(path.name + ".1").exists()
    assert count(tail.read()) == {"echo": 4}
    writer.append(submitted("textstats"))  # a new file (another inode)
    assert count(tail.read()) == {"echo": 4, "textstats": 1}
    path.write_text(submitted("other") + "\n")  # truncated and rewritten: shorter than what was read
    assert count(tail.read()) == {"echo": 4, "other": 1}


def test_a_window_and_the_horizon(tmp_path: Path) -> None:
    path = tmp_path / "local.metrics.jsonl"
    now = time.time()
    path.write_text(
        "\n".join(
            [submitted("ancient", at=now - KEEP_SECONDS - 60), submitted("hour", at=now - 3000), submitted("now")]
        )
        + "\n"
    )
    tail = MetricsTail(path)
    assert count(tail.read()) == {"hour": 1, "now": 1}  # past the longest window: dropped for good
    assert count(tail.read(since=now - 60)) == {"now": 1}
    assert count(tail.read(until=now - 60)) == {"hour": 1}
    # The module-level reader shares one tail per path.
    assert count(metricsfile.read(path, since=now - 3600)) == {"hour": 1, "now": 1}
    os.remove(path)
    assert metricsfile.read(path) == []
