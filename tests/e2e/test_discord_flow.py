"""Discord through the real mesh: a user's message reaches ingress's bot over the simulator's gateway, goes through
router → agent → channels and comes back over Discord REST — with its trace, under duplicates, rate limits, a
SIGKILLed ingress, a revoked token and (PostgreSQL) a bot taken over by another ingress replica."""

from __future__ import annotations

import asyncio
import contextlib
import re
import signal
import sys
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from omni.ingress.v1 import ingress_service_pb2, ingress_service_pb2_grpc

from launcher.local_mesh import REPO_ROOT, free_port
from servicekit.database import open_database
from servicekit.grpc_clients import open_channel
from servicekit.settings import MeshSettings
from services.ingress.storage import SCHEMA, BotLeaseStore
from simulators.discord import SentMessage
from tests.e2e.conftest import AGENT_KEY, DISCORD_LEASE_SECONDS, DISCORD_RENEW_SECONDS, DiscordWorld, Tenant
from tests.helpers.mesh import API_KEY, eventually

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="module")]

LIMIT = 2000
"""Discord's message length limit."""
FENCE = "```"


# ---------------------------------------------------------------------- helpers


def sent_by(world: DiscordWorld, tenant: Tenant, channel_id: str | None = None) -> list[SentMessage]:
    """What the tenant's bot sent (in `channel_id` only, when given), in order."""
    return [
        m
        for m in world.discord.sent
        if m.bot_id == tenant.bot.id and (channel_id is None or m.channel_id == channel_id)
    ]


def calls_of(world: DiscordWorld, tenant: Tenant) -> list[dict[str, Any]]:
    """The agent calls made for the tenant's instance, in order."""
    return [c for c in world.agent.calls if c["context"]["instance"] == tenant.instance]


async def replies(
    world: DiscordWorld, tenant: Tenant, count: int, channel_id: str | None = None, timeout: float = 20
) -> list[SentMessage]:
    """The bot's messages once there are at least `count` of them."""

    async def probe() -> list[SentMessage] | None:
        found = sent_by(world, tenant, channel_id)
        return found if len(found) >= count else None

    return await eventually(probe, timeout=timeout)


async def settled(world: DiscordWorld, tenant: Tenant, count: int, timeout: float = 20) -> list[SentMessage]:
    """The bot's messages once `count` arrived and a moment passed in which no further one (a duplicate) came."""
    await replies(world, tenant, count, timeout=timeout)
    await asyncio.sleep(1.0)  # anything arriving now would be a duplicate
    return sent_by(world, tenant)


async def mention(world: DiscordWorld, tenant: Tenant, text: str, channel_id: str | None = None) -> dict[str, Any]:
    """`<@bot> text` by the tenant's user in a guild channel (general by default)."""
    return await world.discord.post_message(
        channel_id or tenant.general, tenant.user.id, f"<@{tenant.bot.id}> {text}", mentions=[tenant.bot.id]
    )


def answered_once(sent: list[SentMessage], messages: list[dict[str, Any]]) -> None:
    """Each message got exactly one reply, quoting it, with its echo; no other reply was sent."""
    by_reference: dict[str, list[str]] = {}
    for reply in sent:
        assert reply.message_reference is not None, reply
        by_reference.setdefault(reply.message_reference, []).append(reply.content)
    expected = {m["id"]: [f"Echo: {_text_of(m)}"] for m in messages}
    assert by_reference == expected


def _text_of(message: dict[str, Any]) -> str:
    return re.sub(r"<@!?\d+>", "", message["content"]).strip()


async def trace_of(world: DiscordWorld, tenant: Tenant, message_id: str, status: str, *spans: str) -> dict[str, Any]:
    """The trace of the Discord message `message_id` once it has `status` and every span named in `spans` (each
    service exports its spans on its own schedule, so the last ones may land a moment after the status).

    It is found by its incoming payload, not by the list's `channel_message_id`: the channels.send span sets that
    attribute to the reply's id, and the trace keeps whichever of the two reaches the tracing service first."""

    async def probe() -> dict[str, Any] | None:
        for summary in await traces_of(world, tenant):
            code, trace = await world.mesh.get_json(f"/api/v1/traces/{summary['trace_id']}")
            if code != 200 or (trace["incoming_payload"] or {}).get("id") != message_id:
                continue
            names = {span["name"] for span in trace["spans"]}
            return trace if trace["status"] == status and set(spans) <= names else None
        return None

    return await eventually(probe, timeout=15)


