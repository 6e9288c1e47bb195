"""``streamer statemachines validate`` and ``streamer statemachines deploy``.

``validate`` checks definitions against the platform's rules (:func:`streamer.deploy.statemachines.validate`);
``deploy`` creates or updates the workflows' Step Functions state machines — only those, not the stack (the
stack, state machines included, is deployed with ``sam deploy``: docs/deploy.md). Without PATHs both take the
project's definitions — ``--project-dir DIR``'s ``statemachines/``, else ``$STREAMER_STATEMACHINES_DIR``, else
the copies bundled with the package — plus the definitions plugins ship.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from streamer.config import Settings
from streamer.deploy.statemachines import DEFAULT_NAME_PREFIX

__all__ = ["DESCRIPTION", "HELP", "arguments"]

HELP = "validate the workflows' state machine definitions, or deploy them to Step Functions"
DESCRIPTION = """`validate` checks definitions against the platform's rules; `deploy` creates or updates the
workflows' Step Functions state machines, and nothing else of the stack (`sam deploy` deploys the stack:
docs/deploy.md). Without PATHs both take the project's definitions (--project-dir DIR's statemachines/, else
$STREAMER_STATEMACHINES_DIR, else the ones bundled with streamer) plus those plugins ship."""


def _definitions(args: argparse.Namespace) -> dict[str, Path]:
    from streamer.deploy.statemachines import default_directory, discover, workflow_name

    if args.paths:
        return {workflow_name(p): Path(p) for p in args.paths}
    return discover(default_directory(args.project_dir))


def _validate(args: argparse.Namespace) -> int:
    from streamer.deploy.resources import ProjectFilesError
    from streamer.deploy.statemachines import validate
    from streamer.errors import PluginError

    try:
        paths = list(_definitions(args).values())
        problems = validate(paths)
    except (PluginError, ProjectFilesError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    for problem in problems:
        print(problem)
    if problems:
        print(f"{len(problems)} problem(s) in {len({p.file for p in problems})} file(s)", file=sys.stderr)
        return 1
    print(f"{len(paths)} state machine definition(s) OK")
    return 0


def _parse_substitutions(values: Sequence[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for v in values:
        name, sep, value = v.partition("=")
        if not sep or not name:
            raise ValueError(f"--substitution expects NAME=VALUE, got {v!r}")
        out[name] = value
    return out


def _default_prefix() -> str:
    arn_prefix = Settings.from_env().state_machine_arn_prefix
    return arn_prefix.rpartition(":stateMachine:")[2] if ":stateMachine:" in arn_prefix else DEFAULT_NAME_PREFIX


def _deploy(args: argparse.Namespace) -> int:
    from streamer.deploy.statemachines import (
        LOCAL_ROLE_ARN,
        deploy,
        function_arn_substitutions,
        placeholders,
        validate,
    )
    from streamer.errors import StreamerError

    try:
        defs = _definitions(args)
        if not defs:
            print("error: no state machine definitions found", file=sys.stderr)
            return 1
        if not args.no_validate:
            problems = validate(defs.values())
            for problem in problems:
                print(problem, file=sys.stderr)
            if problems:
                print("not deploying: fix the problems above (or pass --no-validate)", file=sys.stderr)
                return 1
        names: set[str] = set()
        for path in defs.values():
            names |= placeholders(Path(path).read_text(encoding="utf-8"))
        subs: dict[str, str] = {}
        if args.function_arn_prefix:
            subs.update(function_arn_substitutions(args.function_arn_prefix, names))
        subs.update(_parse_substitutions(args.substitution))
        role = args.role_arn or (LOCAL_ROLE_ARN if args.endpoint_url else None)
        results = deploy(
            defs,
            endpoint_url=args.endpoint_url,
            region=args.region,
            profile=args.profile,
            role_arn=role,
            name_prefix=args.prefix if args.prefix is not None else _default_prefix(),
            substitutions=subs,
        )
    except (ValueError, StreamerError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except Exception as exc:  # botocore errors: no credentials, access denied, endpoint down
        print(f"error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    for d in results:
        print(f"{d.action} {d.name} {d.arn}")
        if not args.endpoint_url:
            print(f"  {d.console_url}")
    return 0


def _add_sources(p: argparse.ArgumentParser, what: str) -> None:
    p.add_argument(
        "paths", nargs="*", metavar="PATH", help=f"*.asl.json files to {what} (default: every workflow's definition)"
    )
    p.add_argument(
        "--project-dir",
        type=Path,
        metavar="DIR",
        help="read the definitions from DIR/statemachines/ (default: $STREAMER_STATEMACHINES_DIR, else the "
        "ones bundled with streamer); plugins' definitions are added either way",
    )


def arguments(sm: argparse.ArgumentParser) -> None:
    sm_sub = sm.add_subparsers(dest="statemachines_command", required=True, metavar="COMMAND")

    v = sm_sub.add_parser(
        "validate",
        help="check definitions against the platform's rules (exit 1 with one line per problem)",
        description="Check state machine definitions: ASL structure (statelint), and what the platform "
        "relies on: Task timeouts, retries, a Catch of States.ALL, declared steps and workflows "
        "(docs/plugins.md). JSONPath and JSONata are both accepted.",
    )
    _add_sources(v, "check")
    v.set_defaults(func=_validate)

    d = sm_sub.add_parser(
        "deploy",
        help="create or update the workflows' state machines only (not the stack) on AWS or a local endpoint",
        description="Create or update one Step Functions state machine per definition, named PREFIX + workflow, "
        "after validating it. Deploys state machines only: the stack (tables, functions, API) is deployed "
        "with `sam deploy` (docs/deploy.md).",
    )
    _add_sources(d, "deploy")
    d.add_argument("--endpoint-url", help="a Step Functions endpoint instead of AWS (moto, Step Functions Local)")
    d.add_argument("--region", help="AWS region (default: the AWS profile's or $AWS_DEFAULT_REGION)")
    d.add_argument("--profile", help="AWS named profile (default: the default credential chain)")
    d.add_argument(
        "--role-arn", help="execution role (needed to create a state machine; a dummy one with --endpoint-url)"
    )
    d.add_argument(
        "--prefix",
        help=f"state machine name prefix (default: the one in $STREAMER_STATE_MACHINE_ARN_PREFIX, else "
        f"{DEFAULT_NAME_PREFIX!r})",
    )
    d.add_argument(
        "--substitution",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="value of a ${NAME} placeholder (repeatable; wins over --function-arn-prefix)",
    )
    d.add_argument(
        "--function-arn-prefix",
        metavar="PREFIX",
        help="${XFunctionArn} becomes PREFIX + 'XFunction', e.g. arn:aws:lambda:us-east-1:123456789012:function:",
    )
    d.add_argument("--no-validate", action="store_true", help="deploy even if validation finds problems")
    d.set_defaults(func=_deploy)
