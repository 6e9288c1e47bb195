"""Issue 10's request-lifecycle defects, each with a test that fails on the code before the fix (the docstring
says which defect), against moto in-process (DynamoDB; Step Functions executing a long Wait state, so an
execution stays RUNNING until it is stopped) and a real Management API endpoint.

Defect 2: request identity that survives expiry. Defect 3: cancel/start race. Defect 4: nothing stored after
the terminal event. Defect 5: the reconciler. Defect 6: values DynamoDB cannot store.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from streamer.aws.codec import to_ddb
from streamer.aws.executions import execution_arn, execution_input, execution_name
from streamer.errors import ProtocolError, TerminalAlreadyError
from streamer.events import RequestInsert
from streamer.handlers import _runtime
from streamer.handlers import reconciler as reconciler_handler
from streamer.models import Connection, Request
from streamer.protocol import ErrorCode, RequestStatus, parse_action
from streamer.reconciler import Reconciler
from streamer.router import Router

ROLE = "arn:aws:iam::123456789012:role/sfn"
ECHO = "arn:aws:states:us-east-1:123456789012:stateMachine:streamer-echo"
#: An execution that keeps running until stopped (so a test can see whether it was stopped).
WAIT = json.dumps({"StartAt": "W", "States": {"W": {"Type": "Wait", "Seconds": 3600, "End": True}}})


@pytest.fixture
def sfn(service: Any) -> Iterator[Any]:
    client = service.executions.client
    client.create_state_machine(name="streamer-echo", definition=WAIT, roleArn=ROLE)
    _runtime.set_service(service)
    yield client
    _runtime.reset()


def connect(service: Any, mgmt_api: Any, cid: str = "c1", user: str = "alice") -> None:
    now = service.now()
    service.connections.put(Connection(connection_id=cid, user_id=user, connected_at=now, expires_at=now + 3600))
    mgmt_api.open(cid)


def insert_of(req: Request) -> RequestInsert:
    """The stream router's view of a stored request (its INSERT record's new image)."""
    return RequestInsert.model_validate(req.model_dump(mode="json"))


def status_of(sfn: Any, arn: str) -> str:
    return str(sfn.describe_execution(executionArn=arn)["status"])


def executions(sfn: Any) -> list[dict[str, Any]]:
    return list(sfn.list_executions(stateMachineArn=ECHO)["executions"])


def stored_seqs(service: Any, key: str) -> list[int]:
    return [e.seq for e in service.events.after(key, 0)]


def expire(service: Any, user: str, rid: str) -> None:
    """What DynamoDB's TTL does to an expired request (its events expire on their own schedule)."""
    service.requests.client.delete_item(
        TableName=service.requests.table, Key={"user_id": {"S": user}, "request_id": {"S": rid}}
    )


# -- defect 2: identity that survives expiry ------------------------------------------------------------------


def test_a_reused_id_after_expiry_is_a_new_request_with_its_own_execution_and_events(
    service: Any, sfn: Any, mgmt_api: Any
) -> None:
    """Defect 2. Before: the name was derived from (user, id) only, so the successor's StartExecution got
    ExecutionAlreadyExists, was attached to the old finished execution and stayed RUNNING; its resume from 0
    returned the predecessor's events (same request key)."""
    connect(service, mgmt_api)
    old = service.submit("alice", "echo", {"message": "first"}, "same").request
    assert service.start(insert_of(old)) == "started"
    old_ref = old.ref
    service.progress(old_ref, "echo", 50, "old progress")
    service.finish(old_ref, RequestStatus.SUCCEEDED, output={"message": "first"})
    expire(service, "alice", "same")

    new = service.submit("alice", "echo", {"message": "second"}, "same").request
    assert new.incarnation != old.incarnation and new.ref.request_key != old_ref.request_key
    assert service.start(insert_of(new)) == "started"
    current = service.requests.get("alice", "same")
    assert current.status is RequestStatus.RUNNING
    assert current.execution_arn == execution_arn(ECHO, execution_name("alice", "same", new.incarnation))
    assert len({e["name"] for e in executions(sfn)}) == 2  # one execution per incarnation
    assert service.replay("alice", "same", 0) == []  # nothing of the predecessor
    # The predecessor's execution, still reporting late, cannot write into its successor.
    assert service.progress(old_ref, "echo", 99, "late") is None
    assert service.finish(old_ref, RequestStatus.FAILED, message="late") is None
    assert service.requests.get("alice", "same").last_seq == 0


