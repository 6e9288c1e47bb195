"""A Hypothesis state machine over the request lifecycle (issue 10's invariants), against moto in-process.

Rules: connect, drop a connection (no close frame, no ``$disconnect``: its row stays), submit, duplicate submit,
redeliver a stream record (of this incarnation or an expired one), start, cancel, progress, finish (from this
incarnation's execution or a stale one), expire (TTL) + resubmit the same id, resume, a stream router that
crashes between StartExecution and ``mark_running``, and a reconciler sweep (after which nothing is left
PENDING). After every step the invariants hold:

* at most one execution per incarnation (its name is derived from it), and none for an incarnation that was
  never started;
* the events of a request (``resume`` from 0) have seqs 1..``last_seq`` without a gap, at most one terminal
  event, and when the request has ended exactly one, the last;
* nothing stored after the terminal event (no events-table item at or past the terminal seq);
* a cancelled request's execution is not running;
* an expired request's events are never read by its successor (its request key is another);
* every open connection of the user keeps its row and receives each request's events in seq order, each at most
  once, the terminal one last; a dropped connection's row is gone once an event was pushed to the user;
* another user's open connection receives nothing.
"""

from __future__ import annotations

import contextlib
import uuid
from typing import Any

import boto3
import pytest
from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule
from moto import mock_aws

from streamer.aws.connections import ConnectionManager
from streamer.aws.executions import Executions, execution_arn, execution_input, execution_name
from streamer.aws.store import ConnectionStore, EventStore, RequestStore
from streamer.config import Settings
from streamer.errors import ProtocolError
from streamer.events import RequestInsert
from streamer.local.moto_atomic import serialize_dynamodb
from streamer.models import Request, RequestRef
from streamer.protocol import RequestStatus
from streamer.reconciler import Reconciler
from streamer.service import RequestService
from tests.conftest import ManagementApi
from tests.functional.conftest import create_tables

ECHO = "arn:aws:states:us-east-1:123456789012:stateMachine:streamer-echo"
IDS = st.sampled_from(["a", "b", "c"])
ENDINGS = st.sampled_from([RequestStatus.SUCCEEDED, RequestStatus.FAILED, RequestStatus.TIMED_OUT])

_SHARED: dict[str, Any] = {}


def shared_service() -> RequestService:
    """One moto backend and service for every example (each example has its own user)."""
    if "service" not in _SHARED:
        serialize_dynamodb()
        mock = mock_aws(config={"stepfunctions": {"execute_state_machine": False}})
        mock.start()
        _SHARED["mock"] = mock
        ddb = boto3.client("dynamodb", region_name="us-east-1")
        create_tables(ddb)
        sfn = boto3.client("stepfunctions", region_name="us-east-1")
        sfn.create_state_machine(
            name="streamer-echo",
            definition='{"StartAt": "P", "States": {"P": {"Type": "Pass", "End": true}}}',
            roleArn="arn:aws:iam::123456789012:role/sfn",
        )
        s = Settings()
        api = _SHARED["api"] = ManagementApi()
        _SHARED["service"] = RequestService(
            s,
            connections=ConnectionStore(s.connections_table, ddb),
            requests=RequestStore(s.requests_table, ddb),
            events=EventStore(s.events_table, ddb),
            # A Management API that knows which connections are open (410 for the others) and what each got.
            manager=ConnectionManager(api.url, max_retries=0),
            executions=Executions(s.state_machine_arn_prefix, sfn),
        )
    service: RequestService = _SHARED["service"]
    return service


