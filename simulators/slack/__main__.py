"""`python -m simulators.slack`: serve a Slack simulator until SIGINT/SIGTERM, with one workspace staged."""

from __future__ import annotations

import argparse
import contextlib
import logging
import sys
from collections.abc import Sequence

from servicekit.runner import run, stop_signal
from simulators.slack.server import SlackSimulator


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m simulators.slack", description="A local Slack simulator.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8091, help="0 picks a free port (printed when ready)")
    parser.add_argument("--team", default="Acme", help="the workspace staged at start")
    parser.add_argument("--bot-token", default=None, help="the staged app's xoxb- token (generated when absent)")
    parser.add_argument("--signing-secret", default=None, help="the staged app's signing secret")
    parser.add_argument("--app-token", default=None, help="the staged app's xapp- token")
    parser.add_argument("--request-url", default=None, help="where the staged app's Events API POSTs go")
    parser.add_argument("--user", action="append", default=[], help="a human member (repeatable)")
    return parser.parse_args(argv)


async def _serve(args: argparse.Namespace) -> None:
    simulator = SlackSimulator()
    team = simulator.add_team(args.team)
    bot = simulator.add_bot(
        team.id,
        token=args.bot_token,
        signing_secret=args.signing_secret,
        app_token=args.app_token,
        request_url=args.request_url,
    )
    for name in args.user:
        user = simulator.add_user(team.id, name)
        print(f"user {user.name} id {user.id}", file=sys.stderr, flush=True)
    channel = simulator.add_channel(team.id, "general", is_general=True)
    print(
        f"team {team.id} bot user {bot.user_id} token {bot.token} app token {bot.app_token} "
        f"signing secret {bot.signing_secret} channel #general {channel.id}",
        file=sys.stderr,
        flush=True,
    )
    stopping = stop_signal()
    await simulator.start(args.host, args.port)
    print(f"slack simulator listening on {simulator.url} (Web API {simulator.api_url})", flush=True)
    try:
        await stopping.wait()
    finally:
        await simulator.stop()


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point: serve until SIGINT/SIGTERM."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s slack-simulator: %(message)s")
    with contextlib.suppress(KeyboardInterrupt):
        run(_serve(_parse_args(argv)))


if __name__ == "__main__":
    main()
