"""`DiscordSimulator`: the REST API, the gateway and the control endpoints on one aiohttp app, plus the Python API
tests use to stage guilds, post users' messages and inject failures."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import Any

from aiohttp import web

from simulators.discord.control import ControlApi
from simulators.discord.gateway import Gateway
from simulators.discord.objects import attachment_object, message_object
from simulators.discord.rest import API_PREFIX, RestApi
from simulators.discord.state import Bot, Fault, Guild, SentMessage, SessionInfo, SimState, User
from simulators.discord.wire import (
    CHANNEL_DM,
    CLOSE_AUTHENTICATION_FAILED,
    DiscordHTTPError,
    generic_error,
    json_response,
)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class DiscordSimulator:
    """An in-process Discord (REST + gateway) that unmodified discord.py clients log into.

    Point discord.py at it with `discord.http.Route.BASE = sim.api_url` and
    `discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(sim.gateway_url)`.
    """

    def __init__(
        self,
        *,
        heartbeat_interval_ms: int = 41250,
        shards: int = 1,
        rate_limit: int = 1000,
        rate_limit_window: float = 1.0,
        replay_limit: int = 256,
        resume_window: float = 300.0,
        message_limit: int = 50_000,
    ) -> None:
        """Args:
        heartbeat_interval_ms: HELLO's interval; a client silent for two intervals is closed with 4009.
        shards: What `GET /gateway/bot` recommends (AutoShardedClient starts that many shards).
        rate_limit: Message creates allowed per (bot, channel) per `rate_limit_window` seconds; the
            `X-RateLimit-*` headers count it down and an excess create gets a 429. Discord's real budget is
            5 per 5 s; the default is generous so benchmarks measure the hub, not the limiter.
        replay_limit: Events a session keeps for RESUME (a client further behind gets INVALID_SESSION).
        resume_window: Seconds a disconnected session stays resumable.
        message_limit: Messages kept for history, replies and redelivery (about 2 KB each); the oldest are
            forgotten beyond it, so long benchmarks run in bounded memory. `sent` is kept until `reset()`.
        """
        self.url = ""
        self.state = SimState(replay_limit=replay_limit, resume_window=resume_window, message_limit=message_limit)
        self.gateway = Gateway(
            self.state, heartbeat_interval_ms=heartbeat_interval_ms, gateway_url=lambda: self.gateway_url
        )
        self.rest = RestApi(
            self.state,
            self.gateway,
            http_url=lambda: self.url,
            gateway_url=lambda: self.gateway_url,
            shards=shards,
            rate_limit=rate_limit,
            rate_limit_window=rate_limit_window,
        )
        self.control = ControlApi(self)
        self._runner: web.AppRunner | None = None

    # ------------------------------------------------------------------ lifecycle

    @property
    def api_url(self) -> str:
        """The REST base, e.g. `http://127.0.0.1:PORT/api/v10` (discord.py's `Route.BASE`)."""
        return self.url + API_PREFIX

    @property
    def gateway_url(self) -> str:
        """The gateway, e.g. `ws://127.0.0.1:PORT/gateway` (also READY's `resume_gateway_url`)."""
        return self.url.replace("http://", "ws://", 1) + "/gateway"

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> None:
        """Serve on `host:port` (0 picks a free port); the URLs are set when this returns."""
        self._runner = web.AppRunner(self._build_app(), access_log=None, shutdown_timeout=2.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port)
        await site.start()
        bound_port = self._runner.addresses[0][1]
        self.url = f"http://{host}:{bound_port}"

    async def stop(self) -> None:
        """Close every gateway connection (1001) and stop serving."""
        await self.gateway.close_all()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def _build_app(self) -> web.Application:
        @web.middleware
        async def errors(request: web.Request, handler: Handler) -> web.StreamResponse:
            try:
                return await handler(request)
            except DiscordHTTPError as exc:
                return json_response(exc.body(), exc.status, exc.headers)
            except (web.HTTPNotFound, web.HTTPMethodNotAllowed) as exc:
                if not request.path.startswith("/api/"):
                    raise
                return json_response(generic_error(exc.status).body(), exc.status)

        app = web.Application(middlewares=[errors], client_max_size=32 * 1024 * 1024)
        app.router.add_get("/gateway", self.gateway.handle)
        app.router.add_get("/gateway/", self.gateway.handle)
        self.rest.add_routes(app)
        self.control.add_routes(app)
        return app

    # ------------------------------------------------------------------ staging

    def add_bot(self, name: str = "omni-bot", token: str | None = None, privileged_intents: bool = True) -> Bot:
        """One of the hub's bots (a token is generated when None)."""
        return self.state.add_bot(name, token, privileged_intents)

    def add_user(self, name: str, bot: bool = False) -> User:
        """A human, or with `bot=True` a bot that is not one of ours."""
        return self.state.add_user(name, bot)

    def add_guild(
        self, name: str, bots: Iterable[str] = (), channels: Iterable[str] = ("general",), owner_id: str | None = None
    ) -> Guild:
        """A guild with text channels; connected member bots get its GUILD_CREATE right away."""
        guild = self.state.add_guild(name, bots, channels, owner_id)
        for bot_id in guild.bot_ids:
            self.gateway.dispatch_guild_create(guild, bot_id)
        return guild

    def add_thread(
        self, guild_id: str, parent_channel_id: str, name: str = "thread", owner_id: str | None = None
    ) -> str:
        """A public thread (type 11) under a guild text channel; returns its id (THREAD_CREATE is dispatched)."""
        thread = self.state.add_thread(guild_id, parent_channel_id, name, owner_id)
        self.gateway.dispatch_thread_create(thread)
        return thread.id

    # ------------------------------------------------------------------ inbound traffic (users → bots)

    async def post_message(
        self,
        channel_id: str,
        author_id: str,
        content: str,
        mentions: Sequence[str] = (),
        reply_to: str | None = None,
        attachments: Sequence[Mapping[str, Any]] = (),
        message_id: str | None = None,
        *,
        embeds: Sequence[Mapping[str, Any]] = (),
        ping_reply_author: bool = True,
    ) -> dict[str, Any]:
        """A message by `author_id` in a channel (guild channel, thread or DM), dispatched as MESSAGE_CREATE.

        Args:
            mentions: User ids pinged; write the matching `<@id>` into `content` yourself.
            reply_to: The id of a message in the same channel this one replies to (type 19 with
                `referenced_message`); its author is pinged too unless `ping_reply_author=False`, as Discord's
                client does by default.
            attachments: `{filename, data (bytes or str), content_type?}` each; the simulator serves the bytes
                at the attachment `url`.
            message_id: Force the snowflake (must be new).

        Returns the message object (REST shape, without `guild_id`/`member`).
        """
        channel = self.state.channel(channel_id)
        author = self.state.user(author_id)
        if channel.type == CHANNEL_DM:
            if author.id not in channel.recipients:
                raise ValueError(f"user {author_id} is not a recipient of DM channel {channel_id}")
        else:
            assert channel.guild_id is not None
            self.state.ensure_member(self.state.guilds[channel.guild_id], author.id)
        reference = None
        if reply_to is not None:
            reference = self.state.message(reply_to)
            if reference.channel_id != channel.id:
                raise ValueError(f"message {reply_to} is not in channel {channel_id}")
        pinged = list(mentions)
        if reference is not None and ping_reply_author:
            pinged.append(reference.author_id)
        files = [
            attachment_object(
                self.state,
                self.url,
                channel.id,
                str(spec["filename"]),
                _as_bytes(spec.get("data", b"")),
                spec.get("content_type"),
            )
            for spec in attachments
        ]
        message = message_object(
            self.state,
            channel,
            author,
            content,
            message_id=message_id,
            mentions=pinged,
            reference=reference,
            attachments=files,
            embeds=embeds,
        )
        self.state.store(message)
        self.gateway.dispatch_message(message)
        return message.data

    async def send_dm(
        self,
        bot_id: str,
        user_id: str,
        content: str,
        attachments: Sequence[Mapping[str, Any]] = (),
        message_id: str | None = None,
    ) -> dict[str, Any]:
        """A DM from a user to a bot (the DM channel is opened or reused); only that bot receives it."""
        if bot_id not in self.state.bots:
            raise KeyError(f"unknown bot {bot_id}")
        channel = self.state.open_dm(bot_id, user_id)
        return await self.post_message(channel.id, user_id, content, attachments=attachments, message_id=message_id)

    async def redeliver(self, message_id: str) -> int:
        """Dispatch a stored message's MESSAGE_CREATE again (a duplicate delivery, new sequence numbers).

        Returns how many sessions it reached.
        """
        return self.gateway.dispatch_message(self.state.message(message_id))

    def message(self, message_id: str) -> dict[str, Any]:
        """A stored message object (users' and bots')."""
        return self.state.message(message_id).data

    def dm_channel_id(self, bot_id: str, user_id: str) -> str | None:
        """The DM channel between a bot and a user, if one was opened."""
        return self.state.dm_channels.get((bot_id, user_id))

    # ------------------------------------------------------------------ recordings (bots → Discord)

    @property
    def sent(self) -> list[SentMessage]:
        """Messages bots created through REST, in order."""
        return self.state.sent

    @property
    def typing(self) -> list[tuple[str, str]]:
        """(bot id, channel id) of every typing POST."""
        return self.state.typing

    async def wait_for_sent(self, count: int, timeout: float = 5.0) -> list[SentMessage]:
        """Wait until at least `count` messages were sent; TimeoutError otherwise."""
        async with asyncio.timeout(timeout):
            while len(self.state.sent) < count:
                self.state.sent_signal.clear()
                await self.state.sent_signal.wait()
        return list(self.state.sent)

    # ------------------------------------------------------------------ faults

    def rate_limit_next(
        self, n: int, retry_after: float = 0.2, is_global: bool = False, bot_id: str | None = None
    ) -> None:
        """The next `n` message creates (of `bot_id`, or of any bot) answer 429 with `retry_after`."""
        self.state.faults.extend([Fault(429, retry_after, is_global, bot_id)] * n)

    def fail_next(self, n: int, status: int = 500, bot_id: str | None = None) -> None:
        """The next `n` message creates (of `bot_id`, or of any bot) answer `status` (discord.py retries 500/502/504
        after 1 s, 3 s, ...)."""
        self.state.faults.extend([Fault(status, None, False, bot_id)] * n)

    def revoke_token(self, token: str) -> None:
        """REST answers 401 for the token from now on and its gateway sessions are closed with 4004."""
        bot = self.state.revoke(token)
        if bot is None:
            return
        for session in list(self.state.sessions_for(bot.id)):
            if session.sink is None:
                self.state.end_session(session)
        self.gateway.close_bot(bot.id, CLOSE_AUTHENTICATION_FAILED)

    async def drop_connections(self, bot_id: str | None = None, code: int | None = None) -> int:
        """Cut the websockets (all, or one bot's) without a close frame, or close them with `code`; sessions stay
        resumable (unless `code` says otherwise), so discord.py reconnects and RESUMEs. Returns how many."""
        return await self.gateway.drop(bot_id, code)

    def request_reconnect(self, bot_id: str | None = None) -> int:
        """Send op 7 RECONNECT to the connections (all, or one bot's); returns how many."""
        return self.gateway.request_reconnect(bot_id)

    def reset(self) -> None:
        """Forget sent messages, typing and pending faults; bots, guilds, messages and sessions stay."""
        self.state.reset()

    # ------------------------------------------------------------------ introspection

    def sessions(self, bot_id: str) -> list[SessionInfo]:
        """The bot's connected sessions (READY or RESUMED sent, websocket open)."""
        return [
            SessionInfo(s.id, s.bot_id, s.intents, s.shard, s.sequence)
            for s in self.state.sessions_for(bot_id)
            if s.connected
        ]

    def connected_bot_ids(self) -> list[str]:
        """Bots with at least one connected session."""
        return [b for b in self.state.bots if any(s.connected for s in self.state.sessions_for(b))]

    def identify_count(self, bot_id: str) -> int:
        """Successful IDENTIFYs (READY sent) of a bot."""
        return self.state.identify_counts[bot_id]

    def resume_count(self, bot_id: str) -> int:
        """Successful RESUMEs (RESUMED sent) of a bot."""
        return self.state.resume_counts[bot_id]


def _as_bytes(data: Any) -> bytes:
    if isinstance(data, bytes | bytearray | memoryview):
        return bytes(data)
    return str(data).encode()
