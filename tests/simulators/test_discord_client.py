"""A real, unmodified discord.py client against the Discord simulator: login, events, sends and failures."""

from __future__ import annotations

import asyncio
import contextlib
import io
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import discord
import pytest

from simulators.discord import Bot, DiscordSimulator


@dataclass
class Running:
    """A started client with its events collected."""

    client: discord.Client
    task: asyncio.Task[None]
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    resumed: asyncio.Event = field(default_factory=asyncio.Event)
    messages: asyncio.Queue[discord.Message] = field(default_factory=asyncio.Queue)

    async def next_message(self, timeout: float = 3.0) -> discord.Message:
        return await asyncio.wait_for(self.messages.get(), timeout)


class Clients:
    """Starts discord.py clients against the simulator and closes them all at the end of the test."""

    def __init__(self) -> None:
        self.running: list[Running] = []

    def build(self, *, message_content: bool = True) -> discord.Client:
        intents = discord.Intents.default()
        intents.message_content = message_content
        return discord.Client(
            intents=intents, guild_ready_timeout=0.05, chunk_guilds_at_startup=False, max_messages=None
        )

    async def start(self, bot: Bot, *, message_content: bool = True, wait_ready: bool = True) -> Running:
        client = self.build(message_content=message_content)
        running = Running(client=client, task=asyncio.get_running_loop().create_task(client.start(bot.token)))
        self.running.append(running)

        @client.event
        async def on_ready() -> None:
            running.ready.set()

        @client.event
        async def on_resumed() -> None:
            running.resumed.set()

        @client.event
        async def on_message(message: discord.Message) -> None:
            await running.messages.put(message)

        if wait_ready:
            ready = asyncio.ensure_future(running.ready.wait())
            done, _ = await asyncio.wait({ready, running.task}, timeout=5.0, return_when=asyncio.FIRST_COMPLETED)
            if ready not in done:
                ready.cancel()
                if running.task.done():
                    running.task.result()
                raise TimeoutError("the client did not become ready")
        return running

    async def close_all(self) -> None:
        for running in self.running:
            await running.client.close()
        for running in self.running:
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await asyncio.wait_for(running.task, 5.0)


@pytest.fixture
def sim(discord_sim: DiscordSimulator) -> DiscordSimulator:
    return discord_sim


@pytest.fixture
async def clients(sim: DiscordSimulator) -> AsyncIterator[Clients]:
    started = Clients()
    try:
        yield started
    finally:
        await started.close_all()


@dataclass
class World:
    bot: Bot
    alice: str
    guild_id: str
    general: str
    random: str


@pytest.fixture
def world(sim: DiscordSimulator) -> World:
    bot = sim.add_bot("omni-bot")
    alice = sim.add_user("alice")
    guild = sim.add_guild("acme", bots=[bot.id], channels=("general", "random"))
    return World(bot, alice.id, guild.id, guild.channel_ids["general"], guild.channel_ids["random"])


async def test_login_ready_and_guild_cache(sim: DiscordSimulator, clients: Clients, world: World) -> None:
    running = await clients.start(world.bot)
    client = running.client
    assert client.user is not None
    assert str(client.user.id) == world.bot.id
    assert client.user.bot
    assert client.application_id == int(world.bot.id)
    guild = client.get_guild(int(world.guild_id))
    assert guild is not None
    assert guild.name == "acme"
    assert sorted(c.name for c in guild.text_channels) == ["general", "random"]
    assert guild.me is not None
    assert guild.me.id == int(world.bot.id)
    assert sim.connected_bot_ids() == [world.bot.id]
    assert sim.identify_count(world.bot.id) == 1
    assert len(sim.sessions(world.bot.id)) == 1


async def test_guild_mention_reaches_on_message(sim: DiscordSimulator, clients: Clients, world: World) -> None:
    running = await clients.start(world.bot)
    posted = await sim.post_message(world.general, world.alice, f"<@{world.bot.id}> hello", mentions=(world.bot.id,))
    message = await running.next_message()
    assert message.id == int(posted["id"])
    assert message.content == f"<@{world.bot.id}> hello"
    assert isinstance(message.channel, discord.TextChannel)
    assert message.channel.name == "general"
    assert message.guild is not None
    assert message.guild.id == int(world.guild_id)
    assert isinstance(message.author, discord.Member)
    assert message.author.name == "alice"
    assert not message.author.bot
    assert running.client.user in message.mentions


