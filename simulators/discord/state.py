"""Everything the simulated Discord knows: users, bots, guilds, channels, DMs, messages, sessions and faults.

One `SimState` is shared by the REST routes, the gateway and the control endpoints; all of them run on one
event loop, so there is no locking. Lookups are dictionary hits and message history is kept sorted per channel,
so nothing a benchmark does grows quadratically: a message costs one store plus one frame per interested
gateway session.
"""

from __future__ import annotations

import asyncio
import base64
import bisect
import secrets
import time
from collections import Counter, OrderedDict, deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

from simulators.discord.wire import (
    CHANNEL_DM,
    CHANNEL_GUILD_TEXT,
    CHANNEL_PUBLIC_THREAD,
    Snowflakes,
    dispatch_frame,
)


@dataclass(frozen=True)
class User:
    """A Discord account that is not one of the simulated bots: a human, or a foreign bot (`bot=True`)."""

    id: str
    name: str
    bot: bool = False


@dataclass
class Bot:
    """One of the hub's bots: a bot user with a token, whose application id equals its user id."""

    id: str
    token: str
    name: str
    privileged_intents: bool = True
    """Whether the developer portal enabled the privileged intents; IDENTIFY asking for them fails with 4014."""


@dataclass
class Guild:
    """A guild; `channel_ids` maps each text channel's name to its id."""

    id: str
    name: str
    channel_ids: dict[str, str]
    owner_id: str = ""
    bot_ids: list[str] = field(default_factory=list)
    members: dict[str, float] = field(default_factory=dict)
    """Member user id → joined_at (epoch seconds); bots included."""
    thread_ids: list[str] = field(default_factory=list)


@dataclass
class Channel:
    """A guild text channel, a public thread or a DM channel, with its message history (ids sorted)."""

    id: str
    type: int
    name: str | None = None
    guild_id: str | None = None
    position: int = 0
    parent_id: str | None = None
    owner_id: str | None = None
    recipients: tuple[str, ...] = ()
    """DM channels: (bot id, user id)."""
    last_message_id: str | None = None
    created_at: float = field(default_factory=time.time)
    message_ids: list[int] = field(default_factory=list)


@dataclass
class StoredMessage:
    """A message as REST returns it (`data`), with what routing and filtering need alongside."""

    data: dict[str, Any]
    channel_id: str
    guild_id: str | None
    author_id: str
    mention_ids: frozenset[str]
    dm_bot_id: str | None = None
    """For DM messages: the bot on the other end (the only gateway audience)."""


@dataclass
class SentMessage:
    """A message one of the bots created through REST (what the channel would show)."""

    id: str
    channel_id: str
    bot_id: str
    content: str
    message_reference: str | None
    """The id of the message replied to, or None."""
    attachments: list[dict[str, Any]]
    """One `{filename, size, content_type}` per uploaded file."""
    embeds: list[dict[str, Any]]
    created_at: float
    """Wall-clock time the simulator accepted the message (the benchmark's end-to-end clock)."""
    guild_id: str | None = None
    message: dict[str, Any] = field(default_factory=dict)
    """The full message object answered to the bot."""


@dataclass(frozen=True)
class Fault:
    """One injected message-create failure: a 429 when `retry_after` is set, else a plain error status."""

    status: int
    retry_after: float | None = None
    is_global: bool = False
    bot_id: str | None = None


class FrameSink(Protocol):
    """The live end of a gateway session (a websocket connection)."""

    def push(self, frame: str) -> None:
        """Queue a text frame for sending, in order."""

    def close(self, code: int) -> None:
        """Close with `code` after the frames already queued."""

    def abort(self) -> None:
        """Drop the TCP connection without a close frame."""


@dataclass
class Session:
    """A gateway session: sequence numbers and a replay buffer that outlive its websocket, so RESUME works."""

    id: str
    bot_id: str
    intents: int
    shard: tuple[int, int] | None
    replay_limit: int
    sequence: int = 0
    sink: FrameSink | None = None
    ready: bool = False
    detached_at: float | None = None
    buffer: deque[tuple[int, str, str]] = field(default_factory=deque)
    """(sequence, event, data JSON): the data string is shared by every session the event went to."""

    def dispatch(self, event: str, data_json: str) -> int:
        """Number, buffer and (when connected) send one DISPATCH; returns its sequence number."""
        self.sequence += 1
        self.buffer.append((self.sequence, event, data_json))
        if len(self.buffer) > self.replay_limit:
            self.buffer.popleft()
        if self.sink is not None:
            self.sink.push(dispatch_frame(event, self.sequence, data_json))
        return self.sequence

    def missed_since(self, sequence: int) -> list[str] | None:
        """Frames after `sequence`, or None when some were already evicted (the session cannot resume)."""
        if sequence > self.sequence:
            return None
        if sequence == self.sequence:
            return []
        if not self.buffer or self.buffer[0][0] > sequence + 1:
            return None
        return [dispatch_frame(event, seq, data) for seq, event, data in self.buffer if seq > sequence]

    def handles_guild(self, guild_id: str) -> bool:
        """Discord routes a guild's events to shard `(guild_id >> 22) % num_shards`."""
        if self.shard is None:
            return True
        shard_id, shard_count = self.shard
        return (int(guild_id) >> 22) % shard_count == shard_id

    def handles_dms(self) -> bool:
        """DMs go to shard 0."""
        return self.shard is None or self.shard[0] == 0

    @property
    def connected(self) -> bool:
        """READY (or RESUMED) was sent and the websocket is open."""
        return self.ready and self.sink is not None


