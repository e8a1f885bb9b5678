"""Discord's side of the outbox: `DiscordSender` sends, types, reconciles and lists over Discord's REST API.

HTTP-only clients
    The bots (gateway connections) run in the ingress service; this process only needs REST. Each (instance, token)
    gets one `discord.Client` that is logged in (`GET /users/@me`, then `GET /oauth2/applications/@me`, which
    `login()` also makes) and never connected. The client is cached and reused because its HTTP layer owns the
    token's rate-limit buckets: a fresh client per send would forget what Discord said about the budget and walk
    into 429s. A changed token gets a new client (the old one is closed). Where the REST calls go is discord.py's
    process-wide `Route.BASE` (`servicekit.discord_endpoints.point_discord_at`).

Bounded waits
    discord.py sleeps through short 429s and retries 500/502/504/524 itself. It is told to raise `RateLimited`
    instead of sleeping longer than `max_ratelimit_wait_seconds` (discord.py raises its own floor for that setting
    to 30 s, so the sender sets the HTTP client's limit itself), and every call is bounded by
    `send_timeout_seconds`, so an outbox worker never hangs on Discord: it gets the pause back and schedules it.

Error classification (what the outbox acts on, see `base`)
    - `RateLimited`, or a 429 discord.py did not absorb (a Cloudflare ban has no `Via` header and is raised at
      once): transient, `rate_limited`, with Discord's `retry_after`.
    - 5xx after discord.py's own retries: transient. A 502/504/524 is a proxy that gave up waiting for Discord,
      so the message may exist: `outcome_unknown`. A 500/503 is Discord saying it did not do it.
    - 401 or `LoginFailure`: rejected, `REASON_UNAUTHORIZED` (the token is wrong or revoked; retrying is useless).
      404: rejected, `REASON_NOT_FOUND`. Any other 4xx (400 code 50035 for a text over 2000 characters, 403 code
      50001 Missing Access, ...): rejected with Discord's own words, nested field errors included.
    - A timeout, an `aiohttp.ClientError` or an `OSError`: transient, and `outcome_unknown` only when the send
      request itself had started (the message may have been created before the connection dropped). A failure
      while logging in, opening a DM or downloading the media happened before anything was sent.
"""

from __future__ import annotations

import asyncio
import io
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol, TypeVar

import aiohttp
import discord

from servicekit.address_guard import guarded_session
from servicekit.channels import Channel
from servicekit.instances import DiscordConfig, Instance
from servicekit.messages import Media
from services.channels.core.models import ConnectionState, ConnectionStatus, OutboundPart
from services.channels.core.senders.base import (
    REASON_NOT_FOUND,
    REASON_REJECTED,
    REASON_UNAUTHORIZED,
    Account,
    ChannelError,
    ChannelRejectedError,
    ChannelTransientError,
    ChatChannel,
    Contact,
    SendTarget,
    WithoutStructuredSends,
    bot_token_of,
    describe_error,
)
from services.channels.core.senders.media_files import MediaFiles

_log = logging.getLogger(__name__)

T = TypeVar("T")

DM_PREFIX = "user:"
"""A `chat_id` of `user:<id>` is a direct message to that user (the DM channel is opened on first use)."""

HISTORY_LIMIT = 100
"""Messages `find_sent` reads after `since`: one page of Discord's history, enough for the seconds a crashed send
can be old."""

PROXY_TIMEOUT_STATUSES = frozenset({502, 504, 524})
"""A proxy in front of Discord gave up waiting: the request may have been carried out."""

ALLOWED_MENTIONS = discord.AllowedMentions(everyone=False, roles=False, users=True, replied_user=True)
"""An agent may ping users (and the user it answers) but never @everyone or a role."""

TYPING_PRESENCES = frozenset({"composing", "recording"})


_REST_INTENTS = discord.Intents(guilds=True)
"""A REST-only client never connects, so intents ask for nothing; `guilds` only keeps discord.py from warning
that its (unused) cache would be incomplete."""