def test_a_redelivered_record_never_starts_a_second_execution(service: Any, sfn: Any) -> None:
    """Defect 2 (kept): the same incarnation always names the same execution, whatever is redelivered."""
    req = service.submit("alice", "echo", {"message": "x"}, "r").request
    outcomes = [service.start(insert_of(req)) for _ in range(3)]
    assert outcomes == ["started", "skipped", "skipped"]
    assert len(executions(sfn)) == 1
    assert status_of(sfn, service.requests.get("alice", "r").execution_arn) == "RUNNING"


def test_execution_already_exists_for_another_request_is_not_success(service: Any, sfn: Any) -> None:
    """Defect 2. Before: ExecutionAlreadyExists was success whatever ran under the name, so the request was
    attached to someone else's execution. Now the existing execution's input must name this request
    (here a legacy request without an incarnation meets a hand-started execution of the same name)."""
    service.incarnations = lambda: ""
    req = service.submit("alice", "echo", {"message": "x"}, "legacy").request
    name = execution_name("alice", "legacy")
    other = {**req.ref.model_dump(), "workflow": "not-echo"}
    sfn.start_execution(stateMachineArn=ECHO, name=name, input=json.dumps({"request": other, "payload": {}}))
    sfn.stop_execution(executionArn=execution_arn(ECHO, name))  # closed: StartExecution now answers AlreadyExists
    assert service.start(insert_of(req)) == "rejected"
    ended = service.requests.get("alice", "legacy")
    assert (ended.status, ended.error_code) == (RequestStatus.FAILED, "INTERNAL_ERROR")


def test_execution_already_exists_for_this_request_is_success(service: Any, sfn: Any) -> None:
    """A previous invocation started the execution, then died before recording it: found, recorded."""
    req = service.submit("alice", "echo", {"message": "x"}, "crashy").request
    name = execution_name("alice", "crashy", req.incarnation)
    sfn.start_execution(stateMachineArn=ECHO, name=name, input=execution_input(req.ref, req.payload))
    sfn.stop_execution(executionArn=execution_arn(ECHO, name))
    assert service.start(insert_of(req)) == "started"
    assert service.requests.get("alice", "crashy").execution_arn == execution_arn(ECHO, name)


# -- defect 3: cancel / start ordering -------------------------------------------------------------------------


def test_cancel_that_read_pending_stops_the_execution_started_meanwhile(service: Any, sfn: Any, mgmt_api: Any) -> None:
    """Defect 3. Before: cancel read PENDING (no ARN), the stream router started the execution and marked it
    RUNNING, and cancel's terminal write (which accepted RUNNING) succeeded without stopping anything."""
    connect(service, mgmt_api)
    req = service.submit("alice", "echo", {"message": "x"}, "r").request
    stale = service.requests.get("alice", "r")
    real_get = service.requests.get
    calls = iter([stale])
    service.requests.get = lambda u, r: next(calls, None) or real_get(u, r)  # cancel reads the stale PENDING
    assert service.start(insert_of(req)) == "started"
    assert service.cancel("alice", "r") is True
    arn = real_get("alice", "r").execution_arn
    assert status_of(sfn, arn) == "ABORTED"
    assert [m["type"] for m in mgmt_api.received("c1")] == ["error"]
    assert real_get("alice", "r").status is RequestStatus.CANCELLED


def test_cancel_between_start_execution_and_mark_running_stops_it(service: Any, sfn: Any) -> None:
    """Defect 3: the cancel lands after StartExecution, before mark_running; the stream router's conditional
    write loses and it stops the execution it started."""
    req = service.submit("alice", "echo", {"message": "x"}, "r").request

    def cancel_now(**kwargs: Any) -> None:
        assert service.cancel("alice", "r") is True

    sfn.meta.events.register_first("after-call.stepfunctions.StartExecution", cancel_now)
    try:
        assert service.start(insert_of(req)) == "cancelled"
    finally:
        sfn.meta.events.unregister("after-call.stepfunctions.StartExecution", cancel_now)
    (ex,) = executions(sfn)
    assert ex["status"] == "ABORTED"
    assert service.requests.get("alice", "r").status is RequestStatus.CANCELLED