async def test_dm_reaches_on_message_as_a_dm_channel(sim: DiscordSimulator, clients: Clients, world: World) -> None:
    running = await clients.start(world.bot)
    await sim.send_dm(world.bot.id, world.alice, "hi in private")
    message = await running.next_message()
    assert isinstance(message.channel, discord.DMChannel)
    assert message.guild is None
    assert message.content == "hi in private"
    assert str(message.channel.id) == sim.dm_channel_id(world.bot.id, world.alice)


async def test_reply_is_recorded_with_its_reference(sim: DiscordSimulator, clients: Clients, world: World) -> None:
    running = await clients.start(world.bot)
    posted = await sim.post_message(world.general, world.alice, f"<@{world.bot.id}> ping", mentions=(world.bot.id,))
    message = await running.next_message()
    reply = await message.reply("pong")
    assert reply.reference is not None
    assert reply.reference.message_id == message.id
    assert reply.type is discord.MessageType.reply
    (sent,) = await sim.wait_for_sent(1)
    assert (sent.content, sent.channel_id, sent.bot_id) == ("pong", world.general, world.bot.id)
    assert sent.message_reference == posted["id"]
    echo = await running.next_message()
    assert echo.id == reply.id
    assert echo.author.id == int(world.bot.id)


async def test_file_upload_is_recorded_and_served(sim: DiscordSimulator, clients: Clients, world: World) -> None:
    running = await clients.start(world.bot)
    channel = running.client.get_channel(int(world.general))
    assert isinstance(channel, discord.TextChannel)
    sent_message = await channel.send("report", file=discord.File(io.BytesIO(b"hello file"), filename="notes.txt"))
    (sent,) = await sim.wait_for_sent(1)
    assert sent.content == "report"
    assert sent.attachments == [{"filename": "notes.txt", "size": 10, "content_type": "text/plain"}]
    assert await sent_message.attachments[0].read() == b"hello file"


async def test_create_dm_then_send(sim: DiscordSimulator, clients: Clients, world: World) -> None:
    running = await clients.start(world.bot)
    dm = await running.client.create_dm(discord.Object(id=int(world.alice)))
    await dm.send("hello alice")
    (sent,) = await sim.wait_for_sent(1)
    assert sent.channel_id == sim.dm_channel_id(world.bot.id, world.alice) == str(dm.id)
    assert sent.guild_id is None
    assert sent.content == "hello alice"


async def test_send_by_channel_id_without_cache(sim: DiscordSimulator, clients: Clients, world: World) -> None:
    running = await clients.start(world.bot)
    await running.client.get_partial_messageable(int(world.random)).send("by id")
    (sent,) = await sim.wait_for_sent(1)
    assert (sent.channel_id, sent.content) == (world.random, "by id")


async def test_over_2000_characters_is_50035(sim: DiscordSimulator, clients: Clients, world: World) -> None:
    running = await clients.start(world.bot)
    channel = running.client.get_partial_messageable(int(world.general))
    with pytest.raises(discord.HTTPException) as caught:
        await channel.send("x" * 2001)
    assert (caught.value.status, caught.value.code) == (400, 50035)
    assert sim.sent == []
    await channel.send("x" * 2000)
    assert len(sim.sent) == 1


async def test_rate_limited_send_is_retried_by_discord_py(
    sim: DiscordSimulator, clients: Clients, world: World
) -> None:
    running = await clients.start(world.bot)
    sim.rate_limit_next(2, retry_after=0.1)
    started = time.monotonic()
    await running.client.get_partial_messageable(int(world.general)).send("eventually")
    assert time.monotonic() - started >= 0.2
    assert [s.content for s in sim.sent] == ["eventually"]


