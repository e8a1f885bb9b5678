"""Discord bots in ingress, against the Discord simulator with real discord.py clients and a real inbox.

What is stored (DMs, mentions with the mention stripped, replies to the bot; never bots nor unaddressed guild
chatter), that a bot runs in exactly one of two hosts sharing a database and moves when its owner dies, that a
refused token ends in `error` without a retry loop, that a changed token restarts the bot, and that a bot started
after a gap catches up on what its chats received meanwhile.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from typing import Any

import pytest

from servicekit.database import Database
from servicekit.instances import DiscordConfig, Instance
from servicekit.messages import message_from_json
from services.ingress.core.accept import IngressCore
from services.ingress.core.bots.discord_bot import Cursors, DiscordBot
from services.ingress.core.bots.host import BotHost, bot_statuses
from services.ingress.storage import BotLeaseStore, InboxStore
from simulators.discord import Bot, DiscordSimulator, Guild, User
from tests.helpers.instances import DictDirectory
from tests.ingress.support import eventually


@pytest.fixture
def sim(discord_sim: DiscordSimulator) -> DiscordSimulator:
    return discord_sim


@dataclasses.dataclass
class World:
    sim: DiscordSimulator
    bot: Bot
    user: User
    guild: Guild
    instance: Instance
    directory: DictDirectory
    core: IngressCore
    store: InboxStore
    leases: BotLeaseStore

    @property
    def general(self) -> str:
        return self.guild.channel_ids["general"]

    def host(self, owner: str, **options: Any) -> BotHost:
        def discord_bot(instance: Instance, cursors: Cursors, on_state_change: Callable[[], None]) -> DiscordBot:
            return DiscordBot(
                instance,
                self.core.accept,
                cursors=cursors,
                on_state_change=on_state_change,
                guild_ready_timeout=0.05,
            )

        defaults: dict[str, Any] = {"lease_seconds": 1.0, "renew_seconds": 0.1, "error_retry_seconds": 60.0}
        return BotHost(self.leases, {self.instance.channel: discord_bot}, owner=owner, **{**defaults, **options})


@pytest.fixture
async def world(sim: DiscordSimulator, store: InboxStore, db: Database) -> World:
    bot = sim.add_bot(name="omni-bot")
    user = sim.add_user(name="alice")
    guild = sim.add_guild(name="acme", bots=[bot.id], channels=("general", "random"))
    instance = Instance(name="disco", config=DiscordConfig(bot_token=bot.token))
    directory = DictDirectory(instance)
    core = IngressCore(store, directory)
    return World(sim, bot, user, guild, instance, directory, core, store, BotLeaseStore(db))


async def started(world: World, owner: str = "replica-a", **options: Any) -> BotHost:
    host = world.host(owner, **options)
    host.instances_changed(world.directory.instances)
    host.start()
    await eventually(lambda: _connected(world, host))
    return host


async def _connected(world: World, host: BotHost) -> bool:
    bot = host.bots.get(world.instance.name)
    return bot is not None and bot.status().state == "connected"


async def inbox_texts(world: World) -> list[str]:
    rows = await world.store._db.fetch("SELECT message FROM inbox ORDER BY sent_at, received_ns")
    return [message_from_json(str(r["message"])).text for r in rows]


async def test_dms_mentions_and_replies_are_stored_and_nothing_else(world: World) -> None:
    host = await started(world)
    try:
        sim, bot = world.sim, world.bot
        other_bot = sim.add_user(name="otherbot", bot=True)
        dm = await sim.send_dm(bot.id, world.user.id, "hi from a DM")
        mention = await sim.post_message(world.general, world.user.id, f"<@{bot.id}> what is up?", mentions=(bot.id,))
        await sim.post_message(world.general, world.user.id, "just chatting, no mention")
        await sim.post_message(world.general, other_bot.id, f"<@{bot.id}> I am a bot", mentions=(bot.id,))
        answer = await sim.post_message(world.general, bot.id, "an earlier bot message", mentions=())
        await sim.post_message(world.general, world.user.id, "replying without a ping", reply_to=answer["id"])

        await eventually(lambda: _count(world, 3))
        rows = await world.store._db.fetch("SELECT message FROM inbox ORDER BY sent_at, received_ns")
        messages = [message_from_json(str(r["message"])) for r in rows]
        assert [m.text for m in messages] == ["hi from a DM", "what is up?", "replying without a ping"]
        direct, guild_message, reply = messages
        assert (direct.chat_id, direct.is_group, direct.context["guild_id"]) == (dm["channel_id"], False, "")
        assert (guild_message.chat_id, guild_message.is_group) == (world.general, True)
        assert guild_message.context["guild_id"] == world.guild.id
        assert guild_message.channel_message_id == mention["id"]
        assert (guild_message.sender.id, guild_message.sender.display_name) == (world.user.id, "alice")
        assert reply.quoted is not None
        assert reply.quoted.channel_message_id == answer["id"]
    finally:
        await host.stop()


async def _count(world: World, expected: int) -> bool:
    return int(await world.store._db.fetchval("SELECT COUNT(*) FROM inbox")) >= expected


async def test_a_duplicate_gateway_delivery_is_stored_once(world: World) -> None:
    host = await started(world)
    try:
        message = await world.sim.send_dm(world.bot.id, world.user.id, "once")
        for _ in range(3):
            await world.sim.redeliver(message["id"])
        await eventually(lambda: _count(world, 1))
        await world.sim.send_dm(world.bot.id, world.user.id, "marker")
        await eventually(lambda: _count(world, 2))
        assert await inbox_texts(world) == ["once", "marker"]
    finally:
        await host.stop()


async def test_the_bot_runs_in_one_host_and_moves_when_its_owner_dies(world: World) -> None:
    first = await started(world, "replica-a")
    second = world.host("replica-b")
    second.instances_changed(world.directory.instances)
    second.start()
    try:
        await second.reconcile()
        assert (len(first.bots), len(second.bots)) == (1, 0)
        assert len(world.sim.sessions(world.bot.id)) == 1
        await eventually(lambda: _state(world, "connected"))
        [status] = await bot_statuses(world.leases, "disco", time.time())
        assert (status.owner, status.account_id) == ("replica-a", world.bot.id)

        # replica-a dies: its bot's connection drops and nobody renews its lease any more.
        assert first._task is not None
        first._task.cancel()
        await first.bots["disco"].stop()

        await eventually(lambda: _connected(world, second), timeout=10)
        [status] = await bot_statuses(world.leases, "disco", time.time())
        assert status.owner == "replica-b"
        await world.sim.send_dm(world.bot.id, world.user.id, "after the takeover")
        await eventually(lambda: _count(world, 1))
    finally:
        await second.stop()
        await first.stop()


async def test_a_refused_token_is_an_error_without_a_retry_loop(world: World) -> None:
    host = await started(world)
    try:
        world.sim.revoke_token(world.bot.token)
        await eventually(lambda: _state(world, "error"), timeout=10)
        [status] = await bot_statuses(world.leases, "disco", time.time())
        assert "token" in status.detail
        identifies = world.sim.identify_count(world.bot.id)
        for _ in range(10):
            await host.reconcile()
        assert world.sim.identify_count(world.bot.id) == identifies
    finally:
        await host.stop()


async def _state(world: World, state: str) -> bool:
    statuses = await bot_statuses(world.leases, "disco", time.time())
    return bool(statuses) and statuses[0].state == state


async def test_a_new_token_restarts_the_bot_and_an_inactive_instance_stops_it(world: World) -> None:
    host = await started(world)
    try:
        replacement = world.sim.add_bot(name="omni-bot-2")
        world.sim.add_guild(name="acme-2", bots=[replacement.id])
        changed = dataclasses.replace(world.instance, config=DiscordConfig(bot_token=replacement.token))
        host.instances_changed({"disco": changed})
        await eventually(lambda: _account(host, replacement.id), timeout=10)
        assert world.sim.sessions(world.bot.id) == []

        host.instances_changed({"disco": dataclasses.replace(changed, is_active=False)})
        await eventually(lambda: _state(world, "disconnected"), timeout=10)
        assert host.bots == {}
        host.instances_changed({})
        await host.reconcile()
        assert await bot_statuses(world.leases, "", time.time()) == []
    finally:
        await host.stop()


async def _account(host: BotHost, account_id: str) -> bool:
    bot = host.bots.get("disco")
    return bot is not None and bot.status().account_id == account_id and bot.status().state == "connected"


async def test_a_bot_started_after_a_gap_catches_up_on_its_chats(world: World) -> None:
    host = await started(world)
    await world.sim.send_dm(world.bot.id, world.user.id, "before the gap")
    await world.sim.post_message(
        world.general, world.user.id, f"<@{world.bot.id}> guild before", mentions=(world.bot.id,)
    )
    await eventually(lambda: _count(world, 2))
    await host.stop()

    await world.sim.send_dm(world.bot.id, world.user.id, "during the gap")
    await world.sim.post_message(
        world.general, world.user.id, f"<@{world.bot.id}> guild during", mentions=(world.bot.id,)
    )
    await world.sim.post_message(world.general, world.user.id, "unaddressed during the gap")

    again = await started(world, "replica-b")
    try:
        await eventually(lambda: _count(world, 4), timeout=10)
        texts = await inbox_texts(world)
        assert sorted(texts) == sorted(["before the gap", "guild before", "during the gap", "guild during"])
    finally:
        await again.stop()
