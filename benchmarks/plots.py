"""PNG plots of a goals run (matplotlib, headless ``Agg``): latency and memory against connections and against
concurrent executions, ours next to the bare baseline of the same run. Points that were not measured (a
scenario that failed, replies lost) are left out of a line rather than drawn as zero.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


def _line(ax: Any, xs: list[int], ys: list[Any], **kw: Any) -> None:
    pts = [(x, y) for x, y in zip(xs, ys, strict=True) if y is not None]
    if pts:
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", **kw)


def write_plots(result: dict[str, Any], out_dir: Path) -> list[Path]:
    """``connections.png`` and ``executions.png`` in ``out_dir``; returns the paths written."""
    import math

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter

    out_dir.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    charts = (
        ("connections", "connections", "connections held", "ping latency while held (open loop)"),
        ("executions", "concurrent", "concurrent echo executions", "submit → result latency"),
    )
    for key, xkey, xlabel, title in charts:
        rows = result.get("series", {}).get(key) or []
        if not rows:
            continue
        xs = [int(r[xkey]) for r in rows]
        fig, (lat, mem) = plt.subplots(1, 2, figsize=(11, 4.8))
        bare = "bare websockets" if key == "connections" else "bare engine"
        for who, style in (("ours", "-"), ("bare", "--")):
            label = "streamer local" if who == "ours" else bare
            _line(lat, xs, [r[who].get("p50_ms") for r in rows], linestyle=style, label=f"{label} p50")
            _line(lat, xs, [r[who].get("p99_ms") for r in rows], linestyle=style, label=f"{label} p99")
            _line(mem, xs, [r[who].get("rss_mib") for r in rows], linestyle=style, label=label)
        for ax in (lat, mem):
            ax.set_xscale("log")
            ax.set_xlabel(xlabel)
            ax.grid(True, which="both", alpha=0.3)
            # under the axes: inside, a legend hid the line it sat on
            ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=2, frameon=False)
        lat.set_yscale("log")
        lat.margins(y=0.15)
        low, high = lat.get_ylim()
        narrow = high / low < 100  # under two decades: label 2, 3 and 5 between the powers of ten as well

        def plain(v: float, _pos: int, minor: bool = False, narrow: bool = narrow) -> str:
            mantissa = round(v / 10 ** math.floor(math.log10(v)), 6) if v > 0 else 0
            return f"{v:g}" if not minor or (narrow and mantissa in (2, 3, 5)) else ""

        lat.yaxis.set_major_formatter(FuncFormatter(plain))
        lat.yaxis.set_minor_formatter(FuncFormatter(lambda v, pos: plain(v, pos, minor=True)))
        lat.set_ylabel("ms")
        lat.set_title(title)
        mem.set_ylabel("peak RSS of all its processes (MiB)")
        mem.set_title("memory")
        fig.suptitle(f"{result.get('mode', '')} run, {result.get('started', '')}", fontsize=9)
        fig.tight_layout()
        path = out_dir / f"{key}.png"
        fig.savefig(path, dpi=100)
        plt.close(fig)
        written.append(path)
    return written
