"""A local Evolution API v2.3.x server for tests, demos and benchmarks: the command line.

`python -m simulators.evolution --port 8080 --instance acme-support:TOKEN` creates the instances, prints
`evolution simulator listening on <url>` once serving (the line a parent process such as `bench` waits for)
and serves until SIGINT/SIGTERM.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import sys
from collections.abc import Sequence

from servicekit.runner import run, stop_signal
from simulators.evolution.server import EvolutionSimulator


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m simulators.evolution", description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080, help="0 picks a free port (printed when ready)")
    parser.add_argument("--api-key", default="sim-global-key", help="the global AUTHENTICATION_API_KEY")
    parser.add_argument(
        "--instance",
        action="append",
        default=[],
        metavar="NAME[:TOKEN]",
        help="an open instance to create at start (repeatable); a token is generated when omitted",
    )
    parser.add_argument("--honor-delays", action="store_true", help="hold sends/presences open for their delay")
    return parser.parse_args(argv)


async def _serve(args: argparse.Namespace) -> None:
    simulator = EvolutionSimulator(api_key=args.api_key, honor_delays=args.honor_delays)
    for spec in args.instance:
        name, _, token = str(spec).partition(":")
        token = simulator.add_instance(name, token or None)
        print(f"instance {name} token {token}", file=sys.stderr, flush=True)
    await simulator.start(args.host, args.port)
    stopping = stop_signal()
    print(f"evolution simulator listening on {simulator.url}", flush=True)
    try:
        await stopping.wait()
    finally:
        await simulator.stop()


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of `python -m simulators.evolution`: serve until SIGINT/SIGTERM."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s evolution-simulator: %(message)s")
    with contextlib.suppress(KeyboardInterrupt):
        run(_serve(_parse_args(argv)))


if __name__ == "__main__":
    main()
