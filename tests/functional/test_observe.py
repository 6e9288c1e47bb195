"""streamer.observe against moto (in-process): listing through the requests table's GSIs, ids, actions,
connections, overview, and ``--stack`` mode reading a CloudFormation stack's outputs."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import boto3
import pytest

from streamer import observe
from streamer.aws.codec import to_ddb
from streamer.aws.executions import execution_input, execution_name
from streamer.aws.store import ConnectionStore, RequestStore
from streamer.cli import main
from streamer.config import Settings
from streamer.deploy.template import table_definitions
from streamer.models import Connection, RequestRef, payload_hash
from streamer.observe import Sources
from streamer.protocol import RequestStatus
from tests.conftest import ManagementApi

PASS_MACHINE = json.dumps({"StartAt": "Only", "States": {"Only": {"Type": "Pass", "End": True}}})
ROLE = "arn:aws:iam::123456789012:role/sfn"


@pytest.fixture
def sfn(aws: None) -> Any:
    client = boto3.client("stepfunctions", region_name="us-east-1")
    for workflow in ("echo", "textstats"):
        client.create_state_machine(name=f"streamer-{workflow}", definition=PASS_MACHINE, roleArn=ROLE)
    client.create_state_machine(name="other-thing", definition=PASS_MACHINE, roleArn=ROLE)  # not ours
    return client


@pytest.fixture
def src(ddb: Any, sfn: Any, mgmt_api: ManagementApi) -> Sources:
    return Sources(
        settings=Settings(apigw_endpoint=mgmt_api.url),
        dynamodb=ddb,
        stepfunctions=sfn,
        region="us-east-1",
        apigw_endpoint=mgmt_api.url,
    )


def put_request(
    src: Sources,
    user: str,
    rid: str,
    workflow: str,
    created: int,
    status: RequestStatus = RequestStatus.SUCCEEDED,
    payload: dict[str, Any] | None = None,
    execution_arn: str | None = None,
) -> None:
    """A request item as the platform stores it (written directly, to set its time and status)."""
    body = payload or {"message": rid}
    item: dict[str, Any] = {
        "user_id": user,
        "request_id": rid,
        "workflow": workflow,
        "payload": body,
        "payload_hash": payload_hash(workflow, body),
        "status": status.value,
        "created_at": created,
        "updated_at": created + 2,
        "expires_at": created + 86400,
    }
    if execution_arn:
        item["execution_arn"] = execution_arn
    src.dynamodb.put_item(TableName=src.settings.requests_table, Item=to_ddb(item))


def submit(src: Sources, user: str, rid: str, workflow: str, payload: dict[str, Any]) -> None:
    """A request submitted as the router does (RequestService.submit)."""
    src.service.submit(user, workflow, payload, rid)


T0 = 1_800_000_000


def all_pages(src: Sources, **kwargs: Any) -> list[observe.ExecutionSummary]:
    out: list[observe.ExecutionSummary] = []
    cursor = None
    for _ in range(100):
        page = observe.list_executions(src, cursor=cursor, **kwargs)
        assert len(page.items) <= kwargs.get("limit", 50)
        out.extend(page.items)
        cursor = page.next_cursor
        if cursor is None:
            return out
    raise AssertionError("paging did not end")


def test_list_merges_workflows_newest_first_and_pages_without_gaps_or_repeats(src: Sources) -> None:
    made = []
    for i in range(11):
        workflow = "echo" if i % 3 else "textstats"
        # Pairs share a created_at second: ties must neither repeat nor vanish across pages.
        put_request(src, f"u{i % 2}", f"req-{i:02d}", workflow, T0 + i // 2)
        made.append(f"req-{i:02d}")
    for limit in (1, 2, 3, 5, 11, 50):
        rows = all_pages(src, limit=limit)
        assert sorted(r.request_id for r in rows) == made, limit
        created = [r.created_at for r in rows]
        assert created == sorted(created, reverse=True), limit
    first = observe.list_executions(src, limit=50)
    assert first.next_cursor is None
    row = first.items[0]
    assert (row.request_id, row.status, row.duration_ms) == ("req-10", "SUCCEEDED", 2000)
    assert row.created_at == datetime.fromtimestamp(T0 + 5, UTC)
    assert row.console_url is None  # locally there is no AWS console
    assert observe.resolve(src, row.id) == (row.user_id, row.request_id)


def test_list_filters(src: Sources) -> None:
    put_request(src, "alice", "a-1", "echo", T0, RequestStatus.FAILED)
    put_request(src, "alice", "a-2", "textstats", T0 + 10)
    put_request(src, "bob", "b-1", "echo", T0 + 20, RequestStatus.RUNNING)
    put_request(src, "bob", "b-2", "echo", T0 + 30)

    def ids(**kw: Any) -> list[str]:
        return [r.request_id for r in all_pages(src, limit=1, **kw)]

    assert ids() == ["b-2", "b-1", "a-2", "a-1"]
    assert ids(workflow="echo") == ["b-2", "b-1", "a-1"]
    assert ids(user="alice") == ["a-2", "a-1"]
    assert ids(user="alice", workflow="echo") == ["a-1"]
    assert ids(status="FAILED") == ["a-1"]
    assert ids(status="RUNNING", workflow="echo") == ["b-1"]
    assert ids(since=datetime.fromtimestamp(T0 + 10, UTC)) == ["b-2", "b-1", "a-2"]
    assert ids(until=datetime.fromtimestamp(T0 + 10, UTC)) == ["a-2", "a-1"]
    assert ids(since=datetime.fromtimestamp(T0 + 5, UTC), until=datetime.fromtimestamp(T0 + 25, UTC)) == ["b-1", "a-2"]
    assert ids(query="b-") == ["b-2", "b-1"]
    assert ids(user="nobody") == []
    running = observe.list_executions(src, status="RUNNING").items[0]
    assert running.started_at is not None and running.stopped_at is None and running.duration_ms is None


def test_list_refuses_a_bad_limit_and_a_foreign_cursor(src: Sources) -> None:
    put_request(src, "alice", "a-1", "echo", T0)
    put_request(src, "alice", "a-2", "echo", T0 + 1)
    with pytest.raises(ValueError, match="limit"):
        observe.list_executions(src, limit=0)
    cursor = observe.list_executions(src, limit=1).next_cursor
    assert cursor is not None
    with pytest.raises(observe.CursorError):
        observe.list_executions(src, limit=1, cursor=cursor, workflow="echo")


def test_resolve_ids_users_and_arns(src: Sources, sfn: Any) -> None:
    put_request(src, "alice", "shared", "echo", T0)
    put_request(src, "bob", "shared", "echo", T0)
    put_request(src, "bob", "only-bob", "echo", T0)
    with pytest.raises(observe.AmbiguousError) as info:
        observe.resolve(src, "shared")
    assert info.value.users == ["alice", "bob"] and "pass a user" in str(info.value)
    assert observe.resolve(src, "shared", user="bob") == ("bob", "shared")
    assert observe.resolve(src, "only-bob") == ("bob", "only-bob")
    with pytest.raises(observe.NotFoundError, match="no request 'missing'"):
        observe.resolve(src, "missing")
    with pytest.raises(observe.NotFoundError):
        observe.resolve(src, "  ")
    arn = sfn.start_execution(
        stateMachineArn=src.settings.state_machine_arn("echo"),
        name=execution_name("alice", "shared"),
        input=execution_input(RequestRef.of("alice", "shared", "echo"), {}),
    )["executionArn"]
    assert observe.resolve(src, arn) == ("alice", "shared")
    with pytest.raises(observe.NotFoundError, match="no execution"):
        observe.resolve(src, arn + "-nope")
    foreign = sfn.start_execution(stateMachineArn=src.settings.state_machine_arn("echo"), input="{}")["executionArn"]
    with pytest.raises(observe.NotFoundError, match="not a streamer request"):
        observe.resolve(src, foreign)
    with pytest.raises(observe.NotFoundError, match="of user"):
        observe.show_execution(src, observe.summary_id("carol", "shared"))


def test_show_a_pending_request_has_no_execution_but_the_deployed_graph(src: Sources) -> None:
    submit(src, "alice", "p-1", "echo", {"message": "p"})
    detail = observe.show_execution(src, "p-1")
    assert detail.execution is None and detail.history_count == 0
    assert detail.definition == json.loads(PASS_MACHINE)
    assert [(s.name, s.status) for s in detail.states] == [("Only", "not_reached")]
    assert detail.events == [] and detail.request.terminal_event is None
    with pytest.raises(observe.NotFoundError, match="has no execution"):
        observe.execution_history(src, "p-1")


def test_show_history_of_a_started_execution(src: Sources, sfn: Any) -> None:
    ref = RequestRef.of("alice", "run-1", "echo")
    arn = sfn.start_execution(
        stateMachineArn=src.settings.state_machine_arn("echo"),
        name=execution_name("alice", "run-1"),
        input=execution_input(ref, {"message": "run-1"}),
    )["executionArn"]
    put_request(src, "alice", "run-1", "echo", T0, RequestStatus.RUNNING, execution_arn=arn)
    detail = observe.show_execution(src, arn)
    assert detail.execution is not None and detail.execution.arn == arn
    assert detail.request.execution_arn == arn
    history = observe.execution_history(src, "run-1")
    assert history and history[0]["type"] == "ExecutionStarted"
    json.dumps(history)  # JSON-safe: timestamps are strings
    assert isinstance(history[0]["timestamp"], str)
    assert detail.history_count == len(history)


def test_cancel_goes_through_the_protocol_path_and_pushes_cancelled(src: Sources, mgmt_api: ManagementApi) -> None:
    submit(src, "alice", "c-1", "echo", {"message": "c"})
    conn = Connection(connection_id="conn-1", user_id="alice", connected_at=T0, expires_at=2**31)
    ConnectionStore(src.settings.connections_table, src.dynamodb).put(conn)
    mgmt_api.open("conn-1")
    assert observe.cancel(src, "c-1") is True
    frames = mgmt_api.received("conn-1")
    assert frames and frames[-1]["type"] == "error" and frames[-1]["code"] == "CANCELLED"
    detail = observe.show_execution(src, "c-1")
    assert detail.request.status == "CANCELLED"
    assert detail.request.terminal_event is not None and detail.request.terminal_event["code"] == "CANCELLED"
    assert [e.type for e in detail.events][-1:] == ["error"]
    assert observe.cancel(src, "c-1") is False  # already ended


def test_rerun_submits_the_same_payload_as_a_new_request(src: Sources) -> None:
    submit(src, "alice", "orig", "textstats", {"text": "a b", "top": 1})
    new_id = observe.rerun(src, "orig")
    assert new_id != "orig"
    req = RequestStore(src.settings.requests_table, src.dynamodb).get("alice", new_id)
    assert req is not None
    assert (req.workflow, req.payload, req.status) == ("textstats", {"text": "a b", "top": 1}, RequestStatus.PENDING)


def test_connections_per_user_with_message_counts(src: Sources) -> None:
    store = ConnectionStore(src.settings.connections_table, src.dynamodb)
    now = T0 + 100
    store.put(Connection(connection_id="c1", user_id="alice", connected_at=T0, expires_at=now + 600))
    store.put(Connection(connection_id="c2", user_id="alice", connected_at=T0 + 5, expires_at=now + 600))
    store.put(Connection(connection_id="c3", user_id="bob", connected_at=T0, expires_at=now - 1))  # expired
    store.count_message("c2", now=now)
    store.count_message("c2", now=now)
    out = observe.connections(src, now=now)
    assert [u.user_id for u in out] == ["alice"]
    assert [(c.connection_id, c.messages) for c in out[0].connections] == [("c1", 0), ("c2", 2)]
    # In the next minute the window has passed: no messages counted yet.
    assert [c.messages for c in observe.connections(src, now=now + 60)[0].connections] == [0, 0]


def test_overview_counts_and_percentiles(src: Sources) -> None:
    now = datetime.fromtimestamp(T0 + 3600, UTC)
    for i in range(5):
        put_request(src, "alice", f"e{i}", "echo", T0 + 60 * i)
    put_request(src, "bob", "f", "echo", T0 + 120, RequestStatus.FAILED)
    put_request(src, "bob", "t", "textstats", T0 + 120, RequestStatus.RUNNING)
    put_request(src, "bob", "old", "echo", T0 - 10_000)  # outside the window
    ov = observe.overview(src, window_seconds=3600, now=now)
    assert ov.total == 7
    assert ov.by_status == {"SUCCEEDED": 5, "FAILED": 1, "RUNNING": 1}
    assert ov.by_workflow == {"echo": 6, "textstats": 1}
    assert len(ov.per_minute) == 61 and sum(m.count for m in ov.per_minute) == 7
    assert [m.count for m in ov.per_minute[:3]] == [1, 1, 3]
    echo = next(d for d in ov.durations if d.workflow == "echo" and d.step is None)
    assert (echo.count, echo.p50_ms, echo.p99_ms) == (6, 2000, 2000)
    json.dumps(ov.model_dump(mode="json"))


def local_sources(src: Sources, metrics_file: str) -> Sources:
    """``src`` as a ``streamer local`` whose handlers write their EMF metrics to ``metrics_file``."""
    from tests.fakes import local_state

    state = local_state(
        pid=1,
        connections_table=src.settings.connections_table,
        requests_table=src.settings.requests_table,
        events_table=src.settings.events_table,
        state_machine_arn_prefix=src.settings.state_machine_arn_prefix,
        metrics_file=metrics_file,
    )
    return Sources(
        settings=src.settings, dynamodb=src.dynamodb, stepfunctions=src.stepfunctions, region="us-east-1",
        local_state=state,
    )  # fmt: skip


def test_a_local_overview_comes_from_the_emf_metrics_the_handlers_write(src: Sources, tmp_path: Path) -> None:
    from streamer import metrics

    path = tmp_path / "local.metrics.jsonl"
    sink = metrics.JsonLinesFile(path)
    metrics.set_sink(sink.append)
    try:
        # What the handlers record over two requests' lives (each in its own invocation, like Lambda).
        for workflow, terminal, duration in (("echo", "SUCCEEDED", 2000), ("textstats", "FAILED", 4000)):
            with metrics.invocation():
                metrics.add(metrics.REQUESTS_SUBMITTED, workflow=workflow)
            with metrics.invocation():
                metrics.add(metrics.REQUESTS_STARTED, workflow=workflow)
            with metrics.invocation():
                metrics.add(metrics.STEP_DURATION, duration / 2, step=f"{workflow}.step")
                metrics.add(metrics.terminal_metric(terminal), workflow=workflow)
                metrics.add(metrics.REQUEST_DURATION, duration, workflow=workflow)
        with metrics.invocation():
            metrics.add(metrics.CONNECTS_REFUSED, reason="expired_token")
            metrics.add(metrics.MESSAGES_RATE_LIMITED)
    finally:
        metrics.set_sink(None)
    put_request(src, "alice", "table-only", "echo", int(datetime.now(UTC).timestamp()) - 60)  # not a metric
    ov = observe.overview(local_sources(src, str(path)), window_seconds=3600)
    assert ov.source == "metrics" and str(path) in ov.origins["file"]
    assert "RequestsSubmitted" in ov.origins["by_workflow"] and "StepDuration" in ov.origins["step_durations"]
    assert ov.total == 2  # the metrics' count: the request written straight to the table is not in them
    assert ov.by_status == {"STARTED": 2, "SUCCEEDED": 1, "FAILED": 1}
    assert list(ov.by_status) == ["STARTED", "SUCCEEDED", "FAILED"]  # started, then the terminal statuses
    assert ov.by_workflow == {"echo": 1, "textstats": 1}
    assert len(ov.per_minute) == 60 and sum(m.count for m in ov.per_minute) == 2
    assert ov.per_minute[-1].count == 2  # submitted just now: the last minute
    figures = {(d.workflow, d.step): (d.count, d.p50_ms, d.p99_ms) for d in ov.durations}
    assert figures == {
        ("echo", None): (1, 2000, 2000),
        ("textstats", None): (1, 4000, 4000),
        (None, "echo.step"): (1, 1000, 1000),
        (None, "textstats.step"): (1, 2000, 2000),
    }
    assert (ov.connects_refused, ov.rate_limited, ov.pushes_to_gone_connections) == ({"expired_token": 1}, 1, 0)
    json.dumps(ov.model_dump(mode="json"))
    # Metrics older than the window are left out; no file yet is an empty overview, not an error.
    later = datetime.now(UTC) + timedelta(hours=2)
    assert observe.overview(local_sources(src, str(path)), window_seconds=3600, now=later).total == 0
    empty = observe.overview(local_sources(src, str(tmp_path / "none.jsonl")), window_seconds=3600)
    assert (empty.source, empty.total, empty.by_status, empty.durations) == ("metrics", 0, {}, [])


def test_a_deployed_stacks_overview_says_it_comes_from_the_tables(src: Sources) -> None:
    ov = observe.overview(src, window_seconds=3600)
    assert ov.source == "tables" and "requests table" in ov.origins["by_status"]
    assert ov.connects_refused is None and ov.rate_limited is None


# -- --stack mode: a CloudFormation stack in moto stands in for a deployed one ------------------------------


def stack_template(*, with_table_outputs: bool = True, with_prefix: bool = True) -> str:
    resources: dict[str, dict[str, Any]] = {}
    for lid, spec in table_definitions().items():
        properties = dict(spec)
        properties.pop("TimeToLiveSpecification", None)
        resources[lid] = {"Type": "AWS::DynamoDB::Table", "Properties": properties}
    outputs: dict[str, Any] = {}
    if with_prefix:
        outputs["StateMachineArnPrefix"] = {
            "Value": {"Fn::Sub": "arn:aws:states:${AWS::Region}:${AWS::AccountId}:stateMachine:${AWS::StackName}-"}
        }
        outputs["ManagementApiEndpoint"] = {"Value": "https://example.execute-api.us-east-1.amazonaws.com/prod"}
    if with_table_outputs:
        for lid in resources:
            outputs[f"{lid}Name"] = {"Value": {"Ref": lid}}
    return json.dumps({"AWSTemplateFormatVersion": "2010-09-09", "Resources": resources, "Outputs": outputs})


@pytest.fixture
def deployed(aws: None, monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    cfn = boto3.client("cloudformation", region_name="us-east-1")
    cfn.create_stack(StackName="prod", TemplateBody=stack_template())
    sfn = boto3.client("stepfunctions", region_name="us-east-1")
    sfn.create_state_machine(name="prod-echo", definition=PASS_MACHINE, roleArn=ROLE)
    return cfn


def test_stack_mode_reads_the_outputs_and_links_the_aws_console(
    deployed: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    src = Sources.stack(profile=None, region="us-east-1", stack="prod")
    tables = {
        o["OutputKey"]: o["OutputValue"] for o in deployed.describe_stacks(StackName="prod")["Stacks"][0]["Outputs"]
    }
    assert src.settings.requests_table == tables["RequestsTableName"]
    assert src.settings.events_table == tables["EventsTableName"]
    assert src.settings.connections_table == tables["ConnectionsTableName"]
    assert src.settings.state_machine_arn_prefix.endswith(":stateMachine:prod-")
    assert src.aws and src.workflows() == ["echo"]
    ref = RequestRef.of("alice", "deployed-1", "echo")
    arn = src.executions.start("echo", execution_name("alice", "deployed-1"), execution_input(ref, {}))
    put_request(src, "alice", "deployed-1", "echo", T0, RequestStatus.RUNNING, execution_arn=arn)
    url = src.console_url(arn)
    assert url == f"https://us-east-1.console.aws.amazon.com/states/home?region=us-east-1#/v2/executions/details/{arn}"

    assert main(["executions", "list", "--stack", "prod", "--region", "us-east-1", "--json"]) == 0
    page = json.loads(capsys.readouterr().out)
    assert [(i["request_id"], i["console_url"]) for i in page["items"]] == [("deployed-1", url)]
    assert main(["executions", "show", "deployed-1", "--stack", "prod", "--region", "us-east-1"]) == 0
    out = capsys.readouterr().out
    assert "deployed-1" in out and url in out
    assert main(["executions", "list", "--stack", "prod", "--region", "us-east-1"]) == 0
    assert "console.aws.amazon.com" in capsys.readouterr().out


def test_stack_mode_falls_back_to_resources_and_reports_what_is_missing(aws: None) -> None:
    cfn = boto3.client("cloudformation", region_name="us-east-1")
    cfn.create_stack(StackName="old", TemplateBody=stack_template(with_table_outputs=False))
    src = Sources.stack(region="us-east-1", stack="old")
    names = {
        r["LogicalResourceId"]: r["PhysicalResourceId"]
        for r in cfn.list_stack_resources(StackName="old")["StackResourceSummaries"]
    }
    assert src.settings.requests_table == names["RequestsTable"]
    cfn.create_stack(StackName="alien", TemplateBody=stack_template(with_prefix=False))
    with pytest.raises(observe.SourceError, match="StateMachineArnPrefix"):
        Sources.stack(region="us-east-1", stack="alien")
    with pytest.raises(observe.SourceError, match="nope"):
        Sources.stack(region="us-east-1", stack="nope")


def test_cli_errors_are_one_line_and_exit_1(deployed: Any, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["executions", "show", "missing", "--stack", "prod", "--region", "us-east-1"]) == 1
    assert capsys.readouterr().err.strip() == "error: no request 'missing'"
    assert main(["executions", "list", "--stack", "absent", "--region", "us-east-1"]) == 1
    assert capsys.readouterr().err.startswith("error: stack 'absent'")
