"""One Discord instance's bot: a discord.py client whose messages enter the shared accept path.

discord.py owns the gateway (heartbeats, RESUME after a dropped connection, reconnects with back-off); this class
owns what the hub needs around it:
- every message the bot should answer is stored through `deliver` (the accept path) before its cursor moves, and
  a storage hiccup is retried rather than dropped, since the gateway never sends an event twice by itself;
- after every fresh gateway session (a restart, a takeover by another replica) the bot reads each known chat's
  history after its cursor, so messages that arrived while no bot was connected are caught up; the inbox's unique
  key makes the overlap harmless. Until a chat's history is read, the new session's live messages do not move its
  cursor (they are held and applied after), or a message arriving before the catch-up would skip the missed ones,
  here and for the next owner of the bot;
- Discord refusing the bot for good (a revoked token, a privileged intent not enabled, a disabled bot) ends the
  bot in `error` with Discord's reason, and the host does not retry it in a tight loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Awaitable, Callable
from typing import Any

import discord
from opentelemetry import context as otel_context
from opentelemetry import trace

from servicekit import trace_attributes as attrs
from servicekit.channels import Channel
from servicekit.instances import DiscordConfig, Instance
from services.ingress.core.bots.status import CONNECTED, CONNECTING, DISCONNECTED, ERROR, BotStatus
from services.ingress.core.receivers.base import Received
from services.ingress.core.receivers.discord import guild_id_of, received_from_discord, snapshot

log = logging.getLogger(__name__)
_tracer = trace.get_tracer(__name__)

Deliver = Callable[[Instance, Received, dict[str, Any]], Awaitable[object]]
"""Stores one received event (the accept path); raises when it could not be stored."""

Cursors = dict[str, dict[str, Any]]
"""chat id -> {"after": newest stored message id, "guild_id": "" for a DM}."""

PERMANENT_CLOSE_CODES = {
    4004: "Discord refused the bot token (authentication failed)",
    4010: "Discord refused the shard configuration",
    4011: "the bot is in too many guilds and needs sharding",
    4012: "Discord refused the gateway version",
    4013: "Discord refused the gateway intents",
    4014: "the bot asks for a privileged intent (Message Content) that is not enabled in the Discord developer portal",
}
"""Gateway close codes after which reconnecting cannot help."""

CATCH_UP_WAIT_SECONDS = 15.0
"""Longest a live message waits for its chat's catch-up (a history read that hangs must not hold the chat)."""

DELIVERY_BACKOFF_SECONDS = (0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 10.0)
"""Pauses between tries to store one message while the inbox is unavailable (about half a minute in all)."""


def intents() -> discord.Intents:
    """Guild and DM messages with their content; no member or presence events (nothing the hub uses)."""
    wanted = discord.Intents.none()
    wanted.guilds = True
    wanted.guild_messages = True
    wanted.dm_messages = True
    wanted.message_content = True
    return wanted