async def traces_of(world: DiscordWorld, tenant: Tenant) -> list[dict[str, Any]]:
    code, listing = await world.mesh.get_json("/api/v1/traces", instance_name=tenant.instance)
    assert code == 200, listing
    traces: list[dict[str, Any]] = listing["traces"]
    return traces


@contextlib.asynccontextmanager
async def bot_leases(world: DiscordWorld) -> AsyncIterator[BotLeaseStore]:
    """Ingress's own `bot_leases` table (its SQLite file or its PostgreSQL schema), read from the test."""
    env = world.mesh.env
    settings = MeshSettings(
        database_url=env["AUTOMAGIK_OMNI_DATABASE_URL"],
        sqlite_database_path=env["AUTOMAGIK_OMNI_SQLITE_DATABASE_PATH"],
        _env_file=None,
    )
    db = await open_database(settings.database_url_for("ingress"), SCHEMA)
    try:
        yield BotLeaseStore(db)
    finally:
        await db.close()


async def cursors_saved(world: DiscordWorld, tenant: Tenant, *chats: str) -> None:
    """Wait until the bot's owner stored a history cursor for each chat (it does so on its next renewal), so a bot
    started after this knows where to catch up from."""
    async with bot_leases(world) as leases:

        async def probe() -> bool:
            row = await leases.get(tenant.instance)
            return row is not None and all(f'"{chat}"' in row.cursors for chat in chats)

        await eventually(probe, timeout=10)


async def list_bots(port: int, instance: str) -> list[ingress_service_pb2.BotStatus]:
    """IngressService.ListBots of one ingress replica."""
    channel = open_channel(f"127.0.0.1:{port}", tracing=False)
    try:
        stub = ingress_service_pb2_grpc.IngressServiceStub(channel)
        # ListBots is a public RPC: a direct gRPC client calls it with the admin key.
        answer = await stub.ListBots(
            ingress_service_pb2.ListBotsRequest(instance_name=instance), timeout=5, metadata=(("x-api-key", API_KEY),)
        )
        return list(answer.bots)
    finally:
        await channel.close(None)


# ---------------------------------------------------------------------- conversations


async def test_dm_is_answered_once_in_the_dm_as_a_reply_and_traced(discord_world: DiscordWorld) -> None:
    world = discord_world
    tenant = await world.new_tenant()
    message = await world.discord.send_dm(tenant.bot.id, tenant.user.id, "hi there, are you open tomorrow?")
    dm = message["channel_id"]
    assert dm == world.discord.dm_channel_id(tenant.bot.id, tenant.user.id)

    names = ("discord.receive", "ingress.accept", "ingress.dispatch", "router.route", "agent.call", "channels.send")
    trace = await trace_of(world, tenant, message["id"], "sent", *names)
    [reply] = await settled(world, tenant, 1)
    assert reply.channel_id == dm
    assert reply.content == "Echo: hi there, are you open tomorrow?"
    assert reply.message_reference == message["id"]

    [call] = calls_of(world, tenant)
    assert call["message"] == "hi there, are you open tomorrow?"
    assert call["session_origin"] == "discord"
    assert call["user"]["user_data"]["discord_id"] == tenant.user.id
    context = call["context"]
    assert context["channel"] == "discord"
    assert context["chat_id"] == dm
    assert context["message_id"] == message["id"]
    assert context["is_group"] is False
    assert context.get("guild_id") is None
    headers = world.agent.headers[world.agent.calls.index(call)]
    assert headers["x-api-key"] == AGENT_KEY
    assert headers["traceparent"].split("-")[1] == trace["trace_id"]

    assert trace["source_channel"] == "discord"
    assert trace["source_user_id"] == tenant.user.id
    assert trace["session_id"] == call["session_id"]
    assert trace["agent_request_payload"]["context"]["chat_id"] == dm
    assert trace["agent_response_payload"]["text"] == "Echo: hi there, are you open tomorrow?"
    assert trace["incoming_payload"]["content"] == "hi there, are you open tomorrow?"
    spans = {span["name"]: span for span in trace["spans"]}
    assert spans["discord.receive"]["parent_span_id"] is None
    assert spans["ingress.accept"]["parent_span_id"] == spans["discord.receive"]["span_id"]