class BotStatusSource(Protocol):
    """Where the state of an instance's bot is known: ingress runs the bots, this service only asks."""

    async def bot_status(self, instance_name: str) -> ConnectionStatus | None:
        """The bot's connection, or None when no bot runs for the instance."""
        ...


@dataclass
class _Bot:
    """A logged-in HTTP-only client of one instance's token, and the DM channels it opened."""

    client: discord.Client
    token: str
    user_id: int
    dm_channels: dict[int, int] = field(default_factory=dict)
    """User id -> DM channel id, so a DM costs one `POST /users/@me/channels` per user, not one per send."""


@dataclass
class _Attempt:
    """How far one call got: whether the request that creates the message had started when it failed."""

    sending: bool = False


class DiscordSender(WithoutStructuredSends):
    """The `ChannelSender` of Discord: every call uses the instance's own bot token over Discord's REST API."""

    channel = Channel.DISCORD

    def __init__(
        self,
        bots: BotStatusSource,
        *,
        send_timeout_seconds: float = 15.0,
        max_ratelimit_wait_seconds: float = 10.0,
        media_max_bytes: int = 25 * 1024 * 1024,
        session: aiohttp.ClientSession | None = None,
    ) -> None:
        """Args:
        bots: Asked for the bot's connection state (the bots run in ingress).
        send_timeout_seconds: Bound of every call, rate-limit sleeps and discord.py's 5xx retries included.
        max_ratelimit_wait_seconds: Longest 429 pause discord.py may sleep through; a longer one is handed back
            to the outbox as `retry_after`.
        media_max_bytes: Largest file sent (base64 or downloaded); a bigger one is refused before any upload.
        session: Used to download media URLs; one is created (and closed by `aclose`) when None.
        """
        if send_timeout_seconds <= 0 or max_ratelimit_wait_seconds <= 0:
            raise ValueError("send_timeout_seconds and max_ratelimit_wait_seconds must be positive")
        self._status_source = bots
        self._timeout = send_timeout_seconds
        self._max_ratelimit_wait = max_ratelimit_wait_seconds
        self._media = MediaFiles(media_max_bytes, self._media_session)
        self._session = session
        self._owns_session = False
        self._bots: dict[str, _Bot] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    def _media_session(self) -> aiohttp.ClientSession:
        """The session media URLs are downloaded with (a guarded one of its own when none was given)."""
        if self._session is None or self._session.closed:
            self._session = guarded_session()
            self._owns_session = True
        return self._session

    async def aclose(self) -> None:
        """Close every cached client (and the download session when this sender created it)."""
        bots, self._bots = list(self._bots.values()), {}
        for bot in bots:
            await _close_quietly(bot.client)
        if self._owns_session and self._session is not None:
            await self._session.close()
            self._session = None
            self._owns_session = False

    # ------------------------------------------------------------------ sending

    async def send_text(self, instance: Instance, target: SendTarget, text: str) -> str:
        """Send `text` to a channel or a user's DM, answering `target.reply_to` when set; returns the message id."""

        async def send(attempt: _Attempt) -> str:
            bot = await self._bot(instance)
            channel_id = await self._resolve(bot, target.thread_id or target.chat_id)
            return await self._create_message(bot, channel_id, target.reply_to, attempt, content=text)

        return await self._bounded(send, "the message")

    async def send_media(self, instance: Instance, target: SendTarget, media: Media, caption: str) -> str:
        """Send one file as an attachment, with the caption (or the media's own) as the message content."""

        async def send(attempt: _Attempt) -> str:
            data, filename = await self._media.read(media)
            bot = await self._bot(instance)
            channel_id = await self._resolve(bot, target.thread_id or target.chat_id)
            content = _caption(caption, media)
            return await self._create_message(
                bot,
                channel_id,
                target.reply_to,
                attempt,
                content=content or None,
                file=discord.File(io.BytesIO(data), filename=filename),
            )

        return await self._bounded(send, "the message")

    async def send_presence(self, instance: Instance, chat_id: str, presence: str, duration_ms: int) -> None:
        """Show typing once (Discord shows it for about 10 s); "paused" does nothing: Discord has no "stop typing".

        Best effort: every failure is transient, so the caller logs it and goes on with the reply.
        """
        if presence not in TYPING_PRESENCES:
            return

        async def typing(attempt: _Attempt) -> None:
            bot = await self._bot(instance)
            channel_id = await self._resolve(bot, chat_id)
            await bot.client.get_partial_messageable(channel_id).typing()

        try:
            await self._bounded(typing, "the typing indicator")
        except ChannelRejectedError as exc:
            raise ChannelTransientError(exc.message) from exc

    async def _create_message(
        self, bot: _Bot, channel_id: int, reply_to: str, attempt: _Attempt, **options: Any
    ) -> str:
        """POST /channels/{id}/messages; `attempt.sending` is set first, since from then on the outcome is unsure."""
        options["allowed_mentions"] = ALLOWED_MENTIONS
        if reply_to.isdigit():
            # fail_if_not_exists=False: a deleted original must not cost the user the answer.
            options["reference"] = discord.MessageReference(
                message_id=int(reply_to), channel_id=channel_id, fail_if_not_exists=False
            )
        channel = bot.client.get_partial_messageable(channel_id)
        attempt.sending = True
        message = await channel.send(**options)
        return str(message.id)

    # ------------------------------------------------------------------ reconciliation

    async def find_sent(
        self, instance: Instance, chat_id: str, part: OutboundPart, since: float, exclude: set[str]
    ) -> str | None:
        """The earliest message of this bot in the chat since `since` with the part's content, not in `exclude`.

        After a crash between "request left" and "outcome recorded", this tells the outbox whether the part is
        already out (so it is not sent twice). Discord trims content, so both sides are compared stripped.
        """
        wanted = (part.text or (part.media.caption if part.media else "")).strip()

        async def search(attempt: _Attempt) -> str | None:
            bot = await self._bot(instance)
            channel_id = await self._resolve(bot, part.thread_id or chat_id)
            channel = bot.client.get_partial_messageable(channel_id)
            after = discord.Object(id=discord.utils.time_snowflake(datetime.fromtimestamp(since, UTC)))
            async for message in channel.history(after=after, limit=HISTORY_LIMIT, oldest_first=True):
                if message.author.id != bot.user_id or str(message.id) in exclude:
                    continue
                if part.media is not None and not message.attachments:
                    continue
                if part.media is not None and not wanted:
                    return str(message.id)
                if message.content.strip() == wanted:
                    return str(message.id)
            return None

        return await self._bounded(search, "the history request")

    # ------------------------------------------------------------------ account and channels

    async def list_contacts(self, instance: Instance) -> list[Contact] | None:
        """A bot's reachable people are guild members, which need the privileged members intent: not listed."""
        return None

    async def register_webhook(self, instance: Instance, webhook_url: str) -> bool:
        """Discord has no webhook to register: ingress's bot receives the messages over the gateway."""
        return False

    async def check_account(self, instance: Instance) -> Account:
        """Log a throwaway client in with the instance's token (the cached one is not trusted for this)."""
        token = _token_of(instance)

        async def check(attempt: _Attempt) -> Account:
            client = self._new_client()
            try:
                await client.login(token)
                user = client.user
                if user is None:  # login() always sets it; kept for the type checker
                    raise ChannelTransientError("Discord did not say which bot the token belongs to")
                return Account(id=str(user.id), name=user.name)
            finally:
                await _close_quietly(client)

        return await self._bounded(check, "the token check")

    async def list_channels(self, instance: Instance) -> list[ChatChannel]:
        """Every channel of every guild the bot is in, guild by guild, each guild's channels by position."""

        async def collect(attempt: _Attempt) -> list[ChatChannel]:
            bot = await self._bot(instance)
            found: list[ChatChannel] = []
            async for guild in bot.client.fetch_guilds(limit=None):
                channels = sorted(await guild.fetch_channels(), key=lambda c: (c.position, c.id))
                for channel in channels:
                    kind = _channel_kind(channel.type)
                    if kind is None:
                        continue
                    category = channel.category_id
                    found.append(
                        ChatChannel(
                            id=str(channel.id),
                            name=channel.name,
                            kind=kind,
                            workspace_id=str(guild.id),
                            workspace_name=guild.name,
                            parent_id=str(category) if category else "",
                        )
                    )
            return found

        return await self._bounded(collect, "the channel list request")

    async def connection_status(self, instance: Instance, *, include_qr_code: bool) -> ConnectionStatus:
        """What ingress says about the instance's bot (Discord has no QR code: `include_qr_code` is moot)."""
        try:
            status = await self._status_source.bot_status(instance.name)
        except Exception as exc:
            return ConnectionStatus(state=ConnectionState.ERROR, detail=f"could not ask for the bot's status: {exc}")
        if status is None:
            return ConnectionStatus(
                state=ConnectionState.DISCONNECTED, detail="no bot is running for this instance (is it active?)"
            )
        return status

    # ------------------------------------------------------------------ clients

    def _new_client(self) -> discord.Client:
        client = discord.Client(intents=_REST_INTENTS, max_ratelimit_timeout=self._max_ratelimit_wait)
        # discord.py raises the limit to at least 30 s, longer than a send may take: the outbox would get a timeout
        # (outcome unknown) instead of Discord's retry_after. Its buckets read this attribute when created.
        client.http.max_ratelimit_timeout = self._max_ratelimit_wait
        return client

    async def _bot(self, instance: Instance) -> _Bot:
        """The cached logged-in client of the instance's current token, created (and the old one closed) on change."""
        token = _token_of(instance)
        lock = self._locks.setdefault(instance.name, asyncio.Lock())
        async with lock:
            cached = self._bots.get(instance.name)
            if cached is not None and cached.token == token:
                return cached
            if cached is not None:
                del self._bots[instance.name]
                await _close_quietly(cached.client)
            client = self._new_client()
            try:
                await client.login(token)
            except BaseException:
                await _close_quietly(client)
                raise
            if client.user is None:  # login() always sets it; kept for the type checker
                await _close_quietly(client)
                raise ChannelTransientError("Discord did not say which bot the token belongs to")
            bot = _Bot(client=client, token=token, user_id=client.user.id)
            self._bots[instance.name] = bot
            return bot

    async def _resolve(self, bot: _Bot, chat_id: str) -> int:
        """The channel id of `chat_id`: itself, or the DM channel of `user:<id>` (opened once, then cached)."""
        if chat_id.startswith(DM_PREFIX):
            user_id = _snowflake(chat_id.removeprefix(DM_PREFIX), chat_id)
            channel_id = bot.dm_channels.get(user_id)
            if channel_id is None:
                dm = await bot.client.create_dm(discord.Object(id=user_id))
                channel_id = bot.dm_channels[user_id] = dm.id
            return channel_id
        return _snowflake(chat_id, chat_id)

    async def _bounded(self, operation: Callable[[_Attempt], Awaitable[T]], what: str) -> T:
        """Run `operation` within the send timeout and turn whatever it raised into a classified channel error."""
        attempt = _Attempt()
        try:
            return await asyncio.wait_for(operation(attempt), self._timeout)
        except ChannelError:
            raise
        except TimeoutError as exc:
            raise ChannelTransientError(
                f"Discord did not answer {what} within {self._timeout:g} s", outcome_unknown=attempt.sending
            ) from exc
        except (discord.DiscordException, aiohttp.ClientError, OSError) as exc:
            raise classify(exc, what, sending=attempt.sending) from exc

    # ------------------------------------------------------------------ media


