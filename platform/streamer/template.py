"""Read the deployment template (``infra/template.yaml``): the one source of truth for AWS and local.

The local stack and the tests create their tables, functions, routes and stream mapping from what this
module reads, so adding a resource to the template makes it exist locally. CloudFormation short-form tags
(``!Ref``, ``!Sub``, ``!GetAtt`` …) are loaded as their long-form dicts (``{"Ref": …}``, ``{"Fn::Sub": …}``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

__all__ = ["default_template_path", "load_template", "table_definitions"]


def default_template_path() -> Path:
    """``infra/template.yaml`` of the source checkout (``STREAMER_TEMPLATE`` overrides it)."""
    import os

    env = os.environ.get("STREAMER_TEMPLATE")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[2] / "infra" / "template.yaml"


class _CfnLoader(yaml.SafeLoader):
    pass


def _construct_tag(loader: yaml.SafeLoader, tag_suffix: str, node: yaml.Node) -> dict[str, Any]:
    name = "Ref" if tag_suffix == "Ref" else f"Fn::{tag_suffix}"
    value: Any
    if isinstance(node, yaml.ScalarNode):
        value = loader.construct_scalar(node)
        if tag_suffix == "GetAtt" and isinstance(value, str):
            value = value.split(".", 1)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    elif isinstance(node, yaml.MappingNode):
        value = loader.construct_mapping(node, deep=True)
    else:  # pragma: no cover - YAML has no other node kinds
        raise yaml.constructor.ConstructorError(None, None, f"unexpected node for !{tag_suffix}", node.start_mark)
    return {name: value}


_CfnLoader.add_multi_constructor("!", _construct_tag)


def load_template(path: Path | str | None = None) -> dict[str, Any]:
    """Parse the template into plain dicts."""
    p = Path(path) if path is not None else default_template_path()
    with p.open(encoding="utf-8") as fh:
        data = yaml.load(fh, Loader=_CfnLoader)  # noqa: S506 - SafeLoader subclass
    if not isinstance(data, dict):
        raise ValueError(f"{p}: not a CloudFormation template")
    return data


_TABLE_KEYS = (
    "AttributeDefinitions",
    "KeySchema",
    "GlobalSecondaryIndexes",
    "LocalSecondaryIndexes",
    "StreamSpecification",
    "BillingMode",
)


def table_definitions(template: dict[str, Any] | None = None) -> dict[str, dict[str, Any]]:
    """``{logical_id: create_table kwargs (without TableName)}`` for each ``AWS::DynamoDB::Table``.

    ``StreamSpecification`` gains ``StreamEnabled: true`` as boto3's ``create_table`` wants it; TTL is
    returned under the extra key ``TimeToLiveSpecification`` for ``update_time_to_live``.
    """
    tpl = template if template is not None else load_template()
    out: dict[str, dict[str, Any]] = {}
    for logical_id, res in tpl.get("Resources", {}).items():
        if res.get("Type") != "AWS::DynamoDB::Table":
            continue
        props = res.get("Properties", {})
        kwargs: dict[str, Any] = {k: props[k] for k in _TABLE_KEYS if k in props}
        if "StreamSpecification" in kwargs:
            kwargs["StreamSpecification"] = {"StreamEnabled": True, **kwargs["StreamSpecification"]}
        if "TimeToLiveSpecification" in props:
            kwargs["TimeToLiveSpecification"] = props["TimeToLiveSpecification"]
        out[logical_id] = kwargs
    return out
