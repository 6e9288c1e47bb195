"""``streamer build``: build the Lambda artifact (the template's ``CodeUri``) from the source tree, with
every plugin, and check that it imports on its own (:mod:`streamer.deploy.build`).

Exit code 0 when built (and verified, unless skipped or built for another platform), 1 otherwise with the
reason on stderr; the verification report (plugins and their steps) is printed as JSON on stdout.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

__all__ = ["DESCRIPTION", "HELP", "arguments"]

HELP = "build the Lambda artifact (streamer + every plugin + dependencies) and check it"
DESCRIPTION = """Build the Lambda artifact (the template's CodeUri) from the streamer source tree with every
plugin and their dependencies, then check in a fresh interpreter that it imports and finds its plugins on its own.
Exit code 0 when built (and verified, unless skipped or built for another platform), 1 otherwise with the reason
on stderr; the check's report (plugins and their steps) is printed as JSON."""


def _run(args: argparse.Namespace) -> int:
    from streamer.deploy import build
    from streamer.deploy.resources import template_path
    from streamer.deploy.template import load_template
    from streamer.errors import StreamerError

    try:
        root = build.find_project_root(args.project_dir)
        template = load_template(template_path(root))
        target = build.lambda_target(template) if args.for_lambda else None
        out = build.build_artifact(
            args.out if args.out is not None else root / build.ARTIFACT_DIR,
            args.plugins,
            project_root=root,
            target=target,
        )
        print(f"built {out}", file=sys.stderr)
        if args.no_verify:
            return 0
        if target is not None and not build.runs_here(target):
            print(
                f"not verified: built for python {target.python_version} on {target.platforms[0]}, "
                "which this machine cannot run",
                file=sys.stderr,
            )
            return 0
        steps = build.verify_artifact(out, template=template)
    except StreamerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(json.dumps({"artifact": str(out), "plugins": steps}, indent=2))
    return 0


def arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--project-dir",
        type=Path,
        default=Path(),
        metavar="DIR",
        help="the streamer source tree, or a directory inside it (default: the current directory)",
    )
    p.add_argument(
        "--out",
        type=Path,
        default=None,
        metavar="DIR",
        help="where to build (default: PROJECT/.artifacts/lambda, the template's CodeUri); an existing "
        "directory is replaced only if it is empty or an earlier artifact",
    )
    p.add_argument(
        "--plugin",
        type=Path,
        action="append",
        dest="plugins",
        metavar="DIR",
        help="plugin project directory (repeatable; default: every PROJECT/plugins/*/)",
    )
    p.add_argument(
        "--lambda",
        action="store_true",
        dest="for_lambda",
        help="binary wheels for the template's runtime and architecture, for `sam deploy` (default: this machine)",
    )
    p.add_argument("--no-verify", action="store_true", help="skip the fresh-interpreter import check")
    p.set_defaults(func=_run)
