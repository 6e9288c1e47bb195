"""The bare baseline servers, each its own program: ``python -m benchmarks.baselines echo --port P``.

``echo``: a plain ``websockets`` server that sends every message back — what the gateway would cost with no
authentication, no routing and no store. Prints ``echo ready ws://HOST:PORT`` when listening; stops on SIGINT
or SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys


async def _echo(host: str, port: int) -> None:
    from websockets.asyncio.server import ServerConnection, serve

    async def handler(ws: ServerConnection) -> None:
        async for message in ws:
            await ws.send(message)

    stop = asyncio.get_running_loop().create_future()
    for sig in (signal.SIGINT, signal.SIGTERM):
        asyncio.get_running_loop().add_signal_handler(sig, stop.set_result, None)
    async with serve(handler, host, port, backlog=4096, ping_interval=None, max_size=2**17) as server:
        bound = next(iter(server.sockets)).getsockname()
        print(f"echo ready ws://{bound[0]}:{bound[1]}", flush=True)
        await stop


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.baselines")
    parser.add_argument("server", choices=["echo"])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args(argv)
    from benchmarks._procs import raise_open_files_limit

    raise_open_files_limit()
    asyncio.run(_echo(args.host, args.port))
    return 0


if __name__ == "__main__":
    sys.exit(main())
