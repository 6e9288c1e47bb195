"""A slow, obviously correct implementation of the textstats definition, for checking answers.

It scans character by character with ``unicodedata`` categories instead of the regular expression the
steps use, and sorts with two stable sorts instead of one key; a client (or a test) can compare a
``textstats`` result with ``reference_stats(text, top)``.
"""

from __future__ import annotations

import unicodedata
from typing import Any

__all__ = ["is_word_character", "reference_stats"]


def is_word_character(ch: str) -> bool:
    """A letter (``L*``), a number (``N*``) or the apostrophe ``'``."""
    return ch == "'" or unicodedata.category(ch)[0] in ("L", "N")


def reference_stats(text: str, top: int = 10) -> dict[str, Any]:
    counts: dict[str, int] = {}
    current: list[str] = []

    def end_word() -> None:
        if current:
            word = "".join(current).casefold()
            counts[word] = counts.get(word, 0) + 1
            current.clear()

    for ch in text:
        if is_word_character(ch):
            current.append(ch)
        else:
            end_word()
    end_word()
    ranked = sorted(counts.items(), key=lambda item: item[0])
    ranked.sort(key=lambda item: item[1], reverse=True)  # stable: equal counts stay alphabetical
    return {
        "words": sum(counts.values()),
        "unique": len(counts),
        "top": [[word, n] for word, n in ranked[:top]],
    }
