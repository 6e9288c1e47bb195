"""``streamer local``'s plan (``streamer.local.plan``): what the template declares, refused as AWS would refuse it.

Each test writes a changed copy of ``infra/template.yaml`` and reads it as ``streamer local`` does at start-up:
a problem is a :class:`~streamer.local.StartupError` naming the template and the resource.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from streamer.deploy.template import load_template
from streamer.errors import StreamerError
from streamer.local import StartupError
from streamer.local.plan import plan_from_template


def _changed(tmp_path: Path, change: Callable[[dict[str, Any]], None]) -> Path:
    tpl = load_template()
    change(tpl)
    path = tmp_path / "template.yaml"
    path.write_text(json.dumps(tpl), encoding="utf-8")  # JSON is YAML
    return path


def test_the_plan_carries_the_stream_mapping_as_the_template_declares_it() -> None:
    plan = plan_from_template(check_plugins=False)
    (mapping,) = plan.stream_mappings
    assert (mapping.function_name, mapping.table_name) == ("StreamRouterFunction", "streamer-requests")
    assert mapping.filters == (
        {"eventName": ["INSERT"]},
        {"eventName": ["MODIFY"], "dynamodb": {"NewImage": {"status": {"S": ["CANCELLED"]}}}},
    )
    assert (mapping.batch_size, mapping.maximum_retry_attempts, mapping.maximum_record_age_seconds) == (10, 5, 3600)
    assert mapping.bisect_batch_on_function_error and mapping.report_batch_item_failures


def _filter(pattern: str) -> Callable[[dict[str, Any]], None]:
    def change(tpl: dict[str, Any]) -> None:
        tpl["Resources"]["RequestsStreamMapping"]["Properties"]["FilterCriteria"] = {"Filters": [{"Pattern": pattern}]}

    return change


@pytest.mark.parametrize(
    ("pattern", "reason"),
    [
        ('{"eventName": [{"prefx": "INS"}]}', "unsupported condition"),  # moto alone would match everything
        ('{"eventName": "INSERT"}', "must be an object or an array"),
        ('{"eventName": [', "the pattern is not JSON"),
    ],
)
def test_a_filter_aws_would_refuse_stops_start_up(tmp_path: Path, pattern: str, reason: str) -> None:
    path = _changed(tmp_path, _filter(pattern))
    with pytest.raises(StartupError, match=f"template {re.escape(str(path))}: .*{reason}"):
        plan_from_template(path, check_plugins=False)


def test_an_event_rule_pattern_aws_would_refuse_stops_start_up(tmp_path: Path) -> None:
    def change(tpl: dict[str, Any]) -> None:
        tpl["Resources"]["ExecutionEndedRule"]["Properties"]["EventPattern"]["detail"]["status"] = [{"sufix": "ED"}]

    path = _changed(tmp_path, change)
    with pytest.raises(StartupError, match="ExecutionEndedRule: invalid event pattern: unsupported condition"):
        plan_from_template(path, check_plugins=False)


def test_a_template_sam_rejects_stops_start_up_with_sams_reason(tmp_path: Path) -> None:
    def change(tpl: dict[str, Any]) -> None:
        del tpl["Resources"]["EchoStateMachine"]["Properties"]["DefinitionUri"]

    path = _changed(tmp_path, change)
    with pytest.raises(StartupError, match=r"SAM rejects it: .*EchoStateMachine") as info:
        plan_from_template(path, check_plugins=False)
    assert isinstance(info.value, StreamerError)  # one root for every exception of the package


def test_a_disabled_stream_mapping_is_not_played(tmp_path: Path) -> None:
    def change(tpl: dict[str, Any]) -> None:
        tpl["Resources"]["RequestsStreamMapping"]["Properties"]["Enabled"] = False

    assert plan_from_template(_changed(tmp_path, change), check_plugins=False).stream_mappings == []


def test_a_project_directory_gives_the_template_and_a_missing_one_is_a_reason(tmp_path: Path) -> None:
    project = tmp_path / "project"
    (project / "infra").mkdir(parents=True)
    (project / "infra" / "template.yaml").write_text(json.dumps(load_template()), encoding="utf-8")
    plan = plan_from_template(project_dir=project, check_plugins=False)
    assert plan.template_path == (project / "infra" / "template.yaml").resolve()
    # DefinitionUri ../statemachines/<w>.asl.json is read next to the project's infra/.
    assert {sm.definition_path.parent for sm in plan.state_machines} == {(project / "statemachines").resolve()}
    with pytest.raises(StartupError, match=f"project directory {re.escape(str(tmp_path / 'nowhere'))} does not exist"):
        plan_from_template(project_dir=tmp_path / "nowhere", check_plugins=False)
    with pytest.raises(StartupError, match=r"no infra/template\.yaml in project directory"):
        plan_from_template(project_dir=tmp_path, check_plugins=False)


def test_provisioning_creates_the_plans_tables_and_state_machines_and_a_failed_deploy_is_a_reason(
    tmp_path: Path,
) -> None:
    import boto3
    from moto import mock_aws

    from streamer.config import LOCAL_REGION
    from streamer.local.plan import StateMachinePlan
    from streamer.local.provision import deploy_state_machines, provision

    plan = plan_from_template(check_plugins=False)
    creds = {"region_name": LOCAL_REGION, "aws_access_key_id": "testing", "aws_secret_access_key": "testing"}
    with mock_aws():
        ddb, sfn = boto3.client("dynamodb", **creds), boto3.client("stepfunctions", **creds)
        provision(plan, dynamodb=ddb, sfn=sfn)
        assert sorted(ddb.list_tables()["TableNames"]) == sorted(plan.table_names.values())
        ttl = ddb.describe_time_to_live(TableName="streamer-requests")["TimeToLiveDescription"]
        assert ttl["TimeToLiveStatus"] == "ENABLED"
        arns = {m["stateMachineArn"] for m in sfn.list_state_machines()["stateMachines"]}
        assert arns == {plan.state_machine_arn_prefix() + sm.workflow for sm in plan.state_machines}
        plan.state_machines.append(StateMachinePlan("ghost", tmp_path / "ghost.asl.json", {}))
        with pytest.raises(StartupError, match=r"^state machines: .*ghost"):
            deploy_state_machines(plan, sfn)


def test_the_plan_knows_the_two_way_route_and_refuses_a_router_replying_into_nothing(tmp_path: Path) -> None:
    assert plan_from_template(check_plugins=False).route_responses == {"$default"}

    def change(tpl: dict[str, Any]) -> None:
        del tpl["Resources"]["DefaultRouteResponse"]
        tpl["Resources"]["Stage"]["DependsOn"].remove("DefaultRouteResponse")

    with pytest.raises(StartupError, match=r"RouterFunction sets STREAMER_REPLY_ROUTE_RESPONSE but route \$default"):
        plan_from_template(_changed(tmp_path, change), check_plugins=False)
