"""The gateway websocket: HELLO, heartbeats, IDENTIFY → READY + GUILD_CREATE, RESUME with replay, dispatches.

Each websocket gets a `Connection` whose writer task sends queued frames in order, so dispatching an event is a
synchronous append (no awaiting a slow client) and a session's sequence numbers always reach the client in order.
Sessions (see `state.Session`) outlive their websocket: a dropped client RESUMEs and gets the events it missed.

Frames are JSON text; the `compress` query discord.py sends is ignored (it only inflates binary frames).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterable
from typing import Any

import orjson
from aiohttp import WSMsgType, web

from simulators.discord.objects import (
    application_flags,
    channel_object,
    current_user_object,
    gateway_message,
    guild_create_object,
    member_object,
    without_content,
)
from simulators.discord.state import Channel, Guild, Session, SimState, StoredMessage
from simulators.discord.wire import (
    ALL_INTENTS,
    API_VERSION,
    CLOSE_ALREADY_AUTHENTICATED,
    CLOSE_AUTHENTICATION_FAILED,
    CLOSE_DECODE_ERROR,
    CLOSE_DISALLOWED_INTENTS,
    CLOSE_INVALID_INTENTS,
    CLOSE_INVALID_SHARD,
    CLOSE_NOT_AUTHENTICATED,
    CLOSE_REASONS,
    CLOSE_SESSION_TIMED_OUT,
    CLOSE_UNKNOWN_ERROR,
    CLOSE_UNKNOWN_OPCODE,
    INTENT_DIRECT_MESSAGES,
    INTENT_GUILD_MESSAGES,
    INTENT_GUILD_PRESENCES,
    INTENT_MESSAGE_CONTENT,
    OP_HEARTBEAT,
    OP_HEARTBEAT_ACK,
    OP_HELLO,
    OP_IDENTIFY,
    OP_INVALID_SESSION,
    OP_PRESENCE_UPDATE,
    OP_RECONNECT,
    OP_REQUEST_GUILD_MEMBERS,
    OP_RESUME,
    OP_VOICE_STATE_UPDATE,
    PRIVILEGED_INTENTS,
    dumps,
)

log = logging.getLogger(__name__)

# Closes after which the client may RESUME; any other server close ends the session.
_RESUMABLE_CLOSES = frozenset({CLOSE_UNKNOWN_ERROR, CLOSE_UNKNOWN_OPCODE, CLOSE_DECODE_ERROR, 4008})
# Client close codes that end a session (a deliberate logout); 4000 and abnormal closures keep it resumable.
_CLEAN_CLIENT_CLOSES = frozenset({1000, 1001})
_HEARTBEAT_ACK = dumps({"op": OP_HEARTBEAT_ACK, "d": None})
_INVALID_SESSION = dumps({"op": OP_INVALID_SESSION, "d": False, "s": None, "t": None})
_RECONNECT = dumps({"op": OP_RECONNECT, "d": None, "s": None, "t": None})


class Connection:
    """One gateway websocket: an ordered outbox drained by a writer task, and the session it serves.

    Closing is a proper handshake: the writer flushes the frames queued before the close, the reading side is
    stopped, and only then is the close frame sent and the client's answer awaited. (aiohttp's `close()` racing a
    pending `receive()` would cut the TCP connection before the client answers, and the client would then see
    1006 instead of, say, 4004 or 4014.)
    """

    def __init__(self, ws: web.WebSocketResponse, request: web.Request) -> None:
        self.ws = ws
        self.request = request
        self.session: Session | None = None
        self.closing_code: int | None = None
        self.client_close_code: int | None = None
        self.aborted = False
        self.flushed = asyncio.Event()
        """Set when the writer reached the queued close (or stopped): the close frame may go out."""
        self.done = asyncio.Event()
        self._outbox: asyncio.Queue[str | None] = asyncio.Queue()
        self._writer = asyncio.get_running_loop().create_task(self._write())

    def push(self, frame: str) -> None:
        """Queue a text frame (ignored once a close is queued)."""
        if self.closing_code is None:
            self._outbox.put_nowait(frame)

    def close(self, code: int) -> None:
        """Close with `code` once the queued frames are out."""
        if self.closing_code is None and not self.aborted:
            self.closing_code = code
            self._outbox.put_nowait(None)

    def abort(self) -> None:
        """Cut the TCP connection without a close frame (what a network failure looks like)."""
        self.aborted = True
        transport = self.request.transport
        if transport is not None:
            transport.abort()

    async def _write(self) -> None:
        try:
            while (frame := await self._outbox.get()) is not None:
                await self.ws.send_str(frame)
        except (ConnectionError, RuntimeError) as exc:
            log.debug("gateway write failed: %s", exc)
        finally:
            self.flushed.set()

    async def send_close(self, grace: float) -> None:
        """After the reader stopped: flush, send the close frame and wait (bounded) for the client's answer."""
        if self.closing_code is None or self.aborted or self.ws.closed:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.flushed.wait(), grace)
        reason = CLOSE_REASONS.get(self.closing_code, "").encode()
        with contextlib.suppress(ConnectionError, RuntimeError, TimeoutError):
            await self.ws.close(code=self.closing_code, message=reason)

    async def stop_writer(self) -> None:
        """Stop the writer task (frames still queued are dropped: the socket is gone)."""
        if not self._writer.done():
            self._writer.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._writer