class DiscordBot:
    """Runs one discord.py client for one instance until stopped or refused."""

    channel = Channel.DISCORD

    def __init__(
        self,
        instance: Instance,
        deliver: Deliver,
        *,
        cursors: Cursors | None = None,
        on_state_change: Callable[[], None] = lambda: None,
        guild_ready_timeout: float = 2.0,
        catch_up_limit: int = 100,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.instance = instance
        self.cursors: Cursors = dict(cursors or {})
        self.cursors_dirty = False
        self._pending: Cursors = {}
        """Chats a fresh session has not caught up on yet, with the cursor each had when the session began."""
        self._caught_up: dict[str, asyncio.Event] = {}
        """Per pending chat, set once its history is read: a live message of that chat waits for it, so what was
        missed is stored (and answered) before what came after."""
        self._held: Cursors = {}
        """Per pending chat, the newest live message stored meanwhile: the cursor moves there after the catch-up."""
        self.permanent_failure = False
        self.ended_at: float | None = None
        self._deliver = deliver
        self._on_state_change = on_state_change
        self._guild_ready_timeout = guild_ready_timeout
        self._catch_up_limit = catch_up_limit
        self._clock = clock
        self._state = CONNECTING
        self._detail = ""
        self._client: discord.Client | None = None
        self._task: asyncio.Task[None] | None = None
        self._background: set[asyncio.Task[None]] = set()

    @property
    def config(self) -> DiscordConfig:
        return self.instance.config_of(DiscordConfig)

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    async def start(self) -> None:
        """Log in and connect in the background (returns at once)."""
        self._task = asyncio.create_task(self._run(), name=f"discord-bot-{self.instance.name}")

    async def stop(self) -> None:
        """Close the gateway connection and wait for the client to finish."""
        client, task = self._client, self._task
        if client is not None and not client.is_closed():
            await client.close()
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        for pending in list(self._background):
            pending.cancel()
        if self._state != ERROR:
            self._set_state(DISCONNECTED, "bot stopped")

    def status(self) -> BotStatus:
        client = self._client
        user = client.user if client is not None else None
        guilds = tuple((str(g.id), g.name) for g in client.guilds) if client is not None and user is not None else ()
        latency = client.latency if client is not None else math.inf
        return BotStatus(
            instance_name=self.instance.name,
            channel=Channel.DISCORD,
            state=self._state,
            detail=self._detail,
            workspaces=guilds,
            latency_ms=round(latency * 1000, 1) if math.isfinite(latency) else 0.0,
            account_id=str(user.id) if user is not None else "",
            account_name=user.name if user is not None else "",
        )

    async def _run(self) -> None:
        client = _BotClient(
            self,
            intents=intents(),
            max_messages=None,
            chunk_guilds_at_startup=False,
            member_cache_flags=discord.MemberCacheFlags.none(),
            guild_ready_timeout=self._guild_ready_timeout,
        )
        self._client = client
        try:
            await client.start(self.config.bot_token, reconnect=True)
        except discord.LoginFailure as exc:
            self._fail(f"Discord refused the bot token: {exc}", permanent=True)
        except discord.PrivilegedIntentsRequired:
            self._fail(PERMANENT_CLOSE_CODES[4014], permanent=True)
        except discord.ConnectionClosed as exc:
            reason = PERMANENT_CLOSE_CODES.get(exc.code)
            if reason is not None:
                self._fail(f"{reason} (gateway close {exc.code})", permanent=True)
            else:
                self._fail(f"gateway closed with {exc.code}: {exc.reason}", permanent=False)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.exception("discord bot of %s crashed", self.instance.name)
            self._fail(f"bot crashed: {exc}", permanent=False)
        else:
            if self._state != ERROR:
                self._set_state(DISCONNECTED, "bot stopped")
        finally:
            self.ended_at = self._clock()
            if not client.is_closed():
                await client.close()

    def _set_state(self, state: str, detail: str) -> None:
        changed = (state, detail) != (self._state, self._detail)
        self._state, self._detail = state, detail
        if changed:
            self._on_state_change()

    def _fail(self, detail: str, *, permanent: bool) -> None:
        log.warning("discord bot of %s: %s", self.instance.name, detail)
        self.permanent_failure = permanent
        self._set_state(ERROR, detail)

    def _on_session(self) -> None:
        """READY was just parsed: a fresh session, none of whose messages was handled yet. Every known chat waits
        for this session's catch-up, from the cursor it has now (or the older one of a catch-up not finished yet)."""
        for chat_id, cursor in self.cursors.items():
            self._pending[chat_id] = dict(self._pending.get(chat_id, cursor))
            self._caught_up.setdefault(chat_id, asyncio.Event())

    async def _on_ready(self, client: discord.Client) -> None:
        self._set_state(CONNECTED, "")
        self._spawn(self._catch_up(client))

    async def _on_resumed(self) -> None:
        self._set_state(CONNECTED, "")

    async def _on_disconnect(self) -> None:
        if self._state == CONNECTED:
            self._set_state(CONNECTING, "gateway connection lost; reconnecting")

    def _spawn(self, coroutine: Awaitable[None]) -> None:
        async def run() -> None:
            await coroutine

        task = asyncio.create_task(run())
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _handle(self, client: discord.Client, message: discord.Message, *, live: bool = True) -> None:
        user = client.user
        if user is None:
            return
        received = received_from_discord(message, bot_id=user.id, guild_filter=self.config.guild_id)
        if received is None:
            return
        if live:
            await self._after_catch_up(str(message.channel.id))
        payload = snapshot(message)
        # The edge span of the message's trace, as the gateway's request span is for a webhook: a new root (each
        # gateway event is its own trace), with the accept path's spans under it.
        with _tracer.start_as_current_span("discord.receive", context=otel_context.Context()) as span:
            span.set_attribute(attrs.INSTANCE_NAME, self.instance.name)
            span.set_attribute(attrs.CHANNEL_MESSAGE_ID, str(message.id))
            span.set_attribute("omni.catch_up", not live)
            for attempt, pause in enumerate((*DELIVERY_BACKOFF_SECONDS, None), start=1):
                try:
                    await self._deliver(self.instance, received, payload)
                    break
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    if pause is None:
                        log.error(
                            "message %s of %s not stored after %d tries: %s",
                            message.id,
                            self.instance.name,
                            attempt,
                            exc,
                        )
                        return
                    log.warning("message %s of %s not stored yet (%s); retrying", message.id, self.instance.name, exc)
                    await asyncio.sleep(pause)
        self._advance(message, live=live)

    async def _after_catch_up(self, chat_id: str) -> None:
        """Wait (at most CATCH_UP_WAIT_SECONDS) until the chat's missed messages are stored."""
        caught_up = self._caught_up.get(chat_id)
        if caught_up is None or caught_up.is_set():
            return
        waiter = asyncio.ensure_future(caught_up.wait())
        try:
            await asyncio.wait([waiter], timeout=CATCH_UP_WAIT_SECONDS)
        finally:
            waiter.cancel()

    def _advance(self, message: discord.Message, *, live: bool) -> None:
        chat_id = str(message.channel.id)
        guild_id = guild_id_of(message)
        cursor = {"after": str(message.id), "guild_id": str(guild_id) if guild_id else ""}
        if live and chat_id in self._pending:
            _keep_newest(self._held, chat_id, cursor)
        elif _keep_newest(self.cursors, chat_id, cursor):
            self.cursors_dirty = True

    async def _catch_up(self, client: discord.Client) -> None:
        """Store what each known chat received after its cursor while no bot was connected, oldest first; then the
        cursor moves on to the newest live message stored meanwhile."""
        for chat_id, cursor in list(self._pending.items()):
            guild_id = str(cursor.get("guild_id") or "")
            channel = client.get_partial_messageable(
                int(chat_id),
                guild_id=int(guild_id) if guild_id else None,
                type=discord.ChannelType.text if guild_id else discord.ChannelType.private,
            )
            try:
                async for message in channel.history(
                    limit=self._catch_up_limit, after=discord.Object(int(cursor["after"])), oldest_first=True
                ):
                    await self._handle(client, message, live=False)
            except (discord.HTTPException, ValueError, KeyError) as exc:
                log.info("no catch-up of %s/%s: %s", self.instance.name, chat_id, exc)
            if self._pending.get(chat_id) is not cursor:
                continue  # a newer session began meanwhile; its own catch-up reads on from the same cursor
            del self._pending[chat_id]
            caught_up = self._caught_up.pop(chat_id, None)
            if caught_up is not None:
                caught_up.set()
            held = self._held.pop(chat_id, None)
            if held is not None and _keep_newest(self.cursors, chat_id, held):
                self.cursors_dirty = True


def _keep_newest(cursors: Cursors, chat_id: str, cursor: dict[str, Any]) -> bool:
    """Point `cursors[chat_id]` at `cursor` unless it already points at the same or a newer message."""
    current = cursors.get(chat_id)
    if current is not None and int(current.get("after", 0)) >= int(cursor["after"]):
        return False
    cursors[chat_id] = cursor
    return True


class _BotClient(discord.Client):
    """discord.py's client with its events routed to the `DiscordBot` that runs it."""

    def __init__(self, bot: DiscordBot, **options: Any) -> None:
        super().__init__(**options)
        self._bot = bot

    async def on_connect(self) -> None:
        # Dispatched while READY is parsed, so this task runs before the handlers of the session's messages.
        self._bot._on_session()

    async def on_ready(self) -> None:
        await self._bot._on_ready(self)

    async def on_resumed(self) -> None:
        await self._bot._on_resumed()

    async def on_disconnect(self) -> None:
        await self._bot._on_disconnect()

    async def on_message(self, message: discord.Message) -> None:
        await self._bot._handle(self, message)