def test_cancel_before_start_execution_is_stopped_when_started(service: Any, sfn: Any) -> None:
    """Defect 3: a record handled after the cancel (nothing in its batch showed it) starts the execution, and
    the lost conditional write stops it at once."""
    req = service.submit("alice", "echo", {"message": "x"}, "r").request
    assert service.cancel("alice", "r") is True
    assert service.start(insert_of(req)) == "cancelled"
    assert [e["status"] for e in executions(sfn)] == ["ABORTED"]
    assert service.replay("alice", "r", 0)[-1].body["status"] == "CANCELLED"


def test_cancel_after_a_stream_router_crashed_between_start_and_mark_running_stops_it(service: Any, sfn: Any) -> None:
    """Defect 3, found by the stateful test: the stream router started the execution and died before
    ``mark_running``, so the request is PENDING with no ARN while its execution runs. Cancel names the
    incarnation's execution itself (its name is derived from the request) and stops it; before, it stopped
    nothing and the execution ran to completion unless the record was redelivered."""
    req = service.submit("alice", "echo", {"message": "x"}, "r").request
    name = execution_name("alice", "r", req.incarnation)
    sfn.start_execution(stateMachineArn=ECHO, name=name, input=execution_input(req.ref, req.payload))
    assert service.cancel("alice", "r") is True
    assert status_of(sfn, execution_arn(ECHO, name)) == "ABORTED"
    assert service.requests.get("alice", "r").status is RequestStatus.CANCELLED
    assert service.start(insert_of(req)) == "cancelled"  # the record, redelivered later: nothing restarts


def test_cancel_after_running_stops_the_execution(service: Any, sfn: Any) -> None:
    req = service.submit("alice", "echo", {"message": "x"}, "r").request
    service.start(insert_of(req))
    assert service.cancel("alice", "r") is True
    assert [e["status"] for e in executions(sfn)] == ["ABORTED"]
    assert service.cancel("alice", "r") is False  # already ended


# -- defect 4: nothing after the terminal event ----------------------------------------------------------------


def test_progress_after_the_terminal_event_stores_nothing(service: Any, sfn: Any, mgmt_api: Any) -> None:
    """Defect 4. Before: progress() checked the status, then appended without a condition, so a step still
    reporting after its Task timed out wrote progress after the terminal event. Now the seq claim is the
    condition: refused in the same write."""
    connect(service, mgmt_api)
    ref = service.submit("alice", "echo", {}, "r").request.ref
    assert service.progress(ref, "echo", 10, "a").seq == 1
    assert service.finish(ref, RequestStatus.TIMED_OUT, message="too slow").seq == 2
    assert service.progress(ref, "echo", 90, "still reporting") is None
    with pytest.raises(TerminalAlreadyError):
        service.emit(ref, {"type": "progress", "step": "echo", "percent": 95, "message": ""})
    assert stored_seqs(service, ref.request_key) == [1]  # the terminal event (seq 2) is the request item
    events = service.replay("alice", "r", 0)
    assert [(e.seq, e.body["type"]) for e in events] == [(1, "progress"), (2, "error")]
    assert service.replay("alice", "r", 2) == []
    assert [m["seq"] for m in mgmt_api.received("c1")] == [1, 2]


