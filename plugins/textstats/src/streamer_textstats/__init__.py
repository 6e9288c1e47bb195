"""streamer plugin ``textstats``: word statistics of a text, split into chunks counted in a Map state.

Steps: ``textstats.split`` (payload → chunks), ``textstats.count`` (one chunk → its word counts; the
state machine runs one per chunk), ``textstats.merge`` (all counts → ``{"words", "unique", "top"}``).
The definition of a word is in :mod:`streamer_textstats.text` and the README.
"""

from __future__ import annotations

import json

from pydantic import BaseModel, ConfigDict, Field

import streamer
from streamer import Step, StepContext, StepFailedError, Workflow
from streamer_textstats.text import count_words, merge_counts, split_text, top_words

__all__ = [
    "MAX_COUNTS_BYTES",
    "ChunkCounts",
    "CountInput",
    "MergeInput",
    "SplitOutput",
    "TextStats",
    "TextstatsPayload",
    "count",
    "merge",
    "split",
    "streamer_steps",
    "streamer_workflows",
]
__version__ = "0.1.0"

#: The Map state's output (every chunk's counts) must fit in Step Functions' 256 KiB per state, with room
#: for the request. ``split`` refuses a text that would not, with a message, instead of letting the
#: execution die of the uncatchable ``States.DataLimitExceeded``.
MAX_COUNTS_BYTES = 240 * 1024


class TextstatsPayload(BaseModel):
    """What a client submits to ``textstats`` (and ``textstats.split``'s input)."""

    model_config = ConfigDict(extra="forbid")

    text: str
    top: int = Field(default=10, ge=1, le=1000)


class SplitOutput(BaseModel):
    chunks: list[str]
    top: int


class CountInput(BaseModel):
    """One Map iteration: the chunk, its index and the number of chunks (for progress)."""

    text: str
    index: int = Field(default=0, ge=0)
    total: int = Field(default=1, ge=1)


class ChunkCounts(BaseModel):
    counts: dict[str, int]


class MergeInput(BaseModel):
    counts: list[ChunkCounts]
    top: int = Field(default=10, ge=1, le=1000)


class TextStats(BaseModel):
    words: int
    unique: int
    top: list[tuple[str, int]]


def _json_size(value: object) -> int:
    return len(json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode())


def split(payload: TextstatsPayload, context: StepContext) -> SplitOutput:
    """Cut the text into chunks at non-word boundaries (see ``split_text``)."""
    chunks = split_text(payload.text)
    size = sum(_json_size({"counts": count_words(c)}) for c in chunks)
    if size > MAX_COUNTS_BYTES:
        raise StepFailedError(
            f"the text has too many distinct words to count in one request "
            f"({size} bytes of counts; the limit is {MAX_COUNTS_BYTES})"
        )
    context.logger.info("split into %d chunks", len(chunks))
    return SplitOutput(chunks=chunks, top=payload.top)


def count(chunk: CountInput, context: StepContext) -> ChunkCounts:
    """Count one chunk's words; progress is the share of chunks counted so far (by index)."""
    counts = count_words(chunk.text)
    context.progress(100 * (chunk.index + 1) / chunk.total, f"counted chunk {chunk.index + 1} of {chunk.total}")
    return ChunkCounts(counts=counts)


def merge(data: MergeInput, context: StepContext) -> TextStats:
    """Add the chunks' counts up and pick the most frequent words."""
    total = merge_counts(c.counts for c in data.counts)
    return TextStats(words=sum(total.values()), unique=len(total), top=top_words(total, data.top))


@streamer.hookimpl
def streamer_steps() -> list[Step]:
    return [
        Step(
            name="textstats.split",
            func=split,
            input_model=TextstatsPayload,
            output_model=SplitOutput,
            description="Cuts the text into ~16 Ki-character chunks, never inside a word.",
        ),
        Step(
            name="textstats.count",
            func=count,
            input_model=CountInput,
            output_model=ChunkCounts,
            description="Counts the words of one chunk.",
        ),
        Step(
            name="textstats.merge",
            func=merge,
            input_model=MergeInput,
            output_model=TextStats,
            description="Adds the chunks' counts up: total words, distinct words, the most frequent.",
        ),
    ]


@streamer.hookimpl
def streamer_workflows() -> list[Workflow]:
    return [
        Workflow(
            name="textstats",
            description="Counts the words of a text: total, distinct, and the most frequent.",
            payload_model=TextstatsPayload,
        )
    ]
