"""`python -m simulators.discord`: serve a Discord simulator until SIGINT/SIGTERM."""

from __future__ import annotations

import argparse
import contextlib
import logging
import sys
from collections.abc import Sequence

from servicekit.runner import run, stop_signal
from simulators.discord.server import DiscordSimulator


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m simulators.discord", description="A local Discord simulator.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8090, help="0 picks a free port (printed when ready)")
    parser.add_argument(
        "--bot",
        action="append",
        default=[],
        metavar="TOKEN:NAME",
        help="a bot to create at start (repeatable); NAME defaults to omni-bot",
    )
    parser.add_argument(
        "--guild",
        action="append",
        default=[],
        metavar="NAME[:CHANNEL,...]",
        help="a guild with all --bot bots as members (repeatable); channels default to general",
    )
    parser.add_argument("--heartbeat-interval", type=int, default=41250, help="HELLO heartbeat_interval (ms)")
    parser.add_argument("--shards", type=int, default=1, help="what GET /gateway/bot recommends")
    return parser.parse_args(argv)


async def _serve(args: argparse.Namespace) -> None:
    simulator = DiscordSimulator(heartbeat_interval_ms=args.heartbeat_interval, shards=args.shards)
    bot_ids = []
    for spec in args.bot:
        token, _, name = str(spec).partition(":")
        bot = simulator.add_bot(name or "omni-bot", token or None)
        bot_ids.append(bot.id)
        print(f"bot {bot.name} id {bot.id} token {bot.token}", file=sys.stderr, flush=True)
    for spec in args.guild:
        name, _, channels = str(spec).partition(":")
        guild = simulator.add_guild(name, bots=bot_ids, channels=[c for c in channels.split(",") if c] or ["general"])
        print(f"guild {guild.name} id {guild.id} channels {guild.channel_ids}", file=sys.stderr, flush=True)
    stopping = stop_signal()
    await simulator.start(args.host, args.port)
    print(f"discord simulator listening on {simulator.url}", flush=True)
    try:
        await stopping.wait()
    finally:
        await simulator.stop()


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point: serve until SIGINT/SIGTERM."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s discord-simulator: %(message)s")
    with contextlib.suppress(KeyboardInterrupt):
        run(_serve(_parse_args(argv)))


if __name__ == "__main__":
    main()