async def test_guild_mentions_and_replies_to_the_bot_are_answered_nothing_else(discord_world: DiscordWorld) -> None:
    world = discord_world
    tenant = await world.new_tenant()
    other_bot = world.discord.add_user(f"other-bot-{uuid.uuid4().hex[:6]}", bot=True)

    hello = await mention(world, tenant, "hello")
    [answer] = await replies(world, tenant, 1)
    assert (answer.channel_id, answer.content, answer.message_reference) == (tenant.general, "Echo: hello", hello["id"])
    [call] = calls_of(world, tenant)
    assert call["message"] == "hello"
    assert call["context"]["guild_id"] == tenant.guild.id
    assert call["context"]["is_group"] is True
    assert call["context"]["chat_id"] == tenant.general
    assert call["session_origin"] == "discord"

    # Neither a message that does not address the bot nor another bot's mention is answered or traced; a reply to
    # the bot's message without a mention is. It comes last in the same channel, so once it is answered the others
    # would have been too.
    await world.discord.post_message(tenant.general, tenant.user.id, "just chatting among humans")
    await world.discord.post_message(
        tenant.general, other_bot.id, f"<@{tenant.bot.id}> beep, I am a bot", mentions=[tenant.bot.id]
    )
    follow_up = await world.discord.post_message(
        tenant.general, tenant.user.id, "and what else?", reply_to=answer.id, ping_reply_author=False
    )
    assert tenant.bot.id not in {u["id"] for u in follow_up["mentions"]}
    sent = await settled(world, tenant, 2)
    assert [(m.content, m.message_reference) for m in sent] == [
        ("Echo: hello", hello["id"]),
        ("Echo: and what else?", follow_up["id"]),
    ]
    calls = calls_of(world, tenant)
    assert [c["message"] for c in calls] == ["hello", "and what else?"]
    assert calls[1]["context"]["quoted_message"]["message_id"] == answer.id
    expected = {
        (await trace_of(world, tenant, hello["id"], "sent"))["trace_id"],
        (await trace_of(world, tenant, follow_up["id"], "sent"))["trace_id"],
    }
    assert {t["trace_id"] for t in await traces_of(world, tenant)} == expected


async def test_three_tenants_at_once_each_reply_from_its_own_bot_in_its_own_channel(
    discord_world: DiscordWorld,
) -> None:
    world = discord_world
    tenants = await asyncio.gather(*(world.new_tenant() for _ in range(3)))
    per_tenant = 10

    async def converse(n: int, tenant: Tenant) -> list[dict[str, Any]]:
        posted = []
        for i in range(per_tenant):
            posted.append(await mention(world, tenant, f"t{n} m{i}"))
            await asyncio.sleep(0)
        return posted

    posted = await asyncio.gather(*(converse(n, t) for n, t in enumerate(tenants)))
    await asyncio.gather(*(replies(world, t, per_tenant, timeout=30) for t in tenants))
    await asyncio.sleep(1.0)  # anything arriving now would be a duplicate
    for tenant, messages in zip(tenants, posted, strict=True):
        sent = sent_by(world, tenant)
        assert {m.channel_id for m in sent} == {tenant.general}
        answered_once(sent, messages)
    crossed = [m for t in tenants for m in world.discord.sent if m.channel_id == t.general and m.bot_id != t.bot.id]
    assert crossed == []


