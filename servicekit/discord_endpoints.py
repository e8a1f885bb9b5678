"""Where discord.py talks to: Discord itself, or a Discord-compatible server named by the settings.

discord.py has no per-client base URL: its REST base (`Route.BASE`) and its gateway (`DiscordWebSocket.
DEFAULT_GATEWAY`) are class attributes, so they are set once per process, before any client starts. Every bot and
every sender of the process then talks to the same server, which is what a deployment (or a test) wants.
"""

from __future__ import annotations

import discord
import yarl

from servicekit.settings import MeshSettings


def point_discord_at(api_url: str, gateway_url: str) -> None:
    """Send discord.py's REST calls to `api_url` (".../api/v10") and its gateway connections to `gateway_url`.

    Also silences discord.py's start-up warnings about voice libraries: the hub never joins a voice channel."""
    discord.http.Route.BASE = api_url.rstrip("/")
    discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(gateway_url)
    discord.VoiceClient.warn_nacl = False
    discord.VoiceClient.warn_dave = False


def configure_discord(settings: MeshSettings) -> None:
    """`point_discord_at` the settings' AUTOMAGIK_OMNI_DISCORD_API_URL and ..._GATEWAY_URL."""
    point_discord_at(settings.discord_api_url, settings.discord_gateway_url)
