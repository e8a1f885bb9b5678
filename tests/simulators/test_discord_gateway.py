"""The Discord simulator's gateway protocol, driven frame by frame over a plain websocket."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import orjson
import pytest

from simulators.discord import Bot, DiscordSimulator, Guild

GUILDS_AND_MESSAGES = (1 << 0) | (1 << 9) | (1 << 12) | (1 << 15)


@pytest.fixture
async def sim() -> AsyncIterator[DiscordSimulator]:
    simulator = DiscordSimulator(heartbeat_interval_ms=5000)
    await simulator.start()
    try:
        yield simulator
    finally:
        await simulator.stop()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


class Socket:
    """A bare gateway client."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws

    async def send(self, op: int, d: Any) -> None:
        await self.ws.send_str(orjson.dumps({"op": op, "d": d}).decode())

    async def recv(self) -> dict[str, Any]:
        msg = await asyncio.wait_for(self.ws.receive(), 3)
        assert msg.type is aiohttp.WSMsgType.TEXT, msg
        frame: dict[str, Any] = orjson.loads(msg.data)
        return frame

    async def closed_with(self) -> int | None:
        msg = await asyncio.wait_for(self.ws.receive(), 3)
        assert msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED), msg
        return self.ws.close_code

    async def identify(self, token: str, intents: int = GUILDS_AND_MESSAGES, **extra: Any) -> dict[str, Any]:
        await self.send(2, {"token": token, "intents": intents, "properties": {}, **extra})
        return await self.recv()


async def connect(http: aiohttp.ClientSession, sim: DiscordSimulator, interval: int = 5000) -> Socket:
    ws = await http.ws_connect(sim.gateway_url + "?v=10&encoding=json&compress=zlib-stream")
    socket = Socket(ws)
    hello = await socket.recv()
    assert hello["op"] == 10
    assert hello["d"]["heartbeat_interval"] == interval
    return socket


async def test_heartbeat_identify_ready_and_guild_create(sim: DiscordSimulator, http: aiohttp.ClientSession) -> None:
    bot = sim.add_bot("omni-bot")
    guild = sim.add_guild("acme", bots=[bot.id])
    socket = await connect(http, sim)
    await socket.send(1, None)
    assert (await socket.recv())["op"] == 11
    ready = await socket.identify(bot.token)
    assert (ready["op"], ready["t"], ready["s"]) == (0, "READY", 1)
    data = ready["d"]
    assert data["v"] == 10
    assert data["user"]["id"] == bot.id
    assert data["resume_gateway_url"] == sim.gateway_url
    assert data["guilds"] == [{"id": guild.id, "unavailable": True}]
    assert data["application"]["id"] == bot.id
    assert "shard" not in data
    created = await socket.recv()
    assert (created["t"], created["s"]) == ("GUILD_CREATE", 2)
    assert created["d"]["id"] == guild.id
    assert created["d"]["members"][0]["flags"] == 0
    assert created["d"]["channels"][0]["guild_id"] == guild.id
    assert sim.connected_bot_ids() == [bot.id]
    await socket.ws.close()


@pytest.mark.parametrize(
    ("payloads", "code"),
    [
        ([(2, {"token": "wrong", "intents": 513})], 4004),
        ([(8, {"guild_id": "1"})], 4003),
        ([(2, {"token": "TOKEN", "intents": 513}), (2, {"token": "TOKEN", "intents": 513})], 4005),
        ([(2, {"token": "TOKEN", "intents": 1 << 30})], 4013),
        ([(2, {"token": "TOKEN", "intents": 513, "shard": [2, 2]})], 4010),
        ([(2, {"token": "TOKEN", "intents": 513}), (99, None)], 4001),
    ],
)
async def test_protocol_errors_close_with_discord_codes(
    sim: DiscordSimulator, http: aiohttp.ClientSession, payloads: list[tuple[int, Any]], code: int
) -> None:
    sim.add_bot("omni-bot", token="TOKEN")
    socket = await connect(http, sim)
    for op, d in payloads:
        await socket.send(op, d)
    while True:
        msg = await asyncio.wait_for(socket.ws.receive(), 3)
        if msg.type is not aiohttp.WSMsgType.TEXT:
            break
    assert socket.ws.close_code == code


async def test_binary_frames_are_a_decode_error(sim: DiscordSimulator, http: aiohttp.ClientSession) -> None:
    socket = await connect(http, sim)
    await socket.ws.send_bytes(b"\x78\x9c")
    assert await socket.closed_with() == 4002


async def test_privileged_intents_refused_with_4014(sim: DiscordSimulator, http: aiohttp.ClientSession) -> None:
    bot = sim.add_bot("plain", privileged_intents=False)
    socket = await connect(http, sim)
    await socket.send(2, {"token": bot.token, "intents": 1 << 15})
    assert await socket.closed_with() == 4014
    socket = await connect(http, sim)
    assert (await socket.identify(bot.token, intents=(1 << 0) | (1 << 9)))["t"] == "READY"
    await socket.ws.close()


