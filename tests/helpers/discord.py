"""The Discord simulator as the end-to-end tests use it: it also counts the REST requests made with each token."""

from __future__ import annotations

from collections import Counter

from aiohttp import web

from simulators.discord import DiscordSimulator
from simulators.discord.server import Handler


class RecordingDiscordSimulator(DiscordSimulator):
    """A `DiscordSimulator` that counts every REST request by the bot token it carries (`requests_with`), so a test
    can tell a bot that stopped from one retrying in a tight loop (a refused login never reaches `identify_count`)."""

    def __init__(self) -> None:
        super().__init__()
        self._by_token: Counter[str] = Counter()

    def requests_with(self, token: str) -> int:
        """REST requests made so far with `Authorization: Bot <token>` (answered or refused)."""
        return self._by_token[token]

    def _build_app(self) -> web.Application:
        app = super()._build_app()

        @web.middleware
        async def count(request: web.Request, handler: Handler) -> web.StreamResponse:
            authorization = request.headers.get("Authorization", "")
            if authorization.startswith("Bot "):
                self._by_token[authorization.removeprefix("Bot ")] += 1
            return await handler(request)

        app.middlewares.insert(0, count)
        return app