class Gateway:
    """The `/gateway` websocket endpoint and the fan-out of events to sessions."""

    def __init__(
        self, state: SimState, *, heartbeat_interval_ms: int, gateway_url: Callable[[], str], close_timeout: float = 5.0
    ) -> None:
        self.state = state
        self.heartbeat_interval_ms = heartbeat_interval_ms
        self.gateway_url = gateway_url
        self.close_timeout = close_timeout
        self.connections: set[Connection] = set()

    # ------------------------------------------------------------------ websocket endpoint

    async def handle(self, request: web.Request) -> web.WebSocketResponse:
        """Serve one gateway connection until either side closes it."""
        ws = web.WebSocketResponse(autoping=True, timeout=self.close_timeout, max_msg_size=1 << 20)
        await ws.prepare(request)
        conn = Connection(ws, request)
        self.connections.add(conn)
        hello = {"op": OP_HELLO, "d": {"heartbeat_interval": self.heartbeat_interval_ms}, "s": None, "t": None}
        conn.push(dumps(hello))
        reader = asyncio.get_running_loop().create_task(self._read(conn))
        flushed = asyncio.get_running_loop().create_task(conn.flushed.wait())
        try:
            await asyncio.wait({reader, flushed}, return_when=asyncio.FIRST_COMPLETED)
            # Stop reading before closing: a close() racing a pending receive() skips the handshake.
            for task in (reader, flushed):
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            await conn.send_close(self.close_timeout)
        finally:
            reader.cancel()
            flushed.cancel()
            await conn.stop_writer()
            self._detach(conn)
            self.connections.discard(conn)
            conn.done.set()
        return ws

    async def _read(self, conn: Connection) -> None:
        """Handle the client's frames until it closes, a close is queued, or it stays silent too long."""
        # Discord drops a client that stops heartbeating; allow two intervals of silence.
        silence = max(0.5, 2 * self.heartbeat_interval_ms / 1000)
        while conn.closing_code is None:
            try:
                msg = await conn.ws.receive(timeout=silence)
            except TimeoutError:
                conn.close(CLOSE_SESSION_TIMED_OUT)
                return
            if msg.type is WSMsgType.TEXT:
                self._on_payload(conn, msg.data)
            elif msg.type is WSMsgType.BINARY:
                conn.close(CLOSE_DECODE_ERROR)
            else:
                if msg.type is WSMsgType.CLOSE:
                    conn.client_close_code = int(msg.data)
                return

    def _detach(self, conn: Connection) -> None:
        session = conn.session
        if session is None or session.sink is not conn:
            return
        session.sink = None
        ended_by_client = conn.client_close_code in _CLEAN_CLIENT_CLOSES and not conn.aborted
        ended_by_server = conn.closing_code is not None and conn.closing_code not in _RESUMABLE_CLOSES
        if ended_by_client or ended_by_server:
            self.state.end_session(session)
        else:
            session.detached_at = time.monotonic()

    def _on_payload(self, conn: Connection, text: str) -> None:
        try:
            payload = orjson.loads(text)
            op = payload["op"]
            data = payload.get("d")
        except (orjson.JSONDecodeError, KeyError, TypeError):
            conn.close(CLOSE_DECODE_ERROR)
            return
        if op == OP_HEARTBEAT:
            conn.push(_HEARTBEAT_ACK)
        elif op in (OP_IDENTIFY, OP_RESUME):
            if conn.session is not None:
                conn.close(CLOSE_ALREADY_AUTHENTICATED)
            elif not isinstance(data, dict):
                conn.close(CLOSE_DECODE_ERROR)
            elif op == OP_IDENTIFY:
                self._identify(conn, data)
            else:
                self._resume(conn, data)
        elif conn.session is None:
            conn.close(CLOSE_NOT_AUTHENTICATED)
        elif op == OP_REQUEST_GUILD_MEMBERS and isinstance(data, dict):
            self._members_chunk(conn.session, data)
        elif op not in (OP_PRESENCE_UPDATE, OP_VOICE_STATE_UPDATE):
            conn.close(CLOSE_UNKNOWN_OPCODE)

    def _identify(self, conn: Connection, data: dict[str, Any]) -> None:
        bot = self.state.bot_of_token(str(data.get("token")))
        if bot is None:
            conn.close(CLOSE_AUTHENTICATION_FAILED)
            return
        intents = data.get("intents")
        if not isinstance(intents, int) or isinstance(intents, bool) or not 0 <= intents <= ALL_INTENTS:
            conn.close(CLOSE_INVALID_INTENTS)
            return
        if intents & PRIVILEGED_INTENTS and not bot.privileged_intents:
            conn.close(CLOSE_DISALLOWED_INTENTS)
            return
        try:
            shard = _parse_shard(data.get("shard"))
        except ValueError:
            conn.close(CLOSE_INVALID_SHARD)
            return
        session = self.state.new_session(bot.id, intents, shard)
        session.sink = conn
        conn.session = session
        guild_ids = [g for g in self.state.guilds_of_bot[bot.id] if session.handles_guild(g)]
        ready: dict[str, Any] = {
            "v": API_VERSION,
            "user": current_user_object(bot),
            "user_settings": {},
            "private_channels": [],
            "relationships": [],
            "presences": [],
            "guild_join_requests": [],
            "geo_ordered_rtc_regions": [],
            "guilds": [{"id": g, "unavailable": True} for g in guild_ids],
            "session_id": session.id,
            "session_type": "normal",
            "resume_gateway_url": self.gateway_url(),
            "application": {"id": bot.id, "flags": application_flags(bot)},
            "auth": {},
            "_trace": ['["omni-discord-simulator"]'],
        }
        if shard is not None:
            ready["shard"] = list(shard)
        session.dispatch("READY", dumps(ready))
        session.ready = True
        for guild_id in guild_ids:
            guild = self.state.guilds[guild_id]
            session.dispatch("GUILD_CREATE", self._guild_create(session, guild))
        self.state.identify_counts[bot.id] += 1

    def _guild_create(self, session: Session, guild: Guild) -> str:
        all_members = bool(session.intents & INTENT_GUILD_PRESENCES)
        return dumps(guild_create_object(self.state, guild, session.bot_id, all_members=all_members))

    def _resume(self, conn: Connection, data: dict[str, Any]) -> None:
        bot = self.state.bot_of_token(str(data.get("token")))
        if bot is None:
            conn.close(CLOSE_AUTHENTICATION_FAILED)
            return
        session = self.state.sessions.get(str(data.get("session_id")))
        sequence = data.get("seq")
        missed = None
        if session is not None and session.bot_id == bot.id:
            missed = session.missed_since(sequence if isinstance(sequence, int) else 0)
        if session is None or missed is None:
            if session is not None and session.bot_id == bot.id:
                self.state.end_session(session)
            conn.push(_INVALID_SESSION)
            return
        previous = session.sink
        if previous is not None and previous is not conn:
            session.sink = None
            previous.close(CLOSE_UNKNOWN_ERROR)
        session.sink = conn
        session.detached_at = None
        session.ready = True
        conn.session = session
        for frame in missed:
            conn.push(frame)
        session.dispatch("RESUMED", dumps({"_trace": ['["omni-discord-simulator"]']}))
        self.state.resume_counts[bot.id] += 1

    def _members_chunk(self, session: Session, data: dict[str, Any]) -> None:
        """Answer op 8 with one GUILD_MEMBERS_CHUNK (query prefix / user_ids / limit honoured)."""
        guild = self.state.guilds.get(str(data.get("guild_id")))
        if guild is None or session.bot_id not in guild.bot_ids:
            return
        wanted = {str(u) for u in data.get("user_ids") or ()}
        query = str(data.get("query") or "").lower()
        limit = data.get("limit") or 0
        members = []
        for user_id in guild.members:
            user = self.state.users[user_id]
            if (wanted and user_id not in wanted) or not user.name.lower().startswith(query):
                continue
            members.append(member_object(guild, user))
            if limit and len(members) >= limit:
                break
        chunk: dict[str, Any] = {
            "guild_id": guild.id,
            "members": members,
            "chunk_index": 0,
            "chunk_count": 1,
            "not_found": sorted(wanted - set(guild.members)),
        }
        if data.get("nonce") is not None:
            chunk["nonce"] = data["nonce"]
        session.dispatch("GUILD_MEMBERS_CHUNK", dumps(chunk))

    # ------------------------------------------------------------------ fan-out

    def dispatch_message(self, message: StoredMessage) -> int:
        """MESSAGE_CREATE to every session that would get it from Discord; returns how many did.

        Guild messages go to the sessions of every bot in the guild (routed by shard, needing GUILD_MESSAGES);
        DMs go to the bot's sessions on shard 0 (needing DIRECT_MESSAGES). Sessions without MESSAGE_CONTENT get
        empty content unless the message is a DM, mentions their bot or is their bot's own.
        """
        payload = gateway_message(self.state, message)
        full = dumps(payload)
        stripped: str | None = None
        if message.guild_id is not None:
            audience: Iterable[str] = self.state.guilds[message.guild_id].bot_ids
            intent = INTENT_GUILD_MESSAGES
        else:
            audience = (message.dm_bot_id,) if message.dm_bot_id is not None else ()
            intent = INTENT_DIRECT_MESSAGES
        reached = 0
        for bot_id in audience:
            for session in self.state.sessions_for(bot_id):
                if not session.ready or not session.intents & intent:
                    continue
                in_shard = session.handles_guild(message.guild_id) if message.guild_id else session.handles_dms()
                if not in_shard:
                    continue
                sees_content = (
                    message.guild_id is None
                    or session.intents & INTENT_MESSAGE_CONTENT
                    or bot_id == message.author_id
                    or bot_id in message.mention_ids
                )
                if not sees_content and stripped is None:
                    stripped = dumps(without_content(payload))
                session.dispatch("MESSAGE_CREATE", full if sees_content else stripped or full)
                reached += 1
        return reached

    def dispatch_guild_create(self, guild: Guild, bot_id: str) -> None:
        """A bot joined a guild while connected: GUILD_CREATE to its sessions for that guild's shard."""
        for session in self.state.sessions_for(bot_id):
            if session.ready and session.handles_guild(guild.id):
                session.dispatch("GUILD_CREATE", self._guild_create(session, guild))

    def dispatch_thread_create(self, thread: Channel) -> None:
        """A thread was created: THREAD_CREATE (`newly_created`) to the guild's bots."""
        assert thread.guild_id is not None
        data = dumps({**channel_object(self.state, thread), "newly_created": True})
        for bot_id in self.state.guilds[thread.guild_id].bot_ids:
            for session in self.state.sessions_for(bot_id):
                if session.ready and session.handles_guild(thread.guild_id):
                    session.dispatch("THREAD_CREATE", data)

    # ------------------------------------------------------------------ connection control

    def connections_of(self, bot_id: str | None) -> list[Connection]:
        """Open connections, all or those whose session belongs to `bot_id`."""
        return [c for c in self.connections if bot_id is None or (c.session is not None and c.session.bot_id == bot_id)]

    async def drop(self, bot_id: str | None, code: int | None, timeout: float = 5.0) -> int:
        """Cut (code None) or close with `code` the matching connections and wait until they are gone."""
        victims = self.connections_of(bot_id)
        for conn in victims:
            if code is None:
                conn.abort()
            else:
                conn.close(code)
        await self._wait_gone(victims, timeout)
        return len(victims)

    def close_bot(self, bot_id: str, code: int) -> None:
        """Close every connection of a bot with `code` (e.g. 4004 after its token was revoked)."""
        for conn in self.connections_of(bot_id):
            conn.close(code)

    def request_reconnect(self, bot_id: str | None) -> int:
        """Send op 7 RECONNECT: the client closes and RESUMEs."""
        victims = [c for c in self.connections_of(bot_id) if c.session is not None]
        for conn in victims:
            conn.push(_RECONNECT)
        return len(victims)

    async def close_all(self) -> None:
        """Shut down: close every websocket with 1001 (going away), cutting those that do not answer."""
        victims = list(self.connections)
        for conn in victims:
            conn.close(1001)
        await self._wait_gone(victims, 1.0)
        for conn in victims:
            if not conn.done.is_set():
                conn.abort()
        await self._wait_gone(victims, 1.0)

    @staticmethod
    async def _wait_gone(victims: list[Connection], timeout: float) -> None:
        if victims:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.gather(*(c.done.wait() for c in victims)), timeout)


def _parse_shard(value: Any) -> tuple[int, int] | None:
    """IDENTIFY's `shard: [id, count]` → tuple; None when absent; ValueError when malformed."""
    if value is None:
        return None
    if (
        isinstance(value, list)
        and len(value) == 2
        and all(isinstance(v, int) and not isinstance(v, bool) for v in value)
        and value[1] >= 1
        and 0 <= value[0] < value[1]
    ):
        return (value[0], value[1])
    raise ValueError(f"invalid shard {value!r}")
