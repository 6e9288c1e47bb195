"""Word statistics, as plain functions (the steps in ``streamer_textstats`` wrap them).

Definition (also in the README, so any client can check an answer):

* a **word** is a maximal run of characters that are Unicode letters (general category ``L*``), numbers
  (``N*``) or the ASCII apostrophe ``'``; anything else separates words;
* words are compared after ``str.casefold()`` (``"Straße"`` and ``"STRASSE"`` are one word);
* ``words`` is the number of words, ``unique`` the number of distinct ones, ``top`` the ``top`` most
  frequent as ``[word, count]`` pairs sorted by count descending, then by word (code point order).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping

__all__ = [
    "CHUNK_CHARS",
    "WORD_PATTERN",
    "count_words",
    "is_word_char",
    "merge_counts",
    "split_text",
    "top_words",
    "words",
]

#: ``[^\W_]`` is exactly "letter or number" for Python's ``re`` (str.isalpha() | str.isnumeric(), i.e.
#: general categories L* and N*); a test checks that against ``unicodedata`` for every code point.
WORD_PATTERN = r"(?:[^\W_]|')+"
_WORD = re.compile(WORD_PATTERN)
_WORD_CHAR = re.compile(r"[^\W_]|'")

#: Target chunk size in characters. Chunks stay far below Step Functions' 256 KiB per state, and a chunk's
#: counts are about as big as the chunk.
CHUNK_CHARS = 16 * 1024


def is_word_char(ch: str) -> bool:
    return _WORD_CHAR.match(ch) is not None


def words(text: str) -> Iterator[str]:
    """The case-folded words of ``text``, in order."""
    for m in _WORD.finditer(text):
        yield m.group().casefold()


def count_words(text: str) -> dict[str, int]:
    return dict(Counter(words(text)))


def split_text(text: str, chunk_chars: int = CHUNK_CHARS) -> list[str]:
    """Cut ``text`` into chunks of about ``chunk_chars`` characters, never inside a word.

    Concatenating the chunks gives ``text`` back. A cut goes at the last position before the target where
    a word does not continue across it; a single word longer than ``chunk_chars`` makes a longer chunk.
    """
    if chunk_chars < 1:
        raise ValueError("chunk_chars must be >= 1")
    chunks: list[str] = []
    start, n = 0, len(text)
    while start < n:
        end = min(start + chunk_chars, n)
        if end < n:
            cut = end
            while cut > start and is_word_char(text[cut - 1]) and is_word_char(text[cut]):
                cut -= 1
            if cut == start:  # one word fills the whole window: extend to its end
                m = _WORD.match(text, end - 1)
                cut = m.end() if m else end
            end = cut
        chunks.append(text[start:end])
        start = end
    return chunks


def merge_counts(counts: Iterable[Mapping[str, int]]) -> Counter[str]:
    total: Counter[str] = Counter()
    for c in counts:
        total.update(c)
    return total


def top_words(counts: Mapping[str, int], top: int) -> list[tuple[str, int]]:
    """The ``top`` most frequent words, by count descending then word."""
    return sorted(counts.items(), key=lambda wc: (-wc[1], wc[0]))[:top]