async def test_a_message_delivered_several_times_is_answered_once(discord_world: DiscordWorld) -> None:
    world = discord_world
    tenant = await world.new_tenant()
    message = await mention(world, tenant, "only once please")
    for _ in range(3):
        assert await world.discord.redeliver(message["id"]) == 1
    await replies(world, tenant, 1)
    for _ in range(2):
        await world.discord.redeliver(message["id"])
    after = await mention(world, tenant, "and the next one")
    sent = await settled(world, tenant, 2)
    answered_once(sent, [message, after])
    assert [c["message"] for c in calls_of(world, tenant)] == ["only once please", "and the next one"]
    await trace_of(world, tenant, after["id"], "sent")
    assert len(await traces_of(world, tenant)) == 2, "a repeated delivery made a message trace of its own"


async def test_a_long_reply_with_a_code_fence_is_split_without_breaking_the_fence(
    discord_world: DiscordWorld,
) -> None:
    world = discord_world
    tenant = await world.new_tenant()
    prose = "\n".join(f"Line {i} of the explanation, which goes on for a little while." for i in range(16))
    code = "\n".join(f"    print('step {i:03d} of the long example')  # keep going" for i in range(44))
    long_text = f"{prose}\n```python\n{code}\n```\nThat is all."
    assert 3300 <= len(long_text) <= 3700

    def answer(body: dict[str, Any]) -> dict[str, Any]:
        mine = body["context"]["instance"] == tenant.instance
        return {"text": long_text if mine else f"Echo: {body['message']}"}

    world.agent.set_reply(answer)
    try:
        message = await mention(world, tenant, "show me the long example")
        await replies(world, tenant, 2)
        await trace_of(world, tenant, message["id"], "sent")
    finally:
        world.agent.set_reply(None)
    parts = await settled(world, tenant, 2)
    assert len(parts) >= 2
    assert all(len(p.content) <= LIMIT for p in parts), [len(p.content) for p in parts]
    assert all(p.content.count(FENCE) % 2 == 0 for p in parts), [p.content for p in parts]
    assert sum(FENCE in p.content for p in parts) >= 2, "the fence is longer than the limit: it must be reopened"
    assert parts[0].message_reference == message["id"]
    assert all(p.message_reference is None for p in parts[1:])
    assert {p.channel_id for p in parts} == {tenant.general}
    steps = [int(s) for p in parts for s in re.findall(r"step (\d{3})", p.content)]
    assert steps == list(range(44)), "code lines lost, repeated or out of order"
    lines = [int(s) for p in parts for s in re.findall(r"Line (\d+) of", p.content)]
    assert lines == list(range(16))
    assert parts[-1].content.endswith("That is all.")
    for part in parts:
        if FENCE in part.content:  # every fence a part opens is Python and is closed in the same part
            assert all(opening.startswith("python") for opening in part.content.split(FENCE)[1::2])


# ---------------------------------------------------------------------- failures


async def test_ingress_sigkilled_while_messages_arrive_every_message_answered_once(
    discord_world: DiscordWorld,
) -> None:
    world = discord_world
    tenant = await world.new_tenant()
    first = await mention(world, tenant, "before the crash")
    first_dm = await world.discord.send_dm(tenant.bot.id, tenant.user.id, "a DM before the crash")
    dm = first_dm["channel_id"]
    await replies(world, tenant, 2)
    await cursors_saved(world, tenant, tenant.general, dm)

    supervisor = world.mesh.supervisor
    old_pid = supervisor.pid("ingress")
    posted: list[dict[str, Any]] = [first, first_dm]

    async def post(i: int, when: str) -> None:
        posted.append(await mention(world, tenant, f"{when} {i}"))
        posted.append(await world.discord.send_dm(tenant.bot.id, tenant.user.id, f"{when} DM {i}"))

    for i in range(5):
        await post(i, "racing the crash")
        await asyncio.sleep(0.02)
    supervisor.kill("ingress", signal.SIGKILL)
    for i in range(5, 8):
        await post(i, "racing the crash")
        await asyncio.sleep(0.02)
    await eventually(lambda: asyncio.sleep(0, not world.discord.sessions(tenant.bot.id)), timeout=10, every=0.02)
    for i in range(4):
        await post(i, "while ingress is down")
    assert not world.discord.sessions(tenant.bot.id), "ingress came back before the messages of its downtime"

    # Messages arriving as soon as the new bot's session is up race its catch-up: they must not move the history
    # cursor past the messages of the downtime before those were read back.
    await eventually(lambda: asyncio.sleep(0, bool(world.discord.sessions(tenant.bot.id))), timeout=30, every=0.01)
    await post(0, "right after the restart")
    await world.connected(tenant, timeout=30)
    assert supervisor.pid("ingress") not in (None, old_pid), "ingress was not restarted"
    sent = await settled(world, tenant, len(posted), timeout=40)
    answered_once(sent, posted)
    for message in posted:  # each reply went where its message was
        [reply] = [m for m in sent if m.message_reference == message["id"]]
        assert reply.channel_id == message["channel_id"]


