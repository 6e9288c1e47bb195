"""textstats: the definition of a word, splitting, counting, merging; checked against the reference."""

from __future__ import annotations

import itertools
import json
import random
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from streamer_textstats import MAX_COUNTS_BYTES
from streamer_textstats.reference import is_word_character, reference_stats
from streamer_textstats.text import CHUNK_CHARS, count_words, is_word_char, split_text, top_words, words

from streamer.testing import StepHarness

# Words from many scripts, with the cases the definition has to get right.
VOCABULARY = [
    "the", "The", "THE", "don't", "O'Brien", "rock'n'roll", "'quoted'", "naïve", "café", "Café",
    "straße", "STRASSE", "Strasse", "ẞ", "ΣΊΣΥΦΟΣ", "σίσυφος", "λόγος", "ΛΌΓΟΣ", "İstanbul", "istanbul",
    "москва", "Москва", "МОСКВА", "中文", "日本語", "한국어", "עברית", "العربية", "हिन्दी", "ไทย",  # noqa: RUF001
    "2024", "٣٤٥", "Ⅻ", "x²", "½", "ﬁle", "e\u0301te\u0301", "snake_case", "a_b_c", "ǅemal", "ǆ",
]
SEPARATORS = [" ", " ", " ", "\n", "\t", "\u00a0", ", ", ". ", "—", "!? ", "\u2019", "🙂", " - ", "_", "\u3000"]


def mixed_text(size_bytes: int, seed: int = 7) -> str:
    rng = random.Random(seed)
    parts: list[str] = []
    total = 0
    while total < size_bytes:
        word = rng.choice(VOCABULARY)
        if rng.random() < 0.05:
            word = "".join(rng.choice("abcdefghijklmnopqrstuvwxyzäöü") for _ in range(rng.randint(1, 12)))
        sep = rng.choice(SEPARATORS)
        parts.append(word + sep)
        total += len((word + sep).encode())
    return "".join(parts)


@pytest.fixture(scope="module")
def big_text() -> str:
    text = mixed_text(120 * 1024)
    # One word longer than a chunk, so a chunk has to grow rather than cut it.
    text = text[:50_000] + " " + "x" * (CHUNK_CHARS + 500) + " " + text[50_000:]
    assert len(text.encode()) >= 100 * 1024
    return text


def test_regex_word_characters_are_exactly_letters_numbers_and_apostrophe() -> None:
    mismatches = [cp for cp in range(sys.maxunicode + 1) if is_word_char(chr(cp)) != is_word_character(chr(cp))]
    assert mismatches == []


def test_the_definition_on_examples() -> None:
    assert list(words("Don't STOP—the café's naïve ǅemal_x ½ x² 中文🙂日本")) == [
        "don't", "stop", "the", "café's", "naïve", "ǆemal", "x", "½", "x²", "中文", "日本",
    ]
    assert list(words("Straße STRASSE ΣΊΣΥΦΟΣ σίσυφος")) == ["strasse", "strasse", "σίσυφοσ", "σίσυφοσ"]
    assert list(words("e\u0301 don\u2019t")) == ["e", "don", "t"]  # marks and U+2019 separate words


def test_steps_match_the_reference_on_100_kb_of_mixed_unicode(big_text: str) -> None:
    harness = StepHarness()
    split = harness.run("textstats.split", {"text": big_text, "top": 25})
    assert split.ok, split.error
    assert split.output is not None
    chunks = split.output["chunks"]
    assert "".join(chunks) == big_text and len(chunks) >= 7
    counts = []
    for i, chunk in enumerate(chunks):
        counted = harness.run("textstats.count", {"text": chunk, "index": i, "total": len(chunks)})
        assert counted.ok and counted.output is not None
        assert counted.percents == [round(100 * (i + 1) / len(chunks))]
        counts.append(counted.output)
    merged = harness.run("textstats.merge", {"counts": counts, "top": 25})
    assert merged.output == reference_stats(big_text, 25)
    assert merged.output["top"][0][1] > merged.output["top"][-1][1]


def test_split_never_cuts_a_word(big_text: str) -> None:
    chunks = split_text(big_text)
    for left, right in itertools.pairwise(chunks):
        assert not (is_word_character(left[-1]) and is_word_character(right[0]))
    assert max(len(c) for c in chunks) > CHUNK_CHARS  # the long word's chunk grew
    assert sorted(len(c) for c in chunks)[len(chunks) // 2] > CHUNK_CHARS * 0.9


@settings(max_examples=300, deadline=None)
@given(
    text=st.text(alphabet=st.sampled_from("ab' \n-é中_½")),
    size=st.integers(min_value=1, max_value=12),
)
def test_split_properties(text: str, size: int) -> None:
    chunks = split_text(text, size)
    assert "".join(chunks) == text
    assert all(chunks)
    words_of_chunks = [w for c in chunks for w in words(c)]
    assert words_of_chunks == list(words(text))


def test_split_rejects_a_silly_size() -> None:
    with pytest.raises(ValueError):
        split_text("abc", 0)


def test_ties_are_broken_alphabetically_and_top_is_bounded() -> None:
    harness = StepHarness()
    counts = [{"counts": {"b": 2, "a": 2, "c": 3}}, {"counts": {"d": 2, "a": 1}}]
    merged = harness.run("textstats.merge", {"counts": counts, "top": 3})
    assert merged.output == {"words": 10, "unique": 4, "top": [["a", 3], ["c", 3], ["b", 2]]}
    assert top_words({"z": 1, "y": 1}, 10) == [("y", 1), ("z", 1)]


def test_an_empty_text_has_no_words() -> None:
    harness = StepHarness()
    split = harness.run("textstats.split", {"text": ""})
    assert split.output == {"chunks": [], "top": 10}
    merged = harness.run("textstats.merge", {"counts": [], "top": 10})
    assert merged.output == {"words": 0, "unique": 0, "top": []}


@pytest.mark.parametrize("payload", [{"text": "x", "top": 0}, {"text": "x", "top": 1001}, {"top": 3}, {"text": 5}])
def test_invalid_payloads_fail_with_a_message(payload: dict[str, object]) -> None:
    result = StepHarness().run("textstats.split", payload)
    assert result.error_type == "StepFailedError"
    assert "invalid input for step 'textstats.split'" in str(result.error)


def test_a_text_whose_counts_would_not_fit_in_a_state_is_refused() -> None:
    rng = random.Random(1)
    distinct = " ".join(
        "".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(8)) for _ in range(30_000)
    )
    size = sum(len(json.dumps({"counts": count_words(c)}, ensure_ascii=False)) for c in split_text(distinct))
    assert size > MAX_COUNTS_BYTES
    result = StepHarness().run("textstats.split", {"text": distinct})
    assert result.error_type == "StepFailedError"
    assert "too many distinct words" in str(result.error)