async def test_injected_errors(sim: DiscordSimulator, clients: Clients, world: World) -> None:
    running = await clients.start(world.bot)
    channel = running.client.get_partial_messageable(int(world.general))
    sim.fail_next(1, status=403)
    with pytest.raises(discord.Forbidden):
        await channel.send("refused")
    sim.fail_next(1, status=500)  # discord.py retries a 500 after one second
    await channel.send("after a 500")
    assert [s.content for s in sim.sent] == ["after a 500"]


async def test_typing_is_recorded(sim: DiscordSimulator, clients: Clients, world: World) -> None:
    running = await clients.start(world.bot)
    channel = running.client.get_channel(int(world.general))
    assert isinstance(channel, discord.TextChannel)
    async with channel.typing():
        pass
    assert sim.typing == [(world.bot.id, world.general)]


async def test_history_and_fetch_see_what_was_sent(sim: DiscordSimulator, clients: Clients, world: World) -> None:
    running = await clients.start(world.bot)
    channel = running.client.get_channel(int(world.general))
    assert isinstance(channel, discord.TextChannel)
    await sim.post_message(world.general, world.alice, "first")
    mine = await channel.send("second")
    history = [m.content async for m in channel.history(limit=10)]
    assert history == ["second", "first"]
    fetched = await channel.fetch_message(mine.id)
    assert fetched.content == "second"
    assert fetched.author.id == int(world.bot.id)


async def test_thread_message_and_reply(sim: DiscordSimulator, clients: Clients, world: World) -> None:
    running = await clients.start(world.bot)
    thread_id = sim.add_thread(world.guild_id, world.general, name="help")
    await sim.post_message(thread_id, world.alice, f"<@{world.bot.id}> in a thread", mentions=(world.bot.id,))
    message = await running.next_message()
    assert isinstance(message.channel, discord.Thread)
    assert message.channel.name == "help"
    assert message.channel.parent_id == int(world.general)
    await message.channel.send("answer in thread")
    (sent,) = await sim.wait_for_sent(1)
    assert sent.channel_id == thread_id


async def test_bad_token_is_login_failure(sim: DiscordSimulator, clients: Clients) -> None:
    client = clients.build()
    try:
        with pytest.raises(discord.LoginFailure):
            await client.start("not-a-token")
    finally:
        await client.close()


async def test_refused_privileged_intents(sim: DiscordSimulator, clients: Clients) -> None:
    bot = sim.add_bot("no-privileges", privileged_intents=False)
    client = clients.build(message_content=True)
    try:
        with pytest.raises(discord.PrivilegedIntentsRequired):
            await asyncio.wait_for(client.start(bot.token), 5)
    finally:
        await client.close()
    assert sim.connected_bot_ids() == []


async def test_without_message_content_only_mentions_and_dms_carry_content(
    sim: DiscordSimulator, clients: Clients
) -> None:
    bot = sim.add_bot("plain", privileged_intents=False)
    alice = sim.add_user("alice")
    guild = sim.add_guild("acme", bots=[bot.id])
    running = await clients.start(bot, message_content=False)
    channel = guild.channel_ids["general"]
    await sim.post_message(channel, alice.id, "chatter")
    await sim.post_message(channel, alice.id, f"<@{bot.id}> hey", mentions=(bot.id,))
    await sim.send_dm(bot.id, alice.id, "private")
    contents = [(await running.next_message()).content for _ in range(3)]
    assert contents == ["", f"<@{bot.id}> hey", "private"]


async def test_dropped_connection_resumes_and_replays(sim: DiscordSimulator, clients: Clients, world: World) -> None:
    running = await clients.start(world.bot)
    assert await sim.drop_connections() == 1
    await sim.post_message(world.general, world.alice, "while you were away")
    message = await running.next_message()
    assert message.content == "while you were away"
    await asyncio.wait_for(running.resumed.wait(), 3)
    assert sim.resume_count(world.bot.id) == 1
    assert sim.identify_count(world.bot.id) == 1
    await sim.post_message(world.general, world.alice, "and after")
    assert (await running.next_message()).content == "and after"


