"""A local Discord (REST API v10 + gateway websocket) for tests, demos and benchmarks.

Unmodified discord.py 2.7.1 clients log into it, receive READY/GUILD_CREATE/MESSAGE_CREATE and answer through
REST exactly as against Discord, after two class attributes are redirected:

    discord.http.Route.BASE = sim.api_url
    discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(sim.gateway_url)

Tests stage bots, users, guilds and threads, post users' messages and DMs, and read back what the bots sent
(`sent`, `typing`). Faults the hub must survive are injectable: 429s that discord.py retries, 5xx, revoked
tokens (401 / close 4004), refused privileged intents (close 4014), dropped websockets (RESUME with replay of the
missed events) and duplicate gateway deliveries.

Run it out of process with `python -m simulators.discord --port 8090 --bot TOKEN:NAME`; the `/__sim/*` control
endpoints (no auth) then give the Python API's powers to other processes.

Deliberate simplifications: no permissions beyond guild membership, no roles but @everyone, no voice, edits,
reactions, interactions or presence; TYPING_START is not dispatched; identify concurrency is not throttled.
"""

from simulators.discord.server import DiscordSimulator
from simulators.discord.state import Bot, Guild, SentMessage, SessionInfo, User

__all__ = ["Bot", "DiscordSimulator", "Guild", "SentMessage", "SessionInfo", "User"]