# ---------------------------------------------------------------------- classification


def classify(exc: BaseException, what: str, *, sending: bool) -> ChannelError:
    """The channel error of a discord.py or network failure; `sending` says whether the message request had started
    (only then may a lost answer mean a created message)."""
    if isinstance(exc, discord.RateLimited):
        return ChannelTransientError(
            f"Discord rate limited {what}; retry in {exc.retry_after:.2f} s",
            rate_limited=True,
            retry_after=exc.retry_after,
        )
    if isinstance(exc, discord.LoginFailure):
        return ChannelRejectedError(f"Discord refused the bot token: {exc}", reason=REASON_UNAUTHORIZED, status=401)
    if isinstance(exc, discord.HTTPException):
        return _classify_http(exc, what, sending=sending)
    return ChannelTransientError(f"could not reach Discord for {what}: {describe_error(exc)}", outcome_unknown=sending)


def _classify_http(exc: discord.HTTPException, what: str, *, sending: bool) -> ChannelError:
    status = exc.status
    words = _discord_words(exc)
    if status == 429:
        retry_after = _retry_after_header(exc)
        return ChannelTransientError(
            f"Discord rate limited {what} (429): {words}", rate_limited=True, retry_after=retry_after
        )
    if status >= 500:
        return ChannelTransientError(
            f"Discord failed {what} ({status}): {words}",
            outcome_unknown=sending and status in PROXY_TIMEOUT_STATUSES,
        )
    if status == 401:
        return ChannelRejectedError(
            f"Discord refused the bot token ({status}): {words}", reason=REASON_UNAUTHORIZED, status=status
        )
    code = f", code {exc.code}" if exc.code else ""
    reason = REASON_NOT_FOUND if status == 404 else REASON_REJECTED
    return ChannelRejectedError(f"Discord refused {what} ({status}{code}): {words}", reason=reason, status=status)