@dataclass(frozen=True)
class SessionInfo:
    """A snapshot of a connected session, for tests and `/__sim/state`."""

    session_id: str
    bot_id: str
    intents: int
    shard: tuple[int, int] | None
    sequence: int


NONCE_WINDOW = 300.0
"""Seconds a nonce with `enforce_nonce` deduplicates creates."""


def _new_token(user_id: str) -> str:
    """A token shaped like Discord's: base64(user id) . 6 chars . 38 chars."""
    head = base64.urlsafe_b64encode(user_id.encode()).decode().rstrip("=")
    return f"{head}.{secrets.token_urlsafe(5)[:6]}.{secrets.token_urlsafe(29)[:38]}"


class SimState:
    """The simulated Discord's data, plus recording and fault queues."""

    def __init__(self, *, replay_limit: int = 256, resume_window: float = 300.0, message_limit: int = 50_000) -> None:
        self.ids = Snowflakes()
        self.replay_limit = replay_limit
        self.resume_window = resume_window
        self.message_limit = message_limit
        self.users: dict[str, User] = {}
        self.bots: dict[str, Bot] = {}
        self.tokens: dict[str, str] = {}
        self.revoked: set[str] = set()
        self.guilds: dict[str, Guild] = {}
        self.guilds_of_bot: dict[str, list[str]] = {}
        self.channels: dict[str, Channel] = {}
        self.dm_channels: dict[tuple[str, str], str] = {}
        self.messages: dict[str, StoredMessage] = {}
        self._message_order: deque[str] = deque()
        self.attachments: dict[str, tuple[bytes, str]] = {}
        self.sessions: dict[str, Session] = {}
        self.sessions_of_bot: dict[str, dict[str, Session]] = {}
        self.identify_counts: Counter[str] = Counter()
        self.resume_counts: Counter[str] = Counter()
        self.sent: list[SentMessage] = []
        self.typing: list[tuple[str, str]] = []
        self.faults: deque[Fault] = deque()
        self.windows: dict[tuple[str, str], tuple[float, int]] = {}
        self.nonces: OrderedDict[tuple[str, str], tuple[str, float]] = OrderedDict()
        self.sent_signal = asyncio.Event()
        self.owner = self.add_user("sim-owner")

    # ------------------------------------------------------------------ entities

    def add_user(self, name: str, bot: bool = False) -> User:
        """A human (or a foreign bot) account."""
        user = User(id=self.ids.next(), name=name, bot=bot)
        self.users[user.id] = user
        return user

    def add_bot(self, name: str, token: str | None = None, privileged_intents: bool = True) -> Bot:
        """One of our bots; its token authenticates REST and IDENTIFY."""
        bot_id = self.ids.next()
        bot = Bot(id=bot_id, token=token or _new_token(bot_id), name=name, privileged_intents=privileged_intents)
        if bot.token in self.tokens:
            raise ValueError("a bot with this token already exists")
        self.bots[bot.id] = bot
        self.tokens[bot.token] = bot.id
        self.revoked.discard(bot.token)
        self.users[bot.id] = User(id=bot.id, name=name, bot=True)
        self.guilds_of_bot[bot.id] = []
        self.sessions_of_bot[bot.id] = {}
        return bot

    def bot_of_token(self, token: str) -> Bot | None:
        """The bot a (non-revoked) token belongs to."""
        bot_id = self.tokens.get(token)
        return self.bots.get(bot_id) if bot_id is not None else None

    def revoke(self, token: str) -> Bot | None:
        """Invalidate a token; returns its bot (None for an unknown token)."""
        bot = self.bot_of_token(token)
        if bot is not None:
            del self.tokens[token]
            self.revoked.add(token)
        return bot

    def add_guild(
        self, name: str, bots: Iterable[str] = (), channels: Iterable[str] = ("general",), owner_id: str | None = None
    ) -> Guild:
        """A guild with text channels, the given bots as members and an owner (the shared `sim-owner`)."""
        guild = Guild(id=self.ids.next(), name=name, channel_ids={}, owner_id=owner_id or self.owner.id)
        self.guilds[guild.id] = guild
        self.ensure_member(guild, guild.owner_id)
        for position, channel_name in enumerate(channels):
            channel = Channel(
                id=self.ids.next(), type=CHANNEL_GUILD_TEXT, name=channel_name, guild_id=guild.id, position=position
            )
            self.channels[channel.id] = channel
            guild.channel_ids[channel_name] = channel.id
        for bot_id in bots:
            self.join(guild, bot_id)
        return guild

    def join(self, guild: Guild, bot_id: str) -> None:
        """Make one of our bots a member of `guild`."""
        if bot_id not in self.bots:
            raise KeyError(f"unknown bot {bot_id}")
        if bot_id not in guild.bot_ids:
            guild.bot_ids.append(bot_id)
            self.guilds_of_bot[bot_id].append(guild.id)
        self.ensure_member(guild, bot_id)

    def ensure_member(self, guild: Guild, user_id: str) -> None:
        """Authors posting in a guild become members the first time (a test convenience)."""
        if user_id not in self.users:
            raise KeyError(f"unknown user {user_id}")
        guild.members.setdefault(user_id, time.time())

    def add_thread(self, guild_id: str, parent_channel_id: str, name: str, owner_id: str | None = None) -> Channel:
        """A public thread under a text channel of the guild."""
        guild = self.guild(guild_id)
        parent = self.channel(parent_channel_id)
        if parent.guild_id != guild.id or parent.type != CHANNEL_GUILD_TEXT:
            raise ValueError(f"channel {parent_channel_id} is not a text channel of guild {guild_id}")
        owner = owner_id or guild.owner_id
        self.ensure_member(guild, owner)
        thread = Channel(id=self.ids.next(), type=CHANNEL_PUBLIC_THREAD, name=name, guild_id=guild.id)
        thread.parent_id, thread.owner_id = parent.id, owner
        self.channels[thread.id] = thread
        guild.thread_ids.append(thread.id)
        return thread

    def open_dm(self, bot_id: str, user_id: str) -> Channel:
        """The DM channel between a bot and a user, created on first use."""
        if user_id not in self.users:
            raise KeyError(f"unknown user {user_id}")
        existing = self.dm_channels.get((bot_id, user_id))
        if existing is not None:
            return self.channels[existing]
        channel = Channel(id=self.ids.next(), type=CHANNEL_DM, recipients=(bot_id, user_id))
        self.channels[channel.id] = channel
        self.dm_channels[(bot_id, user_id)] = channel.id
        return channel

    def guild(self, guild_id: str) -> Guild:
        """A guild by id (KeyError when unknown)."""
        try:
            return self.guilds[guild_id]
        except KeyError:
            raise KeyError(f"unknown guild {guild_id}") from None

    def channel(self, channel_id: str) -> Channel:
        """A channel by id (KeyError when unknown)."""
        try:
            return self.channels[channel_id]
        except KeyError:
            raise KeyError(f"unknown channel {channel_id}") from None

    def user(self, user_id: str) -> User:
        """A user (or bot user) by id (KeyError when unknown)."""
        try:
            return self.users[user_id]
        except KeyError:
            raise KeyError(f"unknown user {user_id}") from None

    def can_access(self, bot_id: str, channel: Channel) -> bool:
        """A bot sees its guilds' channels and its own DMs."""
        if channel.type == CHANNEL_DM:
            return channel.recipients[0] == bot_id
        return channel.guild_id is not None and bot_id in self.guilds[channel.guild_id].bot_ids

    # ------------------------------------------------------------------ messages

    def store(self, message: StoredMessage) -> None:
        """Keep a message for lookups, redelivery and channel history."""
        message_id = message.data["id"]
        if message_id in self.messages:
            raise ValueError(f"message {message_id} already exists")
        self.messages[message_id] = message
        channel = self.channels[message.channel_id]
        numeric = int(message_id)
        if not channel.message_ids or numeric > channel.message_ids[-1]:
            channel.message_ids.append(numeric)
        else:
            bisect.insort(channel.message_ids, numeric)
        if channel.last_message_id is None or numeric >= int(channel.last_message_id):
            channel.last_message_id = message_id
        self._message_order.append(message_id)
        while len(self._message_order) > self.message_limit:
            self._forget_message(self._message_order.popleft())

    def _forget_message(self, message_id: str) -> None:
        """Evict the oldest stored message (and its attachment bytes) to bound memory in long benchmarks."""
        message = self.messages.pop(message_id, None)
        if message is None:
            return
        ids = self.channels[message.channel_id].message_ids
        index = bisect.bisect_left(ids, int(message_id))
        if index < len(ids) and ids[index] == int(message_id):
            del ids[index]
        for attachment in message.data["attachments"]:
            self.attachments.pop(attachment["id"], None)

    def message(self, message_id: str) -> StoredMessage:
        """A stored message by id (KeyError when unknown)."""
        try:
            return self.messages[message_id]
        except KeyError:
            raise KeyError(f"unknown message {message_id}") from None

    def history(
        self, channel: Channel, limit: int, before: int | None, after: int | None, around: int | None
    ) -> list[dict[str, Any]]:
        """Discord's `GET /channels/{id}/messages` selection, newest first."""
        ids = channel.message_ids
        if around is not None:
            middle = bisect.bisect_left(ids, around)
            start = max(0, middle - limit // 2)
            chosen = ids[start : start + limit]
        elif after is not None:
            start = bisect.bisect_right(ids, after)
            chosen = ids[start : start + limit]
        else:
            end = bisect.bisect_left(ids, before) if before is not None else len(ids)
            chosen = ids[max(0, end - limit) : end]
        return [self.messages[str(i)].data for i in reversed(chosen)]

    def record_sent(self, sent: SentMessage) -> None:
        """Remember a bot's message and wake `wait_for_sent`."""
        self.sent.append(sent)
        self.sent_signal.set()

    def recent_nonce(self, bot_id: str, nonce: str) -> StoredMessage | None:
        """The message a bot created with `nonce` in the last few minutes (Discord's `enforce_nonce` window)."""
        deadline = time.monotonic() - NONCE_WINDOW
        while self.nonces:
            oldest = next(iter(self.nonces.values()))
            if oldest[1] >= deadline:
                break
            self.nonces.popitem(last=False)
        found = self.nonces.get((bot_id, nonce))
        return self.messages.get(found[0]) if found is not None else None

    def remember_nonce(self, bot_id: str, nonce: str, message_id: str) -> None:
        """Record a created message's nonce so a retried create returns it instead of posting twice."""
        self.nonces[(bot_id, nonce)] = (message_id, time.monotonic())

    # ------------------------------------------------------------------ faults and rate limits

    def take_fault(self, bot_id: str) -> Fault | None:
        """The first pending fault aimed at this bot (or at any bot), consumed."""
        for index, fault in enumerate(self.faults):
            if fault.bot_id is None or fault.bot_id == bot_id:
                del self.faults[index]
                return fault
        return None

    def spend(self, bot_id: str, channel_id: str, limit: int, window: float) -> tuple[int, float]:
        """Count one message create in the (bot, channel) bucket; returns (remaining, seconds to reset).

        Remaining goes negative when a client ignores the headers, which the caller answers with a 429.
        """
        now = time.monotonic()
        key = (bot_id, channel_id)
        started, used = self.windows.get(key, (now, 0))
        if now - started >= window:
            started, used = now, 0
        used += 1
        self.windows[key] = (started, used)
        return limit - used, max(0.0, started + window - now)

    # ------------------------------------------------------------------ sessions

    def new_session(self, bot_id: str, intents: int, shard: tuple[int, int] | None) -> Session:
        """A fresh session after a successful IDENTIFY; stale detached sessions are forgotten here."""
        self._forget_stale_sessions()
        session = Session(
            id=secrets.token_hex(16), bot_id=bot_id, intents=intents, shard=shard, replay_limit=self.replay_limit
        )
        self.sessions[session.id] = session
        self.sessions_of_bot[bot_id][session.id] = session
        return session

    def end_session(self, session: Session) -> None:
        """Forget a session: it can no longer be resumed."""
        session.sink = None
        session.ready = False
        self.sessions.pop(session.id, None)
        self.sessions_of_bot.get(session.bot_id, {}).pop(session.id, None)

    def _forget_stale_sessions(self) -> None:
        deadline = time.monotonic() - self.resume_window
        stale = [s for s in self.sessions.values() if s.detached_at is not None and s.detached_at < deadline]
        for session in stale:
            self.end_session(session)

    def sessions_for(self, bot_id: str) -> Iterator[Session]:
        """Every live or resumable session of a bot (connected or not)."""
        yield from self.sessions_of_bot.get(bot_id, {}).values()

    def reset(self) -> None:
        """Forget recorded traffic and pending faults; entities, messages and sessions stay."""
        self.sent.clear()
        self.typing.clear()
        self.faults.clear()
        self.windows.clear()
        self.nonces.clear()