async def test_after_a_fresh_session_the_missed_messages_are_caught_up_before_the_cursor_moves_on(
    discord_world: DiscordWorld,
) -> None:
    """Discord ends the bot's session (close 4009, not resumable): a message posted before the bot has identified
    again is only in the channel's history. A message arriving right after the new READY, before the catch-up has
    read that history, must not move the chat's cursor past it."""
    world = discord_world
    tenant = await world.new_tenant()
    first = await mention(world, tenant, "before the new session")
    await replies(world, tenant, 1)

    assert await world.discord.drop_connections(tenant.bot.id, code=4009) == 1
    missed = await mention(world, tenant, "while the session was being replaced")
    assert not world.discord.sessions(tenant.bot.id), "the bot identified again before the message was posted"
    await eventually(lambda: asyncio.sleep(0, bool(world.discord.sessions(tenant.bot.id))), timeout=20, every=0.005)
    live = await mention(world, tenant, "right after the new READY")

    sent = await settled(world, tenant, 3)
    answered_once(sent, [first, missed, live])
    assert world.discord.identify_count(tenant.bot.id) == 2


@pytest.mark.parametrize("discord_world", ["sqlite"], indirect=True)
async def test_a_caught_up_message_is_answered_before_a_newer_live_one(discord_world: DiscordWorld) -> None:
    world = discord_world
    tenant = await world.new_tenant()
    await mention(world, tenant, "before the new session")
    await replies(world, tenant, 1)
    assert await world.discord.drop_connections(tenant.bot.id, code=4009) == 1
    missed = await mention(world, tenant, "while the session was being replaced")
    await eventually(lambda: asyncio.sleep(0, bool(world.discord.sessions(tenant.bot.id))), timeout=20, every=0.005)
    live = await mention(world, tenant, "right after the new READY")
    sent = await replies(world, tenant, 3)
    assert [m.message_reference for m in sent[1:]] == [missed["id"], live["id"]]


async def test_a_429_storm_delays_replies_but_loses_and_doubles_none(discord_world: DiscordWorld) -> None:
    world = discord_world
    tenant = await world.new_tenant()
    world.discord.rate_limit_next(15, retry_after=0.3, bot_id=tenant.bot.id)
    messages = [await mention(world, tenant, f"burst {i}") for i in range(8)]
    messages += [await world.discord.send_dm(tenant.bot.id, tenant.user.id, f"burst DM {i}") for i in range(4)]
    sent = await settled(world, tenant, len(messages), timeout=60)
    assert not any(f.bot_id == tenant.bot.id for f in world.discord.state.faults), "the 429s were not all hit"
    answered_once(sent, messages)


async def test_a_token_discord_refuses_is_rejected_at_creation(discord_world: DiscordWorld) -> None:
    world = discord_world
    name = f"disc-bad-{uuid.uuid4().hex[:8]}"
    fields = {
        "name": name,
        "channel_type": "discord",
        "discord_bot_token": "MTIz.not-a.real-token-at-all-just-made-up-here",
        "agent_api_url": world.agent.url,
        "agent_api_key": AGENT_KEY,
        "default_agent": "echo",
    }
    async with world.mesh.client.post("/api/v1/instances", json=fields) as response:
        body = await response.json()
        assert response.status == 422, body
    assert body["detail"] == "Discord refused the bot token: Improper token has been passed.", body
    assert body["reason"] == "ACCOUNT_REJECTED"
    code, _ = await world.mesh.get_json(f"/api/v1/instances/{name}")
    assert code == 404


