"""Creating what the plan declares, the part CloudFormation plays on AWS: tables, then state machines.

:func:`client` is how ``streamer local`` makes its own boto3 clients for the local endpoints (fixed test
credentials, :data:`streamer.config.LOCAL_REGION`, botocore's ``standard`` retry mode, no profile or config
file). :func:`provision` creates every table of the plan (``create_table`` with the template's keys,
indexes and stream, then ``update_time_to_live``) and deploys the state machines with
``streamer.deploy.statemachines.deploy`` (created, or updated in place when they exist — an external Step
Functions such as Step Functions Local may keep them across restarts). Definitions are checked with
``streamer statemachines validate``'s rules first; problems are logged as warnings, as moto accepts some
invalid definitions (an unknown ``StartAt``) that AWS refuses. A failed deployment is a
:class:`~streamer.local.StartupError`.
"""

from __future__ import annotations

import logging
from typing import Any

from streamer.config import LOCAL_REGION
from streamer.local import StartupError
from streamer.local.lambda_endpoint import function_arn
from streamer.local.plan import STACK_NAME, LocalPlan, one_line

__all__ = ["client", "create_tables", "deploy_state_machines", "provision"]

log = logging.getLogger("streamer.local")


def client(service: str, endpoint: str) -> Any:
    """A boto3 client of ``service`` at a local ``endpoint``."""
    import boto3
    from botocore.config import Config

    return boto3.session.Session().client(
        service,  # type: ignore[call-overload]
        endpoint_url=endpoint,
        region_name=LOCAL_REGION,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        config=Config(retries={"max_attempts": 3, "mode": "standard"}),
    )


def provision(plan: LocalPlan, *, dynamodb: Any, sfn: Any) -> None:
    """Tables, then state machines, from the plan."""
    create_tables(plan, dynamodb)
    deploy_state_machines(plan, sfn)


def create_tables(plan: LocalPlan, dynamodb: Any) -> None:
    for logical_id, kwargs in plan.tables.items():
        kwargs = dict(kwargs)
        ttl = kwargs.pop("TimeToLiveSpecification", None)
        name = plan.table_names[logical_id]
        dynamodb.create_table(TableName=name, **kwargs)
        if ttl:
            dynamodb.update_time_to_live(TableName=name, TimeToLiveSpecification=ttl)
        log.info("table %s (%s)", name, logical_id)


def deploy_state_machines(plan: LocalPlan, sfn: Any) -> None:
    from streamer.deploy.statemachines import LOCAL_ROLE_ARN, deploy, validate

    if not plan.state_machines:
        return
    problems = validate([sm.definition_path for sm in plan.state_machines], check_workflow=False)
    for problem in problems:
        log.warning("state machine definition %s: %s: %s", problem.file, problem.state, problem.reason)
    substitutions: dict[str, str] = {}
    for sm in plan.state_machines:
        substitutions.update({var: function_arn(fn) for var, fn in sm.substitutions.items()})
    try:
        deployed = deploy(
            {sm.workflow: sm.definition_path for sm in plan.state_machines},
            client=sfn,
            role_arn=LOCAL_ROLE_ARN,
            name_prefix=f"{STACK_NAME}-",
            substitutions=substitutions,
        )
    except Exception as exc:
        raise StartupError(f"state machines: {one_line(exc)}") from exc
    for d in deployed:
        expected = plan.state_machine_arn_prefix() + d.name[len(STACK_NAME) + 1 :]
        if d.arn != expected:
            log.warning("state machine %s has ARN %s, expected %s", d.name, d.arn, expected)
        log.info("state machine %s %s", d.name, d.action)