def _discord_words(exc: discord.HTTPException) -> str:
    """Discord's message with its nested field errors on one line.

    discord.py renders `{"message": "Invalid Form Body", "errors": {...}}` as "Invalid Form Body\\nIn content: Must
    be 2000 or fewer in length."; this gives "Invalid Form Body — content: Must be 2000 or fewer in length.".
    """
    lines = [line.strip() for line in exc.text.splitlines() if line.strip()]
    if not lines:
        return getattr(exc.response, "reason", None) or "no details"
    details = [line.removeprefix("In ") for line in lines[1:]]
    return lines[0] + (" — " + "; ".join(details) if details else "")


def _retry_after_header(exc: discord.HTTPException) -> float | None:
    headers = getattr(exc.response, "headers", None)
    raw = headers.get("Retry-After") if headers is not None else None
    try:
        return float(raw) if raw is not None else None
    except ValueError:
        return None


# ---------------------------------------------------------------------- helpers


def _token_of(instance: Instance) -> str:
    return bot_token_of(instance, DiscordConfig)


def _snowflake(raw: str, chat_id: str) -> int:
    if not raw.isdigit():
        raise ChannelRejectedError(
            f"{chat_id!r} is not a Discord channel id (or user:<id> for a direct message)", status=400
        )
    return int(raw)


def _caption(caption: str, media: Media) -> str:
    """The content sent with a file; `find_sent` looks for the same one."""
    return caption or media.caption


def _channel_kind(kind: discord.ChannelType) -> str | None:
    """`ChatChannel.kind` of a Discord channel type; None for one the hub does not list (group DMs)."""
    return {
        discord.ChannelType.text: "text",
        discord.ChannelType.voice: "voice",
        discord.ChannelType.category: "category",
        discord.ChannelType.news: "announcement",
        discord.ChannelType.forum: "forum",
        discord.ChannelType.media: "forum",
        discord.ChannelType.stage_voice: "stage",
        discord.ChannelType.news_thread: "thread",
        discord.ChannelType.public_thread: "thread",
        discord.ChannelType.private_thread: "thread",
        discord.ChannelType.private: "dm",
    }.get(kind)


async def _close_quietly(client: discord.Client) -> None:
    """Close a client; a failure to close must not hide the error that led here."""
    try:
        await client.close()
    except Exception:
        _log.warning("closing a Discord client failed", exc_info=True)
