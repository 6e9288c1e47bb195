"""``streamer token``: mint a development JWT that ``streamer local`` accepts."""

from __future__ import annotations

import argparse
import os

from streamer.config import Env, dev_jwt_secret

__all__ = ["DESCRIPTION", "HELP", "arguments"]

HELP = "print a development JWT (HS256) for `streamer local`"
DESCRIPTION = """Print an HS256 JWT signed with --secret, else $STREAMER_JWT_SECRET, else the public local
development secret: the secret `streamer local` verifies with. A deployed stack never accepts the development
secret."""


def _run(args: argparse.Namespace) -> int:
    from streamer.auth import mint_token  # imported when used: keeps `streamer --help` fast

    print(
        mint_token(
            args.secret or dev_jwt_secret(),
            args.sub,
            ttl_seconds=args.ttl,
            issuer=args.issuer,
            audience=args.audience,
        )
    )
    return 0


def arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--sub", required=True, help="the user id (the JWT's sub claim)")
    p.add_argument("--ttl", type=int, default=3600, help="seconds until the token expires (default 3600)")
    p.add_argument("--secret", help="HS256 secret (default: $STREAMER_JWT_SECRET, else the local development one)")
    p.add_argument(
        "--issuer",
        default=os.environ.get(Env.JWT_ISSUER),
        help="iss claim (default: $STREAMER_JWT_ISSUER; none when unset)",
    )
    p.add_argument(
        "--audience",
        default=os.environ.get(Env.JWT_AUDIENCE),
        help="aud claim (default: $STREAMER_JWT_AUDIENCE; none when unset)",
    )
    p.set_defaults(func=_run)