def test_racing_progress_and_terminal_writes_keep_the_terminal_last(service: Any) -> None:
    """Defect 4 under concurrency: writers racing the terminal write never land after it, and seqs stay
    gap-free."""
    import threading

    ref = service.submit("alice", "echo", {}, "race").request.ref
    barrier = threading.Barrier(5)

    def writer(n: int) -> None:
        barrier.wait()
        for i in range(10):
            service.progress(ref, f"w{n}", i, "")

    def ender() -> None:
        barrier.wait()
        service.finish(ref, RequestStatus.SUCCEEDED, output={})

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(4)] + [threading.Thread(target=ender)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    req = service.requests.get("alice", "race")
    events = service.replay("alice", "race", 0)
    assert [e.seq for e in events] == list(range(1, req.last_seq + 1))
    assert events[-1].body["type"] == "result"
    assert max(stored_seqs(service, ref.request_key), default=0) < req.last_seq


# -- defect 5: the reconciler ----------------------------------------------------------------------------------


def aged(service: Any, seconds: int) -> None:
    """Move the service's clock forward."""
    base = service.clock
    service.clock = lambda: base() + seconds


def test_reconciler_redrives_a_request_left_pending(service: Any, sfn: Any) -> None:
    """Defect 5. Before: a request whose stream record was given up on stayed PENDING for ever."""
    service.submit("alice", "echo", {"message": "x"}, "lost")
    assert Reconciler(service).sweep().examined == 0  # too young
    aged(service, service.settings.reconcile_pending_after_seconds + 1)
    report = Reconciler(service).sweep()
    assert report.outcomes == {"redriven:running": 1} and report.errors == 0
    req = service.requests.get("alice", "lost")
    assert req.status is RequestStatus.RUNNING and status_of(sfn, req.execution_arn) == "RUNNING"
    assert len(executions(sfn)) == 1


def test_reconciler_finishes_the_start_a_crashed_stream_router_began(service: Any, sfn: Any) -> None:
    """Defect 5: StartExecution happened, mark_running did not: the re-drive finds the execution (the same
    name), records it, and starts nothing new."""
    req = service.submit("alice", "echo", {"message": "x"}, "half").request
    sfn.start_execution(
        stateMachineArn=ECHO,
        name=execution_name("alice", "half", req.incarnation),
        input=execution_input(req.ref, req.payload),
    )
    aged(service, service.settings.reconcile_pending_after_seconds + 1)
    assert Reconciler(service).sweep().outcomes == {"redriven:running": 1}
    assert len(executions(sfn)) == 1
    assert service.requests.get("alice", "half").status is RequestStatus.RUNNING


def test_reconciler_ends_a_running_request_whose_execution_ended_unnoticed(
    service: Any, sfn: Any, mgmt_api: Any
) -> None:
    """Defect 5. Before: an execution that ended while the notify and status-change paths both failed left
    its request RUNNING for ever. Now: its mapped terminal status, exactly one terminal event."""
    connect(service, mgmt_api)
    req = service.submit("alice", "echo", {"message": "x"}, "orphan").request
    service.start(insert_of(req))
    service.progress(req.ref, "echo", 50, "half way")
    arn = service.requests.get("alice", "orphan").execution_arn
    sfn.stop_execution(executionArn=arn, error="Ops.Stopped", cause="by hand")  # nobody told the request
    aged(service, service.settings.reconcile_running_after_seconds + 1)
    assert Reconciler(service).sweep().outcomes == {"ended": 1}
    assert Reconciler(service).sweep().examined == 0  # left the by_open index with its terminal write
    st = service.status("alice", "orphan")
    assert (st["status"], st["code"], st["last_seq"]) == ("CANCELLED", "CANCELLED", 2)
    assert [m["type"] for m in mgmt_api.received("c1")] == ["progress", "error"]


def test_reconciler_ends_a_request_whose_execution_was_lost_and_one_running_too_long(service: Any, sfn: Any) -> None:
    """Defect 5: RUNNING with no execution → INTERNAL_ERROR; still running past the give-up bound → stopped,
    TIMED_OUT/TIMEOUT. Each ends exactly once."""
    lost = service.submit("alice", "echo", {"message": "x"}, "lost").request
    service.requests.mark_running(lost.ref, execution_arn(ECHO, "no-such-execution"), service.now())
    long = service.submit("alice", "echo", {"message": "x"}, "long").request
    service.start(insert_of(long))
    aged(service, service.settings.reconcile_give_up_after_seconds + 1)
    report = Reconciler(service).sweep()
    assert report.outcomes == {"ended": 2}
    a, b = service.requests.get("alice", "lost"), service.requests.get("alice", "long")
    assert (a.status, a.error_code) == (RequestStatus.FAILED, "INTERNAL_ERROR")
    assert (b.status, b.error_code) == (RequestStatus.TIMED_OUT, "TIMEOUT")
    assert status_of(sfn, b.execution_arn) == "ABORTED"
    assert a.last_seq == b.last_seq == 1


def test_reconciler_gives_up_on_a_request_that_cannot_start(service: Any, sfn: Any) -> None:
    """Defect 5: a request that still cannot be started after the give-up bound ends INTERNAL_ERROR; before
    it, a failing start is counted and retried by the next sweep."""
    service.submit("alice", "echo", {"message": "x"}, "stuck")

    def fail(**kwargs: Any) -> None:
        raise RuntimeError("Step Functions is down")

    sfn.meta.events.register("before-call.stepfunctions.StartExecution", fail)
    try:
        aged(service, service.settings.reconcile_pending_after_seconds + 1)
        assert Reconciler(service).sweep().errors == 1
        assert service.requests.get("alice", "stuck").status is RequestStatus.PENDING
        aged(service, service.settings.reconcile_give_up_after_seconds)
        assert Reconciler(service).sweep().outcomes == {"ended": 1}
    finally:
        sfn.meta.events.unregister("before-call.stepfunctions.StartExecution", fail)
    req = service.requests.get("alice", "stuck")
    assert (req.status, req.error_code, req.last_seq) == (RequestStatus.FAILED, "INTERNAL_ERROR", 1)


def test_reconciler_handler_sweeps(service: Any, sfn: Any) -> None:
    service.submit("alice", "echo", {"message": "x"}, "r")
    aged(service, service.settings.reconcile_pending_after_seconds + 1)
    out = reconciler_handler.handler({"detail-type": "Scheduled Event", "source": "aws.events"}, None)
    assert out == {"examined": 1, "errors": 0, "outcomes": {"redriven:running": 1}}


def test_the_open_index_holds_only_requests_that_have_not_ended(service: Any, sfn: Any) -> None:
    for rid in ("a", "b", "c"):
        service.submit("alice", "echo", {}, rid)
    service.cancel("alice", "b")
    later = service.now() + 10
    found = sorted(rid for shard in range(8) for _, rid in service.requests.open_before(str(shard), later))
    assert found == ["a", "c"]


# -- defect 6: values DynamoDB cannot store --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("payload", "loc", "kind"),
    [
        ('{"x": NaN}', ["payload", "x"], "number_not_finite"),
        ('{"x": [1, -Infinity]}', ["payload", "x", "1"], "number_not_finite"),
        ('{"x": 1234567890123456789012345678901234567890}', ["payload", "x"], "number_too_precise"),
        ('{"x": 1e300}', ["payload", "x"], "number_out_of_range"),
        ('{"x": {"y": "\\ud800"}}', ["payload", "x", "y"], "string_unicode"),
        ('{"\\udfff": 1}', ["payload"], "string_unicode"),
        ('{"a":' * 40 + "1" + "}" * 40, None, "too_deep"),
    ],
)
def test_unstorable_values_are_a_validation_error_and_store_nothing(
    service: Any, sfn: Any, mgmt_api: Any, caplog: pytest.LogCaptureFixture, payload: str, loc: Any, kind: str
) -> None:
    """Defect 6. Before: these passed validation, DynamoDB (or boto3's serializer) refused the item, and the
    client got INTERNAL_ERROR with a stack trace in the log."""
    connect(service, mgmt_api)
    router = Router(service, lambda: {"echo": _Echo()}, rate_limit_per_minute=1000)
    frame = '{"action": "submit", "workflow": "echo", "request_id": "bad", "payload": ' + payload + "}"
    (reply,) = router.handle_message("c1", frame)
    assert reply["type"] == "error" and reply["code"] == "VALIDATION_ERROR", reply
    assert any(d["type"] == kind and (loc is None or d["loc"] == loc) for d in reply["details"]), reply
    assert service.requests.get("alice", "bad") is None
    assert not [r for r in caplog.records if r.exc_info]  # no stack trace logged
    assert router.handle_message("c1", '{"action": "ping"}') == [{"type": "pong"}]  # still usable