async def test_resume_replays_missed_events(sim: DiscordSimulator, http: aiohttp.ClientSession) -> None:
    bot = sim.add_bot("omni-bot")
    alice = sim.add_user("alice")
    channel = sim.add_guild("acme", bots=[bot.id]).channel_ids["general"]
    socket = await connect(http, sim)
    ready = await socket.identify(bot.token)
    await socket.recv()  # GUILD_CREATE, s=2
    await sim.post_message(channel, alice.id, "seen")
    assert (await socket.recv())["s"] == 3
    assert await sim.drop_connections(bot.id) == 1
    await sim.post_message(channel, alice.id, "missed 1")
    await sim.post_message(channel, alice.id, "missed 2")
    socket = await connect(http, sim)
    await socket.send(6, {"token": bot.token, "session_id": ready["d"]["session_id"], "seq": 3})
    replayed = [await socket.recv() for _ in range(3)]
    assert [(f["t"], f["s"]) for f in replayed] == [("MESSAGE_CREATE", 4), ("MESSAGE_CREATE", 5), ("RESUMED", 6)]
    assert [f["d"]["content"] for f in replayed[:2]] == ["missed 1", "missed 2"]
    assert sim.resume_count(bot.id) == 1
    assert sim.connected_bot_ids() == [bot.id]
    await socket.ws.close()


async def test_unknown_or_ended_sessions_are_invalid(sim: DiscordSimulator, http: aiohttp.ClientSession) -> None:
    bot = sim.add_bot("omni-bot")
    socket = await connect(http, sim)
    await socket.send(6, {"token": bot.token, "session_id": "nope", "seq": 1})
    assert await socket.recv() == {"op": 9, "d": False, "s": None, "t": None}
    await socket.ws.close()
    socket = await connect(http, sim)
    ready = await socket.identify(bot.token)
    await socket.ws.close(code=1000)  # a clean logout ends the session
    await asyncio.sleep(0.05)
    socket = await connect(http, sim)
    await socket.send(6, {"token": bot.token, "session_id": ready["d"]["session_id"], "seq": 1})
    assert (await socket.recv())["op"] == 9
    await socket.ws.close()


async def test_shards_get_their_guilds_and_dms_go_to_shard_zero(
    sim: DiscordSimulator, http: aiohttp.ClientSession
) -> None:
    bot: Bot = sim.add_bot("big-bot")
    alice = sim.add_user("alice")
    # Routing uses the id's timestamp bits (id >> 22), so guilds made in the same millisecond share a shard.
    guilds: list[Guild] = []
    by_shard: dict[int, set[str]] = {0: set(), 1: set()}
    while not (by_shard[0] and by_shard[1]):
        guild = sim.add_guild(f"g{len(guilds)}", bots=[bot.id])
        guilds.append(guild)
        by_shard[(int(guild.id) >> 22) % 2].add(guild.id)
        await asyncio.sleep(0.001)
    sockets = []
    for shard_id in (0, 1):
        socket = await connect(http, sim)
        ready = await socket.identify(bot.token, shard=[shard_id, 2])
        assert ready["d"]["shard"] == [shard_id, 2]
        assert {g["id"] for g in ready["d"]["guilds"]} == by_shard[shard_id]
        for _ in by_shard[shard_id]:
            assert (await socket.recv())["t"] == "GUILD_CREATE"
        sockets.append(socket)
    await sim.send_dm(bot.id, alice.id, "dm")
    target = next(g for g in guilds if g.id in by_shard[1])
    await sim.post_message(target.channel_ids["general"], alice.id, "guild")
    assert (await sockets[0].recv())["d"]["content"] == "dm"
    assert (await sockets[1].recv())["d"]["content"] == "guild"
    for socket in sockets:
        await socket.ws.close()


async def test_members_chunk_answers_op_8(sim: DiscordSimulator, http: aiohttp.ClientSession) -> None:
    bot = sim.add_bot("omni-bot")
    alice = sim.add_user("alice")
    guild = sim.add_guild("acme", bots=[bot.id])
    await sim.post_message(guild.channel_ids["general"], alice.id, "joins the member list")
    socket = await connect(http, sim)
    await socket.identify(bot.token, intents=GUILDS_AND_MESSAGES | (1 << 1))
    await socket.recv()  # GUILD_CREATE
    await socket.send(8, {"guild_id": guild.id, "query": "al", "limit": 0, "nonce": "n1"})
    chunk = await socket.recv()
    assert chunk["t"] == "GUILD_MEMBERS_CHUNK"
    assert chunk["d"]["nonce"] == "n1"
    assert [m["user"]["username"] for m in chunk["d"]["members"]] == ["alice"]
    await socket.ws.close()


async def test_silent_client_is_timed_out(http: aiohttp.ClientSession) -> None:
    simulator = DiscordSimulator(heartbeat_interval_ms=200)
    await simulator.start()
    try:
        ws = await http.ws_connect(simulator.gateway_url)
        assert (await ws.receive()).type is aiohttp.WSMsgType.TEXT
        msg = await asyncio.wait_for(ws.receive(), 3)
        assert msg.type is aiohttp.WSMsgType.CLOSE
        assert ws.close_code == 4009
        await ws.close()
    finally:
        await simulator.stop()


async def test_resume_too_far_behind_is_invalid(http: aiohttp.ClientSession) -> None:
    simulator = DiscordSimulator(replay_limit=2)
    await simulator.start()
    try:
        bot = simulator.add_bot("omni-bot")
        alice = simulator.add_user("alice")
        channel = simulator.add_guild("acme", bots=[bot.id]).channel_ids["general"]
        socket = await connect(http, simulator, interval=41250)
        ready = await socket.identify(bot.token)
        assert await simulator.drop_connections() == 1
        for text in ("a", "b", "c"):
            await simulator.post_message(channel, alice.id, text)
        socket = await connect(http, simulator, interval=41250)
        await socket.send(6, {"token": bot.token, "session_id": ready["d"]["session_id"], "seq": 1})
        assert (await socket.recv())["op"] == 9
        await socket.ws.close()
    finally:
        await simulator.stop()
