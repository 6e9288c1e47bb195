"""``streamer plugins``: the installed plugins (entry-point group ``streamer.plugins``), their steps and
workflows. Exit code 1 when a plugin failed to load or the plugin set is inconsistent (each reason on stderr).
"""

from __future__ import annotations

import argparse
import json
import sys

__all__ = ["DESCRIPTION", "HELP", "arguments"]

HELP = "list the installed plugins, their steps and workflows"
DESCRIPTION = """List the installed plugins (entry-point group streamer.plugins), their steps and workflows. Exit
code 1 when a plugin failed to load or the plugin set is inconsistent (each reason on stderr)."""


def _run(args: argparse.Namespace) -> int:
    from streamer.errors import PluginError
    from streamer.plugins import get_registry, plugin_errors

    try:
        listing = get_registry().list_plugins()
    except PluginError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    errors = plugin_errors()
    if args.json:
        print(json.dumps(listing, indent=2))
    else:
        if not listing:
            print("no plugins installed")
        for p in listing:
            origin = f"{p['distribution']} {p['version']}" if p["distribution"] else "registered directly"
            print(f"{p['name']} ({origin})")
            print(f"  steps:     {', '.join(p['steps']) or '-'}")
            print(f"  workflows: {', '.join(p['workflows']) or '-'}")
            print(f"  hooks:     {', '.join(p['hooks']) or '-'}")
    for err in errors:
        print(f"error: {err}", file=sys.stderr)
    return 1 if errors else 0


def arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print the listing as JSON")
    p.set_defaults(func=_run)