def test_storable_edge_values_still_pass(service: Any, sfn: Any) -> None:
    action = parse_action(
        '{"action": "submit", "workflow": "echo", "payload": {"big": 99999999999999999999999999999999999999,'
        ' "small": 1e-129, "text": "\\ud83d\\ude00 ok", "f": 1.5}}'
    )
    req = service.submit("alice", "echo", action.payload, "edge").request  # type: ignore[attr-defined]
    assert service.requests.get("alice", "edge").payload == req.payload
    with pytest.raises(ProtocolError) as exc:
        parse_action('{"action": "submit", "workflow": "echo", "payload": {"x": NaN}}')
    assert exc.value.code is ErrorCode.VALIDATION_ERROR


class _Echo:
    name = "echo"
    description = "echo"
    payload_model = None


def test_stream_record_image_carries_what_start_needs(service: Any) -> None:
    """The stream router starts a request from its INSERT image alone (no read first)."""
    req = service.submit("alice", "echo", {"message": "x"}, "img").request
    image = to_ddb(req.model_dump(mode="json"))
    insert = RequestInsert.from_record({"eventName": "INSERT", "dynamodb": {"NewImage": image}})
    assert insert is not None and insert.incarnation == req.incarnation and insert.payload == {"message": "x"}


# -- the reconciler's local schedule -------------------------------------------------------------------------


