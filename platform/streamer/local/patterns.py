"""Event patterns (EventBridge's content filtering) for everything ``streamer local`` plays: one matcher.

The EventBridge stand-in (:mod:`streamer.local.eventbridge`) matches status-change events against the rules'
``EventPattern``; the stream poller (:mod:`streamer.local.stream_poller`) matches DynamoDB records against the
event source mapping's ``FilterCriteria`` — Lambda's filter criteria use the same pattern syntax
(https://docs.aws.amazon.com/lambda/latest/dg/invocation-eventfiltering.html). Both go through
:func:`compile_pattern`, which is moto's own matcher (``moto.events.models.EventPattern``, moto is pinned):
exact values (an event array matches when any element does), ``prefix``, ``suffix``, ``equals-ignore-case``,
``wildcard``, ``anything-but`` (values, or a ``prefix`` / ``suffix`` to exclude), ``numeric`` (JSON numbers
only: ``"5"`` is not a number), ``exists``, ``cidr`` and ``$or``, with the semantics of
https://docs.aws.amazon.com/eventbridge/latest/userguide/eb-event-patterns-content-based-filtering.html.

One wrap: moto treats a condition it does not know (a typo such as ``{"prefx": "a"}``) as matching
everything, where AWS refuses to create the rule or mapping. :func:`compile_pattern` refuses it too
(``ValueError``), so a template with such a pattern fails ``streamer local``'s start-up as it would fail a
deploy, instead of letting every event through.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any, cast

__all__ = ["CONDITIONS", "Pattern", "compile_pattern", "matches", "record_passes_filters"]

#: The condition operators of EventBridge's pattern syntax.
CONDITIONS = frozenset(
    {"prefix", "suffix", "equals-ignore-case", "wildcard", "anything-but", "numeric", "exists", "cidr"}
)


class Pattern:
    """A validated pattern; :meth:`matches` is moto's ``EventPattern.matches_event``."""

    def __init__(self, pattern: Mapping[str, Any]) -> None:
        from moto.events.exceptions import InvalidEventPatternException
        from moto.events.models import EventPattern

        _check_conditions(pattern)
        try:
            self._compiled = EventPattern.load(json.dumps(pattern))
        except InvalidEventPatternException as exc:
            raise ValueError(f"invalid event pattern {json.dumps(pattern)}: {exc.message}") from exc

    def matches(self, event: Mapping[str, Any]) -> bool:
        # moto types the event as its own TypedDict; any JSON object is an event to EventBridge.
        return bool(self._compiled.matches_event(cast(Any, dict(event))))


def _check_conditions(node: Any) -> None:
    if isinstance(node, Mapping):
        for key, value in node.items():
            if key == "$or":
                if not isinstance(value, list):
                    raise ValueError("invalid event pattern: $or takes a list of patterns")
                for option in value:
                    _check_conditions(option)
            elif isinstance(value, list):
                for cond in value:
                    if isinstance(cond, Mapping):
                        unknown = set(cond) - CONDITIONS
                        if unknown or len(cond) != 1:
                            raise ValueError(f"invalid event pattern: unsupported condition {json.dumps(cond)}")
            else:
                _check_conditions(value)


def compile_pattern(pattern: Mapping[str, Any]) -> Pattern:
    """Validate ``pattern`` (``ValueError`` when EventBridge would refuse it) and return its matcher."""
    return Pattern(pattern)


def matches(pattern: Mapping[str, Any], event: Mapping[str, Any]) -> bool:
    """Whether ``event`` matches ``pattern`` (compiled on every call; keep a :class:`Pattern` when reused)."""
    return compile_pattern(pattern).matches(event)


def record_passes_filters(record: Mapping[str, Any], filters: Sequence[Pattern | Mapping[str, Any]]) -> bool:
    """Lambda's ``FilterCriteria``: no filter lets every record through; several filters are OR-ed."""
    if not filters:
        return True
    return any((f if isinstance(f, Pattern) else compile_pattern(f)).matches(record) for f in filters)
