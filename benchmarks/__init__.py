"""streamer benchmarks: each compares against a baseline measured in the same run and prints ratios."""

from __future__ import annotations

import sys
from typing import Any


def runner() -> Any:
    """The running ``python -m benchmarks`` module (its ``RESULTS`` collects the figures), else an import of it.

    A benchmark living in another module reports through this (``runner().report``): under ``python -m`` the
    runner is ``__main__``, and importing ``benchmarks.__main__`` would make a second copy with its own
    ``RESULTS``."""
    main = sys.modules.get("__main__")
    if main is not None and hasattr(main, "report") and hasattr(main, "RESULTS"):
        return main
    import benchmarks.__main__ as imported

    return imported