class Lifecycle(RuleBasedStateMachine):
    @initialize()
    def setup(self) -> None:
        self.svc = shared_service()
        self.sfn = self.svc.executions.client
        self.user = f"u-{uuid.uuid4().hex[:12]}"
        #: every stored image (incarnation) per request id, oldest first
        self.images: dict[str, list[Request]] = {}
        #: incarnations whose INSERT was handled at least once (start or redeliver)
        self.started: set[str] = set()
        self.api: ManagementApi = _SHARED["api"]
        #: this example's connection ids: open ones, and dropped ones whose row may still be there
        self.open: set[str] = set()
        self.dropped: set[str] = set()
        self.gone: set[str] = set()  # dropped, and their rows found gone
        #: per open connection: (index in what it received, request id) where that id's successor begins
        self.successors: dict[str, list[tuple[int, str]]] = {}
        # Another user's open connection: it must never receive anything of this user's.
        self.bystander = f"{self.user}-other"
        self._connect_row(self.bystander, f"{self.user}-x")
        self.api.open(self.bystander)

    def _connect_row(self, cid: str, user: str) -> None:
        from streamer.models import Connection

        now = self.svc.now()
        self.svc.connections.put(Connection(connection_id=cid, user_id=user, connected_at=now, expires_at=now + 3600))

    def pushed(self) -> None:
        """An event went to the user: every dropped connection's row met its 410 and is gone."""
        for cid in self.dropped:
            assert self.svc.connections.get(cid) is None, f"stale row {cid} kept after a push"
        self.gone |= self.dropped
        self.dropped.clear()

    # -- helpers ---------------------------------------------------------------------------------------------

    def current(self, rid: str) -> Request | None:
        return self.svc.requests.get(self.user, rid)

    def refs(self, rid: str) -> list[RequestRef]:
        return [img.ref for img in self.images.get(rid, [])]

    # -- rules -----------------------------------------------------------------------------------------------

    @rule()
    def connect(self) -> None:
        cid = f"{self.user}-c{len(self.open) + len(self.dropped) + len(self.gone)}"  # ids are never reused
        self._connect_row(cid, self.user)
        self.api.open(cid)
        self.open.add(cid)

    @rule(which=st.integers(0, 7))
    def drop(self, which: int) -> None:
        if self.open:  # gone without a close frame and without $disconnect: its row stays
            cid = sorted(self.open)[which % len(self.open)]
            self.api.close(cid)
            self.open.discard(cid)
            self.dropped.add(cid)

    @rule(rid=IDS)
    def submit(self, rid: str) -> None:
        result = self.svc.submit(self.user, "echo", {"id": rid}, rid)
        if result.created:
            self.images.setdefault(rid, []).append(result.request)
        else:  # a duplicate submit: the same incarnation
            assert result.request.incarnation == self.images[rid][-1].incarnation

    @rule(rid=IDS)
    def conflicting_submit(self, rid: str) -> None:
        if rid not in self.images or self.current(rid) is None:
            return
        with pytest.raises(ProtocolError):
            self.svc.submit(self.user, "echo", {"id": rid, "other": True}, rid)

    @rule(rid=IDS, stale=st.booleans())
    def redeliver(self, rid: str, stale: bool) -> None:
        images = self.images.get(rid)
        if not images:
            return
        image = images[0] if stale else images[-1]
        self.svc.start(RequestInsert.model_validate(image.model_dump(mode="json")))
        self.started.add(image.incarnation)

    @rule(rid=IDS)
    def cancel(self, rid: str) -> None:
        try:
            if self.svc.cancel(self.user, rid):
                self.pushed()
        except ProtocolError:
            assert self.current(rid) is None

    @rule(rid=IDS, stale=st.booleans(), pct=st.integers(0, 100))
    def progress(self, rid: str, stale: bool, pct: int) -> None:
        refs = self.refs(rid)
        if refs and self.svc.progress(refs[0] if stale else refs[-1], "s", pct, "") is not None:
            self.pushed()

    @rule(rid=IDS, stale=st.booleans(), status=ENDINGS)
    def finish(self, rid: str, stale: bool, status: RequestStatus) -> None:
        refs = self.refs(rid)
        if refs and self.svc.finish(refs[0] if stale else refs[-1], status, output={"ok": True}) is not None:
            self.pushed()

    @rule(rid=IDS)
    def expire_and_resubmit(self, rid: str) -> None:
        if self.current(rid) is None:
            return
        self.svc.requests.client.delete_item(
            TableName=self.svc.requests.table, Key={"user_id": {"S": self.user}, "request_id": {"S": rid}}
        )
        for cid in self.open:  # from here on, rid's frames are the successor's: its seqs start again
            self.successors.setdefault(cid, []).append((len(self.api.received(cid)), rid))
        self.submit(rid)

    @rule(rid=IDS)
    def crash_after_start_execution(self, rid: str) -> None:
        """The stream router started the execution, then died before ``mark_running``."""
        req = self.current(rid)
        if req is None or req.status is not RequestStatus.PENDING:
            return
        name = execution_name(self.user, rid, req.incarnation)
        with contextlib.suppress(self.sfn.exceptions.ExecutionAlreadyExists):
            self.sfn.start_execution(stateMachineArn=ECHO, name=name, input=execution_input(req.ref, req.payload))
        self.started.add(req.incarnation)

    @rule()
    def reconcile(self) -> None:
        """A sweep with every bound passed: nothing of this user is left PENDING, and nothing fails."""
        report = Reconciler(self.svc, pending_after=0, running_after=0, give_up_after=10**9).sweep()
        assert report.errors == 0, report
        for rid in self.images:
            req = self.current(rid)
            if req is not None:
                assert req.status is not RequestStatus.PENDING
                self.started.add(req.incarnation)

    @rule(rid=IDS, after=st.integers(0, 6))
    def resume(self, rid: str, after: int) -> None:
        req = self.current(rid)
        if req is None:
            return
        events = self.svc.replay(self.user, rid, after)
        assert [e.seq for e in events] == list(range(after + 1, req.last_seq + 1))

    # -- invariants ------------------------------------------------------------------------------------------

    @invariant()
    def one_execution_per_incarnation(self) -> None:
        if not hasattr(self, "svc"):
            return
        names = [e["name"] for e in self.sfn.list_executions(stateMachineArn=ECHO)["executions"]]
        for rid, images in self.images.items():
            for img in images:
                n = names.count(execution_name(self.user, rid, img.incarnation))
                assert n <= 1
                if img.incarnation not in self.started:
                    assert n == 0

    @invariant()
    def gap_free_one_terminal_last_nothing_after(self) -> None:
        if not hasattr(self, "svc"):
            return
        for rid in self.images:
            req = self.current(rid)
            if req is None:
                continue
            events = self.svc.replay(self.user, rid, 0)
            assert [e.seq for e in events] == list(range(1, req.last_seq + 1))
            terminal = [e for e in events if e.body["type"] in ("result", "error")]
            if req.status.terminal:
                assert len(terminal) == 1 and terminal[0] is events[-1]
                stored = [e.seq for e in self.svc.events.after(req.ref.request_key, 0)]
                assert all(seq < req.last_seq for seq in stored)
            else:
                assert terminal == []
            # A successor never reads a predecessor's events: every event carries this incarnation's key.
            assert all(e.request_key == req.ref.request_key for e in events)

    @invariant()
    def connections_get_each_event_once_in_order_and_others_nothing(self) -> None:
        if not hasattr(self, "svc"):
            return
        assert self.api.received(self.bystander) == []
        for cid in self.open:
            assert self.svc.connections.get(cid) is not None, f"open connection {cid} lost its row"
            last: dict[str, int] = {}
            starts = list(self.successors.get(cid, []))  # in order of their index
            for i, frame in enumerate(self.api.received(cid)):
                while starts and starts[0][0] <= i:
                    last[starts.pop(0)[1]] = 0  # a successor incarnation from here: its seqs start again
                rid, seq = frame["request_id"], frame["seq"]
                assert seq > last.get(rid, 0), f"{cid}: {rid} seq {seq} after {last.get(rid)} (twice or out of order)"
                last[rid] = seq

    @invariant()
    def cancelled_executions_are_stopped(self) -> None:
        if not hasattr(self, "svc"):
            return
        for rid, images in self.images.items():
            req = self.current(rid)
            if req is None or req.status is not RequestStatus.CANCELLED:
                continue
            arn = execution_arn(ECHO, execution_name(self.user, rid, req.incarnation))
            described = self.svc.executions.describe(arn)
            assert described is None or described["status"] != "RUNNING"


Lifecycle.TestCase.settings = settings(
    max_examples=25,
    stateful_step_count=20,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
    # No "explain" phase: it replays a failure under a line tracer, which on a loaded machine takes longer than
    # the failure itself and hides it behind a timeout. Shrinking still gives the minimal failing steps.
    phases=[Phase.explicit, Phase.reuse, Phase.generate, Phase.shrink],
)
TestLifecycle = Lifecycle.TestCase

#: 25 examples x 20 steps on in-process moto: seconds alone, minutes on a 2-core machine running the e2e stacks.
pytestmark = pytest.mark.timeout(900)


def teardown_module() -> None:
    api = _SHARED.pop("api", None)
    if api is not None:
        api.stop()
    mock = _SHARED.pop("mock", None)
    _SHARED.clear()
    if mock is not None:
        mock.stop()
