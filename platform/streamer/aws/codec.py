"""DynamoDB attribute values <-> plain JSON values (pure: no client). Numbers go through Decimal."""

from __future__ import annotations

import json
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from boto3.dynamodb.types import TypeDeserializer, TypeSerializer

__all__ = ["from_ddb", "to_attr", "to_ddb"]

_SER = TypeSerializer()
_DESER = TypeDeserializer()


def to_attr(value: Any) -> dict[str, Any]:
    """One DynamoDB attribute value. DynamoDB has no float type: numbers go through Decimal (JSON round-trip)."""
    return dict(_SER.serialize(json.loads(json.dumps(value), parse_float=Decimal)))


def to_ddb(value: Mapping[str, Any]) -> dict[str, Any]:
    return {k: to_attr(v) for k, v in value.items() if v is not None}


def _plain(value: Any) -> Any:
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, set):
        return sorted(_plain(v) for v in value)
    return value


def from_ddb(item: Mapping[str, Any]) -> dict[str, Any]:
    return {k: _plain(_DESER.deserialize(v)) for k, v in item.items()}