async def test_a_revoked_token_ends_in_error_without_a_reconnect_loop(discord_world: DiscordWorld) -> None:
    world = discord_world
    tenant = await world.new_tenant()
    identified = world.discord.identify_count(tenant.bot.id)
    world.discord.revoke_token(tenant.bot.token)
    revoked_at = time.monotonic()

    async def in_error() -> dict[str, Any] | None:
        code, body = await world.mesh.get_json(f"/api/v1/instances/{tenant.instance}/status")
        return body if code == 200 and body["status"] == "error" else None

    status = await eventually(in_error, timeout=10)
    assert time.monotonic() - revoked_at < 5
    assert "refused the bot token" in status["error_message"], status
    assert "4004" in status["error_message"], status

    requests = world.discord.requests_with(tenant.bot.token)
    await asyncio.sleep(2.0)  # a reconnect loop would show in these counts
    assert world.discord.requests_with(tenant.bot.token) <= requests + 1
    assert world.discord.identify_count(tenant.bot.id) == identified
    assert world.discord.sessions(tenant.bot.id) == []
    code, health = await world.mesh.get_json("/health")
    assert code == 200
    assert health["bots"][tenant.instance]["status"] == "error"
    code, status = await world.mesh.get_json(f"/api/v1/instances/{tenant.instance}/status")
    assert status["status"] == "error"


# ---------------------------------------------------------------------- the REST side


async def test_send_text_channels_and_status_over_rest(discord_world: DiscordWorld) -> None:
    world = discord_world
    tenant = await world.new_tenant()

    status = await world.connected(tenant)
    assert status["channel_type"] == "discord"
    assert status["account_id"] == tenant.bot.id
    assert status["guilds"] == [{"id": tenant.guild.id, "name": tenant.guild.name}]
    assert status["latency_ms"] is not None
    assert status["error_message"] is None

    async with world.mesh.client.post(
        f"/api/v1/{tenant.instance}/send-text", json={"recipient": tenant.random, "text": "announcement"}
    ) as response:
        to_channel = await response.json()
        assert response.status == 200, to_channel
    async with world.mesh.client.post(
        f"/api/v1/{tenant.instance}/send-text", json={"recipient": f"user:{tenant.user.id}", "text": "psst"}
    ) as response:
        to_user = await response.json()
        assert response.status == 200, to_user
    sent = await replies(world, tenant, 2)
    assert [(m.channel_id, m.content, m.message_reference) for m in sent] == [
        (tenant.random, "announcement", None),
        (world.discord.dm_channel_id(tenant.bot.id, tenant.user.id), "psst", None),
    ]
    assert to_channel["message_ids"] == [sent[0].id]
    assert to_user["message_ids"] == [sent[1].id]

    code, listed = await world.mesh.get_json(f"/api/v1/{tenant.instance}/channels")
    assert code == 200, listed
    assert [(c["id"], c["name"], c["kind"], c["guild_id"]) for c in listed["channels"]] == [
        (tenant.general, "general", "text", tenant.guild.id),
        (tenant.random, "random", "text", tenant.guild.id),
    ]
    assert {c["status"] for c in listed["channels"]} == {"connected"}

    code, health = await world.mesh.get_json("/health")
    assert code == 200
    assert health["bots"][tenant.instance] == {"channel_type": "discord", "status": "connected", "detail": None}


# ---------------------------------------------------------------------- two ingress replicas