def test_the_local_task_invokes_the_reconciler_function_with_a_scheduled_event(service: Any, sfn: Any) -> None:
    """``streamer local``'s stand-in for the EventBridge schedule: the real handler, a scheduled event, and a
    failed sweep counted (the next one retries)."""
    from streamer.local.invoke import InvokeResult
    from streamer.local.reconciler_task import FUNCTION, ReconcilerTask

    service.submit("alice", "echo", {"message": "x"}, "r")
    aged(service, service.settings.reconcile_pending_after_seconds + 1)
    seen: list[tuple[str, dict[str, Any]]] = []

    def invoke(name: str, event: dict[str, Any]) -> InvokeResult:
        seen.append((name, event))
        return InvokeResult(ok=True, payload=reconciler_handler.handler(event, None))

    task = ReconcilerTask(invoke, interval=0.01)
    assert task.sweep() is True
    assert task.last == {"examined": 1, "errors": 0, "outcomes": {"redriven:running": 1}}
    (name, event), *_ = seen
    assert name == FUNCTION and event["detail-type"] == "Scheduled Event" and event["source"] == "aws.events"
    down = ReconcilerTask(lambda n, e: InvokeResult(ok=False, transport_error="connection refused"), interval=0.01)
    assert down.sweep() is False and down.failures == 1


def test_the_local_task_runs_until_stopped() -> None:
    import threading

    from streamer.local.invoke import InvokeResult
    from streamer.local.reconciler_task import ReconcilerTask

    swept = threading.Event()

    def invoke(name: str, event: dict[str, Any]) -> InvokeResult:
        swept.set()
        return InvokeResult(ok=True, payload={})

    task = ReconcilerTask(invoke, interval=0.01)
    t = threading.Thread(target=task.run)
    t.start()
    assert swept.wait(5)
    task.stop()
    t.join(5)
    assert not t.is_alive() and task.sweeps >= 1


def test_two_workers_on_the_same_records_start_one_execution_each(service: Any, sfn: Any) -> None:
    """Defect 2 (kept), concurrent: two stream-router workers handle the same 20 INSERT records at the same
    time (a retried batch overlapping its first delivery); each request gets exactly one execution."""
    import threading

    reqs = [service.submit("alice", "echo", {"message": str(i)}, f"w-{i}").request for i in range(20)]
    outcomes: list[str] = []
    barrier = threading.Barrier(2)

    def worker() -> None:
        barrier.wait()
        for req in reqs:
            outcomes.append(service.start(insert_of(req)))

    threads = [threading.Thread(target=worker) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    names = [e["name"] for e in executions(sfn)]
    assert len(names) == len(set(names)) == 20
    assert sorted(set(outcomes)) <= ["skipped", "started"] and outcomes.count("started") == 20
    assert all(service.requests.get("alice", r.request_id).status is RequestStatus.RUNNING for r in reqs)