async def test_reconnect_request_resumes(sim: DiscordSimulator, clients: Clients, world: World) -> None:
    running = await clients.start(world.bot)
    assert sim.request_reconnect(world.bot.id) == 1
    await asyncio.wait_for(running.resumed.wait(), 3)
    assert (sim.resume_count(world.bot.id), sim.identify_count(world.bot.id)) == (1, 1)


async def test_three_bots_get_only_their_own_traffic(sim: DiscordSimulator, clients: Clients) -> None:
    alice = sim.add_user("alice")
    bots = [sim.add_bot(f"tenant-{i}") for i in range(3)]
    own = [sim.add_guild(f"guild-{i}", bots=[b.id]) for i, b in enumerate(bots[:2])]
    shared = sim.add_guild("everyone", bots=[b.id for b in bots])
    running = [await clients.start(b) for b in bots]
    await sim.post_message(own[0].channel_ids["general"], alice.id, "for tenant 0")
    await sim.post_message(own[1].channel_ids["general"], alice.id, "for tenant 1")
    await sim.send_dm(bots[2].id, alice.id, "dm for tenant 2")
    await sim.send_dm(bots[1].id, alice.id, "dm for tenant 1")
    await sim.post_message(shared.channel_ids["general"], alice.id, "barrier")
    seen = [[(await r.next_message()).content for _ in range(n)] for r, n in zip(running, (2, 3, 2), strict=True)]
    assert seen == [
        ["for tenant 0", "barrier"],
        ["for tenant 1", "dm for tenant 1", "barrier"],
        ["dm for tenant 2", "barrier"],
    ]


async def test_redeliver_fires_on_message_twice(sim: DiscordSimulator, clients: Clients, world: World) -> None:
    running = await clients.start(world.bot)
    posted = await sim.post_message(world.general, world.alice, "once")
    first = await running.next_message()
    assert running.client.ws is not None
    sequence = running.client.ws.sequence
    assert await sim.redeliver(posted["id"]) == 1
    second = await running.next_message()
    assert first.id == second.id == int(posted["id"])
    assert running.client.ws.sequence is not None
    assert sequence is not None
    assert running.client.ws.sequence > sequence


async def test_revoked_token_closes_the_session(sim: DiscordSimulator, clients: Clients, world: World) -> None:
    running = await clients.start(world.bot)
    sim.revoke_token(world.bot.token)
    with pytest.raises(discord.ConnectionClosed) as caught:
        await asyncio.wait_for(running.task, 5)
    assert caught.value.code == 4004
    assert sim.connected_bot_ids() == []
    assert sim.sessions(world.bot.id) == []


async def test_fifty_bots_connect_in_one_loop(sim: DiscordSimulator, clients: Clients) -> None:
    alice = sim.add_user("alice")
    bots = [sim.add_bot(f"tenant-{i}") for i in range(50)]
    guilds = [sim.add_guild(f"guild-{i}", bots=[b.id]) for i, b in enumerate(bots)]
    started = time.monotonic()
    running = await asyncio.gather(*(clients.start(b) for b in bots))
    assert time.monotonic() - started < 5
    assert sorted(sim.connected_bot_ids()) == sorted(b.id for b in bots)
    await asyncio.gather(*(sim.post_message(g.channel_ids["general"], alice.id, g.name) for g in guilds))
    contents = await asyncio.gather(*(r.next_message() for r in running))
    assert [m.content for m in contents] == [g.name for g in guilds]


async def test_members_intent_chunks_guilds_at_startup(sim: DiscordSimulator, clients: Clients, world: World) -> None:
    await sim.post_message(world.general, world.alice, "alice is now a member")
    intents = discord.Intents.default()
    intents.members = True
    client = discord.Client(intents=intents, guild_ready_timeout=0.05)
    ready = asyncio.Event()

    @client.event
    async def on_ready() -> None:
        ready.set()

    task = asyncio.create_task(client.start(world.bot.token))
    try:
        await asyncio.wait_for(ready.wait(), 5)
        guild = client.get_guild(int(world.guild_id))
        assert guild is not None
        assert guild.chunked
        assert sorted(m.name for m in guild.members) == ["alice", "omni-bot", "sim-owner"]
    finally:
        await client.close()
        await asyncio.wait_for(task, 5)