@pytest.mark.parametrize("discord_world", ["postgres"], indirect=True)
async def test_a_bot_runs_in_one_replica_and_another_takes_it_over_when_its_owner_dies(
    discord_world: DiscordWorld,
) -> None:
    """Two ingress replicas share one PostgreSQL: the bot runs in exactly one of them. The second replica (B) is
    started here and the supervised one (A) is frozen while the instance is created, so B takes the bot; B is then
    SIGKILLed and kept down, and A takes the bot over once B's lease has run out."""
    world = discord_world
    supervisor = world.mesh.supervisor
    port_a = world.mesh.ports["ingress"]
    port_b = free_port()
    env = {**world.mesh.env, "AUTOMAGIK_OMNI_INGRESS_GRPC_PORT": str(port_b),
           "AUTOMAGIK_OMNI_INGRESS_REPLICA_ID": "replica-b"}  # fmt: skip
    replica_b = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "services.ingress", env=env, cwd=str(REPO_ROOT),
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    try:
        await eventually(lambda: _answers(port_b), timeout=30, every=0.2)
        supervisor.kill("ingress", signal.SIGSTOP)
        try:
            tenant = await world.new_tenant(connect=False)
            await eventually(lambda: asyncio.sleep(0, len(world.discord.sessions(tenant.bot.id)) == 1), timeout=20)
        finally:
            supervisor.kill("ingress", signal.SIGCONT)
        await world.connected(tenant)

        [owned] = await list_bots(port_a, tenant.instance)
        assert owned.owner == "replica-b"
        await asyncio.sleep(4 * DISCORD_RENEW_SECONDS)  # A's reconciliations must leave B's bot alone
        assert len(world.discord.sessions(tenant.bot.id)) == 1
        assert world.discord.identify_count(tenant.bot.id) == 1
        assert [b.owner for b in await list_bots(port_b, tenant.instance)] == ["replica-b"]

        before = await mention(world, tenant, "answered by B")
        await replies(world, tenant, 1)
        await cursors_saved(world, tenant, tenant.general)

        replica_b.kill()
        await replica_b.wait()
        killed_at = time.monotonic()
        await eventually(lambda: asyncio.sleep(0, not world.discord.sessions(tenant.bot.id)), timeout=10, every=0.05)
        gap = await mention(world, tenant, "while nobody runs the bot")

        async def taken_over() -> str | None:
            bots = await list_bots(port_a, tenant.instance)
            owner = bots[0].owner if bots else ""
            return owner if owner not in ("", "replica-b") and world.discord.sessions(tenant.bot.id) else None

        owner_a = await eventually(taken_over, timeout=DISCORD_LEASE_SECONDS + 10, every=0.02)
        assert time.monotonic() - killed_at < DISCORD_LEASE_SECONDS + 5
        after = await mention(world, tenant, "answered by A")  # as soon as A's bot has a session: races its catch-up
        await world.connected(tenant)
        assert len(world.discord.sessions(tenant.bot.id)) == 1
        assert [b.owner for b in await list_bots(port_a, tenant.instance)] == [owner_a]
        sent = await settled(world, tenant, 3)
        answered_once(sent, [before, gap, after])
        assert world.discord.identify_count(tenant.bot.id) == 2
    finally:
        if replica_b.returncode is None:
            replica_b.kill()
            await replica_b.wait()


async def _answers(port: int) -> bool:
    try:
        await list_bots(port, "nobody")
    except Exception:
        return False
    return True


# ---------------------------------------------------------------------- access rules


async def test_a_blocked_discord_user_gets_nothing_and_the_trace_names_the_rule(discord_world: DiscordWorld) -> None:
    world = discord_world
    tenant = await world.new_tenant()
    rule_body = {"sender_id": tenant.user.id, "rule_type": "block", "instance_name": tenant.instance}
    async with world.mesh.client.post("/api/v1/access/rules", json=rule_body) as response:
        rule = await response.json()
        assert response.status == 201, rule
    message = await world.discord.send_dm(tenant.bot.id, tenant.user.id, "let me in")
    trace = await trace_of(world, tenant, message["id"], "blocked")
    assert rule["id"] in trace["error_message"]
    await asyncio.sleep(1.0)  # a reply now would be a leak
    assert sent_by(world, tenant) == []
    assert calls_of(world, tenant) == []
