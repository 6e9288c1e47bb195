"""How to reach one deployment: a running ``streamer local`` (its state file) or a CloudFormation stack.

A :class:`Sources` holds the settings (table names, the state machine ARN prefix), boto3 DynamoDB and Step
Functions clients bound to that deployment (built by ``streamer.aws.clients``), a
:class:`~streamer.service.RequestService` for the actions that change a request (cancel, rerun) — the same
code path as the WebSocket protocol's, so the request's clients are told — and, for a ``streamer local``, the
file its handlers write their EMF metrics to (:attr:`Sources.metrics_file`, the overview's source).

``--stack NAME`` reads the deployment from the stack's outputs (``RequestsTableName``, ``EventsTableName``,
``ConnectionsTableName``, ``StateMachineArnPrefix``, ``ManagementApiEndpoint`` in ``infra/template.yaml``);
a stack deployed before the table-name outputs existed is read from its resources (``ListStackResources``)
instead. boto3 honours ``AWS_ENDPOINT_URL``, which is how the tests point it at moto.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from botocore.exceptions import BotoCoreError, ClientError

from streamer.aws import clients
from streamer.config import Settings
from streamer.errors import StreamerError
from streamer.observe.localstate import LocalState, read_state

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient
    from mypy_boto3_stepfunctions import SFNClient

    from streamer.aws.executions import Executions
    from streamer.service import RequestService

__all__ = ["SourceError", "Sources"]

#: Logical ids of the template's tables → the stack outputs that name them (and the Settings field).
_TABLES = {
    "ConnectionsTable": ("ConnectionsTableName", "connections_table"),
    "RequestsTable": ("RequestsTableName", "requests_table"),
    "EventsTable": ("EventsTableName", "events_table"),
}


class SourceError(StreamerError):
    """The deployment cannot be reached or read (a stack without the expected outputs, bad credentials)."""


@dataclass
class Sources:
    """One deployment's data sources. Build with :meth:`local` or :meth:`stack`."""

    settings: Settings
    dynamodb: DynamoDBClient
    stepfunctions: SFNClient
    region: str
    #: API Gateway Management API endpoint (pushes of cancel's terminal event); None: no pushes.
    apigw_endpoint: str | None = None
    #: True against AWS: executions have console links.
    aws: bool = False
    stack_name: str | None = None
    local_state: LocalState | None = None
    _session: Any = None
    _service: RequestService | None = None
    _executions: Executions | None = None

    # -- construction ---------------------------------------------------------------------------

    @classmethod
    def local(cls, state_file: Path | None = None) -> Sources:
        """The running ``streamer local`` recorded in ``state_file`` (default: the per-user state file)."""
        return cls.from_state(read_state(state_file))

    @classmethod
    def from_state(cls, state: LocalState) -> Sources:
        """A ``streamer local`` described by ``state`` (in-process users: ``localstate.state_of(stack)``)."""
        # moto accepts any credentials; fixed ones keep a developer's AWS profile out of it.
        sess = clients.session(region=state.region, local=True)
        return cls(
            settings=Settings(
                connections_table=state.connections_table,
                requests_table=state.requests_table,
                events_table=state.events_table,
                state_machine_arn_prefix=state.state_machine_arn_prefix,
                apigw_endpoint=state.http_url,
            ),
            dynamodb=clients.client("dynamodb", endpoint_url=state.moto_url, from_session=sess),
            stepfunctions=clients.client("stepfunctions", endpoint_url=state.sfn_url, from_session=sess),
            region=state.region,
            apigw_endpoint=state.http_url,
            local_state=state,
            _session=sess,
        )

    @classmethod
    def stack(cls, *, profile: str | None = None, region: str | None = None, stack: str) -> Sources:
        """A deployed stack, read from its CloudFormation outputs (``--profile``/``--region``/``--stack``)."""
        try:
            sess = clients.session(profile=profile, region=region)
        except BotoCoreError as exc:  # ProfileNotFound …
            raise SourceError(str(exc)) from exc
        if not sess.region_name:
            raise SourceError("no AWS region: pass --region or set AWS_REGION / a profile region")
        cfn = clients.client("cloudformation", from_session=sess, max_attempts=5)
        try:
            described = cfn.describe_stacks(StackName=stack)["Stacks"]
        except ClientError as exc:
            raise SourceError(f"stack {stack!r}: {exc.response.get('Error', {}).get('Message', exc)}") from exc
        except BotoCoreError as exc:
            raise SourceError(f"stack {stack!r}: {exc}") from exc
        if not described:
            raise SourceError(f"stack {stack!r} does not exist")
        outputs = {o["OutputKey"]: o.get("OutputValue", "") for o in described[0].get("Outputs", [])}
        prefix = outputs.get("StateMachineArnPrefix")
        if not prefix:
            raise SourceError(f"stack {stack!r} has no StateMachineArnPrefix output (is it a streamer stack?)")
        tables: dict[str, str] = {}
        missing = [lid for lid, (out, _) in _TABLES.items() if not outputs.get(out)]
        physical: dict[str, str] = {}
        if missing:  # deployed before the table-name outputs: the resources name them
            paginator = cfn.get_paginator("list_stack_resources")
            for page in paginator.paginate(StackName=stack):
                for res in page.get("StackResourceSummaries", []):
                    physical[res["LogicalResourceId"]] = res.get("PhysicalResourceId", "")
        for lid, (out, field) in _TABLES.items():
            name = outputs.get(out) or physical.get(lid)
            if not name:
                raise SourceError(f"stack {stack!r}: neither an output {out} nor a resource {lid}")
            tables[field] = name
        endpoint = outputs.get("ManagementApiEndpoint") or None
        return cls(
            settings=Settings(
                connections_table=tables["connections_table"],
                requests_table=tables["requests_table"],
                events_table=tables["events_table"],
                state_machine_arn_prefix=prefix,
                apigw_endpoint=endpoint,
            ),
            dynamodb=clients.client("dynamodb", from_session=sess, max_attempts=5),
            stepfunctions=clients.client("stepfunctions", from_session=sess, max_attempts=5),
            region=sess.region_name,
            apigw_endpoint=endpoint,
            aws=True,
            stack_name=stack,
            _session=sess,
        )

    # -- derived --------------------------------------------------------------------------------

    @property
    def metrics_file(self) -> Path | None:
        """The EMF metrics file of a ``streamer local`` (None: a deployed stack, or a state file without it)."""
        if self.local_state is None or not self.local_state.metrics_file:
            return None
        return Path(self.local_state.metrics_file)

    def console_url(self, execution_arn: str | None) -> str | None:
        """The AWS console page of an execution (None locally: there is no AWS console)."""
        if not self.aws or not execution_arn:
            return None
        region = self.region
        return (
            f"https://{region}.console.aws.amazon.com/states/home?region={region}"
            f"#/v2/executions/details/{quote(execution_arn, safe=':')}"
        )

    def workflow_of(self, state_machine_arn: str) -> str | None:
        prefix = self.settings.state_machine_arn_prefix
        return state_machine_arn[len(prefix) :] if state_machine_arn.startswith(prefix) else None

    @property
    def executions(self) -> Executions:
        """The Step Functions adapter (``streamer.aws.executions``) over this deployment's client."""
        if self._executions is None:
            from streamer.aws.executions import Executions

            self._executions = Executions(self.settings.state_machine_arn_prefix, client=self.stepfunctions)
        return self._executions

    def workflows(self) -> list[str]:
        """The deployed workflows: state machines named with the prefix (ListStateMachines, every page)."""
        out: list[str] = []
        for page in self.stepfunctions.get_paginator("list_state_machines").paginate():
            for sm in page.get("stateMachines", []):
                workflow = self.workflow_of(sm["stateMachineArn"])
                if workflow:
                    out.append(workflow)
        return sorted(out)

    @property
    def service(self) -> RequestService:
        """The request lifecycle over this deployment's tables (cancel and rerun go through it)."""
        if self._service is None:
            from streamer.aws.connections import ConnectionManager
            from streamer.aws.store import ConnectionStore, EventStore, RequestStore
            from streamer.service import RequestService

            s = self.settings
            apigw = None
            if self.apigw_endpoint:
                apigw = clients.client(
                    "apigatewaymanagementapi", endpoint_url=self.apigw_endpoint, from_session=self._session
                )
            connections = ConnectionStore(s.connections_table, client=self.dynamodb)
            self._service = RequestService(
                s,
                connections=connections,
                requests=RequestStore(s.requests_table, client=self.dynamodb),
                events=EventStore(s.events_table, client=self.dynamodb, ttl_seconds=s.request_ttl_seconds),
                manager=ConnectionManager(self.apigw_endpoint, client=apigw),
                executions=self.executions,
            )
        return self._service

    def describe(self) -> str:
        """What this points at, for messages."""
        return f"stack {self.stack_name} ({self.region})" if self.aws else "streamer local"
