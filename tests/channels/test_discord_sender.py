"""`DiscordSender` against the Discord simulator: unmodified discord.py HTTP clients on 127.0.0.1.

Every test drives the real REST round trip (login, message create, multipart upload, DM opening, history, guild
listing) and reads back what the simulator recorded, including the faults discord.py itself handles (429 sleeps,
5xx retries) and the ones it hands back to the sender to classify.
"""

from __future__ import annotations

import asyncio
import base64
import socket
import time
import types
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import discord
import pytest
from aiohttp import web

from servicekit.instances import DiscordConfig, Instance, WhatsAppConfig
from servicekit.messages import Media
from services.channels.core.models import ConnectionState, ConnectionStatus, OutboundPart
from services.channels.core.senders.base import (
    REASON_MISCONFIGURED,
    REASON_NOT_FOUND,
    REASON_REJECTED,
    REASON_UNAUTHORIZED,
    Account,
    ChannelRejectedError,
    ChannelSender,
    ChannelTransientError,
    ChatChannel,
    SendTarget,
)
from services.channels.core.senders.discord import DiscordSender
from simulators.discord import Bot, DiscordSimulator, Guild, User

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 64
PDF = b"%PDF-1.4\n" + b"x" * 512


class FixedStatus:
    """The ingress port as a constant: what it answers, or what it raises."""

    def __init__(self, answer: ConnectionStatus | Exception | None = None) -> None:
        self.answer = answer
        self.asked: list[str] = []

    async def bot_status(self, instance_name: str) -> ConnectionStatus | None:
        self.asked.append(instance_name)
        if isinstance(self.answer, Exception):
            raise self.answer
        return self.answer


@dataclass
class World:
    sim: DiscordSimulator
    bot: Bot
    other_bot: Bot
    user: User
    guild: Guild
    channel_id: str
    instance: Instance


@pytest.fixture
def sim(discord_sim: DiscordSimulator) -> DiscordSimulator:
    return discord_sim


@pytest.fixture
def world(sim: DiscordSimulator) -> World:
    """Our bot and a foreign bot in one guild with two channels, plus a human."""
    bot = sim.add_bot(name="omni-bot")
    other_bot = sim.add_bot(name="other-bot")
    user = sim.add_user(name="alice")
    guild = sim.add_guild("Acme", bots=[bot.id, other_bot.id], channels=("general", "random"))
    return World(
        sim=sim,
        bot=bot,
        other_bot=other_bot,
        user=user,
        guild=guild,
        channel_id=guild.channel_ids["general"],
        instance=discord_instance(bot.token),
    )


@pytest.fixture
def status() -> FixedStatus:
    return FixedStatus()


@pytest.fixture
async def sender(status: FixedStatus) -> AsyncIterator[DiscordSender]:
    discord_sender = DiscordSender(status, send_timeout_seconds=5.0, max_ratelimit_wait_seconds=1.0)
    try:
        yield discord_sender
    finally:
        await discord_sender.aclose()


@pytest.fixture
async def files() -> AsyncIterator[str]:
    """A tiny file server on port 0 standing in for wherever an agent's media lives."""

    async def report(request: web.Request) -> web.Response:
        return web.Response(body=PDF, content_type="application/pdf")

    async def picture(request: web.Request) -> web.Response:
        return web.Response(body=PNG, content_type="image/png")

    app = web.Application()
    app.router.add_get("/files/report.pdf", report)
    app.router.add_get("/render", picture)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()


@pytest.fixture
def quick_discord_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    """discord.py waits 1, 3, 5, 7 and 9 s around its five tries of a 5xx; what matters here is how many tries it
    makes and what it raises after them, so its module sees an asyncio whose sleeps are capped at 10 ms."""
    real_sleep = asyncio.sleep

    async def short_sleep(delay: float, result: Any = None) -> Any:
        return await real_sleep(min(delay, 0.01), result)

    quick = types.SimpleNamespace(**{name: getattr(asyncio, name) for name in dir(asyncio) if not name.startswith("_")})
    quick.sleep = short_sleep
    monkeypatch.setattr(discord.http, "asyncio", quick)


def discord_instance(token: str, name: str = "acme") -> Instance:
    return Instance(name=name, config=DiscordConfig(bot_token=token))


def closed_port_url() -> str:
    """An API base on a port nobody listens on (picked by the OS, then released)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}/api/v10"


def test_discord_sender_is_a_channel_sender() -> None:
    sender: ChannelSender = DiscordSender(FixedStatus())
    assert sender.channel == "discord"


# ---------------------------------------------------------------------- sending


async def test_text_goes_to_the_channel_and_returns_discords_id(world: World, sender: DiscordSender) -> None:
    message_id = await sender.send_text(world.instance, SendTarget(chat_id=world.channel_id), "hello from the agent")

    [sent] = world.sim.sent
    assert sent.id == message_id
    assert (sent.channel_id, sent.bot_id, sent.content) == (world.channel_id, world.bot.id, "hello from the agent")
    assert sent.message_reference is None


async def test_reply_answers_the_users_message(world: World, sender: DiscordSender) -> None:
    question = await world.sim.post_message(
        world.channel_id, world.user.id, f"<@{world.bot.id}> hi", mentions=(world.bot.id,)
    )

    await sender.send_text(world.instance, SendTarget(chat_id=world.channel_id, reply_to=question["id"]), "hi!")

    [sent] = world.sim.sent
    assert sent.message_reference == question["id"]
    assert world.user.id in [m["id"] for m in sent.message["mentions"]]  # replied_user=True pings the asker


async def test_reply_to_a_deleted_message_still_sends(world: World, sender: DiscordSender) -> None:
    target = SendTarget(chat_id=world.channel_id, reply_to="1234567890123456789")

    await sender.send_text(world.instance, target, "the answer survives")

    [sent] = world.sim.sent
    assert (sent.content, sent.message_reference) == ("the answer survives", None)


async def test_everyone_is_never_pinged(world: World, sender: DiscordSender) -> None:
    await sender.send_text(world.instance, SendTarget(chat_id=world.channel_id), "@everyone look")

    assert world.sim.sent[0].message["mention_everyone"] is False


async def test_direct_message_by_user_id(world: World, sender: DiscordSender) -> None:
    target = SendTarget(chat_id=f"user:{world.user.id}")

    first = await sender.send_text(world.instance, target, "psst")
    second = await sender.send_text(world.instance, target, "again")

    dm_channel = world.sim.dm_channel_id(world.bot.id, world.user.id)
    assert dm_channel is not None
    assert [(s.id, s.channel_id, s.content) for s in world.sim.sent] == [
        (first, dm_channel, "psst"),
        (second, dm_channel, "again"),
    ]


async def test_thread_target_sends_into_the_thread(world: World, sender: DiscordSender) -> None:
    thread_id = world.sim.add_thread(world.guild.id, world.channel_id, name="support")

    await sender.send_text(world.instance, SendTarget(chat_id=world.channel_id, thread_id=thread_id), "in thread")

    assert world.sim.sent[0].channel_id == thread_id


async def test_media_from_base64_with_caption(world: World, sender: DiscordSender) -> None:
    media = Media(type="image", mime_type="image/png", base64=base64.b64encode(PNG).decode())

    message_id = await sender.send_media(world.instance, SendTarget(chat_id=world.channel_id), media, "a chart")

    [sent] = world.sim.sent
    assert (sent.id, sent.content) == (message_id, "a chart")
    assert sent.attachments == [{"filename": "image.png", "size": len(PNG), "content_type": "image/png"}]


async def test_media_base64_data_url_prefix_is_stripped(world: World, sender: DiscordSender) -> None:
    media = Media(base64="data:application/pdf;base64," + base64.b64encode(PDF).decode(), filename="q3.pdf")

    await sender.send_media(world.instance, SendTarget(chat_id=world.channel_id), media, "")

    [sent] = world.sim.sent
    assert sent.content == ""
    assert [(a["filename"], a["size"]) for a in sent.attachments] == [("q3.pdf", len(PDF))]


async def test_media_from_url_answering_a_message(world: World, sender: DiscordSender, files: str) -> None:
    question = await world.sim.post_message(world.channel_id, world.user.id, "the report?")
    target = SendTarget(chat_id=world.channel_id, reply_to=question["id"])

    await sender.send_media(world.instance, target, Media(type="document", url=f"{files}/files/report.pdf"), "here")
    await sender.send_media(world.instance, SendTarget(chat_id=world.channel_id), Media(url=f"{files}/render"), "")

    report, picture = world.sim.sent
    assert (report.content, report.message_reference) == ("here", question["id"])
    assert [(a["filename"], a["size"]) for a in report.attachments] == [("report.pdf", len(PDF))]
    assert [(a["filename"], a["size"]) for a in picture.attachments] == [("image.png", len(PNG))]


async def test_media_over_the_cap_is_refused_before_upload(world: World, files: str) -> None:
    sender = DiscordSender(FixedStatus(), media_max_bytes=100)
    try:
        with pytest.raises(ChannelRejectedError, match=r"could not download the media \(404"):
            await sender.send_media(world.instance, SendTarget(world.channel_id), Media(url=f"{files}/files/x.pdf"), "")
        with pytest.raises(ChannelRejectedError, match="larger than 100 bytes"):
            await sender.send_media(
                world.instance, SendTarget(world.channel_id), Media(url=f"{files}/files/report.pdf"), ""
            )
        with pytest.raises(ChannelRejectedError, match="larger than 100 bytes"):
            await sender.send_media(
                world.instance, SendTarget(world.channel_id), Media(base64=base64.b64encode(PDF).decode()), ""
            )
        with pytest.raises(ChannelRejectedError, match="not valid base64"):
            await sender.send_media(world.instance, SendTarget(world.channel_id), Media(base64="%%%"), "")
    finally:
        await sender.aclose()
    assert world.sim.sent == []


# ---------------------------------------------------------------------- refusals


async def test_text_over_2000_characters_is_refused_with_discords_words(world: World, sender: DiscordSender) -> None:
    with pytest.raises(ChannelRejectedError) as refused:
        await sender.send_text(world.instance, SendTarget(chat_id=world.channel_id), "x" * 2001)

    assert refused.value.reason == REASON_REJECTED
    assert refused.value.status == 400
    assert refused.value.message == (
        "Discord refused the message (400, code 50035): Invalid Form Body — content: Must be 2000 or fewer in length."
    )
    assert world.sim.sent == []


async def test_unknown_channel_is_not_found(world: World, sender: DiscordSender) -> None:
    with pytest.raises(ChannelRejectedError) as refused:
        await sender.send_text(world.instance, SendTarget(chat_id="123456789012345678"), "anyone?")

    assert (refused.value.reason, refused.value.status) == (REASON_NOT_FOUND, 404)
    assert "code 10003" in refused.value.message
    assert "Unknown Channel" in refused.value.message


async def test_channel_of_a_foreign_guild_is_missing_access(world: World, sender: DiscordSender) -> None:
    elsewhere = world.sim.add_guild("Elsewhere", bots=[world.other_bot.id])

    with pytest.raises(ChannelRejectedError) as refused:
        await sender.send_text(world.instance, SendTarget(chat_id=elsewhere.channel_ids["general"]), "hi")

    assert (refused.value.reason, refused.value.status) == (REASON_REJECTED, 403)
    assert "(403, code 50001): Missing Access" in refused.value.message


async def test_malformed_chat_id_is_refused_without_a_request(world: World, sender: DiscordSender) -> None:
    with pytest.raises(ChannelRejectedError, match="not a Discord channel id"):
        await sender.send_text(world.instance, SendTarget(chat_id="general"), "hi")


async def test_missing_token_is_misconfigured(sender: DiscordSender) -> None:
    with pytest.raises(ChannelRejectedError) as no_token:
        await sender.send_text(discord_instance(""), SendTarget(chat_id="1"), "hi")
    with pytest.raises(ChannelRejectedError) as not_discord:
        await sender.send_text(Instance(name="wa", config=WhatsAppConfig()), SendTarget(chat_id="1"), "hi")

    assert no_token.value.reason == not_discord.value.reason == REASON_MISCONFIGURED


async def test_revoked_token_is_unauthorized(world: World, sender: DiscordSender) -> None:
    await sender.send_text(world.instance, SendTarget(chat_id=world.channel_id), "before")
    world.sim.revoke_token(world.bot.token)

    with pytest.raises(ChannelRejectedError) as cached_client:
        await sender.send_text(world.instance, SendTarget(chat_id=world.channel_id), "after")
    fresh = DiscordSender(FixedStatus())
    try:
        with pytest.raises(ChannelRejectedError) as at_login:
            await fresh.send_text(world.instance, SendTarget(chat_id=world.channel_id), "after")
    finally:
        await fresh.aclose()

    assert cached_client.value.reason == at_login.value.reason == REASON_UNAUTHORIZED
    assert "Discord refused the bot token" in at_login.value.message
    assert [s.content for s in world.sim.sent] == ["before"]


async def test_a_changed_token_gets_a_new_client(world: World, sender: DiscordSender) -> None:
    await sender.send_text(world.instance, SendTarget(chat_id=world.channel_id), "old bot")
    world.sim.revoke_token(world.bot.token)

    await sender.send_text(discord_instance(world.other_bot.token), SendTarget(chat_id=world.channel_id), "new bot")

    assert [(s.bot_id, s.content) for s in world.sim.sent] == [
        (world.bot.id, "old bot"),
        (world.other_bot.id, "new bot"),
    ]


# ---------------------------------------------------------------------- rate limits and failures


async def test_short_rate_limits_are_slept_through(world: World, sender: DiscordSender) -> None:
    world.sim.rate_limit_next(2, retry_after=0.1)
    started = time.monotonic()

    message_id = await sender.send_text(world.instance, SendTarget(chat_id=world.channel_id), "eventually")

    assert time.monotonic() - started >= 0.18  # two 0.1 s pauses (asyncio may wake a tick early)
    assert [(s.id, s.content) for s in world.sim.sent] == [(message_id, "eventually")]


async def test_long_rate_limit_is_handed_back_with_retry_after(world: World, sender: DiscordSender) -> None:
    world.sim.rate_limit_next(1, retry_after=30.0)
    started = time.monotonic()

    with pytest.raises(ChannelTransientError) as limited:
        await sender.send_text(world.instance, SendTarget(chat_id=world.channel_id), "later")

    assert time.monotonic() - started < 2.0  # neither discord.py's 30 s floor nor the send timeout was waited out
    assert limited.value.rate_limited
    assert limited.value.retry_after == pytest.approx(30.0)
    assert not limited.value.outcome_unknown
    assert world.sim.sent == []


@pytest.mark.usefixtures("quick_discord_backoff")
async def test_500_after_discordpys_retries_is_transient(world: World, sender: DiscordSender) -> None:
    world.sim.fail_next(6, status=500)

    with pytest.raises(ChannelTransientError) as failed:
        await sender.send_text(world.instance, SendTarget(chat_id=world.channel_id), "try me")

    assert not failed.value.outcome_unknown  # Discord said it failed; nothing was created
    assert not failed.value.rate_limited
    assert "(500)" in failed.value.message
    assert len(world.sim.state.faults) == 1  # discord.py made five tries
    message_id = await sender.send_text(world.instance, SendTarget(chat_id=world.channel_id), "try me")
    assert [s.id for s in world.sim.sent] == [message_id]


@pytest.mark.usefixtures("quick_discord_backoff")
async def test_502_leaves_the_outcome_unknown(world: World, sender: DiscordSender) -> None:
    world.sim.fail_next(5, status=502)

    with pytest.raises(ChannelTransientError) as failed:
        await sender.send_text(world.instance, SendTarget(chat_id=world.channel_id), "did it go?")

    assert failed.value.outcome_unknown


async def test_503_is_transient_at_once(world: World, sender: DiscordSender) -> None:
    world.sim.fail_next(1, status=503)

    with pytest.raises(ChannelTransientError) as failed:
        await sender.send_text(world.instance, SendTarget(chat_id=world.channel_id), "busy?")

    assert not failed.value.outcome_unknown
    assert world.sim.state.faults == type(world.sim.state.faults)()


async def test_timeout_during_the_send_leaves_the_outcome_unknown(world: World) -> None:
    sender = DiscordSender(FixedStatus(), send_timeout_seconds=0.3, max_ratelimit_wait_seconds=5.0)
    world.sim.rate_limit_next(1, retry_after=2.0)
    try:
        with pytest.raises(ChannelTransientError) as timed_out:
            await sender.send_text(world.instance, SendTarget(chat_id=world.channel_id), "slow")
    finally:
        await sender.aclose()

    assert timed_out.value.outcome_unknown
    assert "within 0.3 s" in timed_out.value.message


async def test_unreachable_discord_is_transient_before_anything_left(
    world: World, sender: DiscordSender, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(discord.http.Route, "BASE", closed_port_url())

    with pytest.raises(ChannelTransientError) as unreachable:
        await sender.send_text(world.instance, SendTarget(chat_id=world.channel_id), "hello?")

    assert not unreachable.value.outcome_unknown  # the login failed; the message request never started


# ---------------------------------------------------------------------- typing


async def test_typing_is_posted_once_and_paused_does_nothing(world: World, sender: DiscordSender) -> None:
    await sender.send_presence(world.instance, world.channel_id, "composing", 3000)
    await sender.send_presence(world.instance, f"user:{world.user.id}", "recording", 3000)
    await sender.send_presence(world.instance, world.channel_id, "paused", 0)

    dm_channel = world.sim.dm_channel_id(world.bot.id, world.user.id)
    assert world.sim.typing == [(world.bot.id, world.channel_id), (world.bot.id, dm_channel)]


async def test_typing_failures_are_transient(world: World, sender: DiscordSender) -> None:
    with pytest.raises(ChannelTransientError, match="Unknown Channel"):
        await sender.send_presence(world.instance, "123456789012345678", "composing", 1000)


# ---------------------------------------------------------------------- reconciliation


async def test_find_sent_finds_this_bots_message_only(world: World, sender: DiscordSender) -> None:
    since = time.time() - 1
    other = DiscordSender(FixedStatus())
    try:
        await other.send_text(discord_instance(world.other_bot.token, "other"), SendTarget(world.channel_id), "ok")
    finally:
        await other.aclose()
    await world.sim.post_message(world.channel_id, world.user.id, "ok")
    first = await sender.send_text(world.instance, SendTarget(chat_id=world.channel_id), "ok")
    second = await sender.send_text(world.instance, SendTarget(chat_id=world.channel_id), "ok")
    await sender.send_text(world.instance, SendTarget(chat_id=world.channel_id), "something else")
    part = OutboundPart(text="ok\n")

    assert await sender.find_sent(world.instance, world.channel_id, part, since, set()) == first
    assert await sender.find_sent(world.instance, world.channel_id, part, since, {first}) == second
    assert await sender.find_sent(world.instance, world.channel_id, part, since, {first, second}) is None
    assert await sender.find_sent(world.instance, world.channel_id, OutboundPart(text="nope"), since, set()) is None
    assert await sender.find_sent(world.instance, world.channel_id, part, time.time() + 1, set()) is None


async def test_find_sent_in_a_dm_and_for_media(world: World, sender: DiscordSender) -> None:
    since = time.time() - 1
    dm = f"user:{world.user.id}"
    await sender.send_text(world.instance, SendTarget(chat_id=dm), "the chart")  # same words, no file
    media = Media(type="image", mime_type="image/png", base64=base64.b64encode(PNG).decode())
    with_file = await sender.send_media(world.instance, SendTarget(chat_id=dm), media, "the chart")
    fresh = DiscordSender(FixedStatus())  # a restarted worker: no DM channel cached yet
    try:
        found = await fresh.find_sent(world.instance, dm, OutboundPart(text="the chart", media=media), since, set())
        bare = await fresh.find_sent(world.instance, dm, OutboundPart(media=media), since, set())
    finally:
        await fresh.aclose()

    assert found == bare == with_file


# ---------------------------------------------------------------------- account, channels, status


async def test_check_account(world: World, sender: DiscordSender) -> None:
    assert await sender.check_account(world.instance) == Account(id=world.bot.id, name="omni-bot")

    with pytest.raises(ChannelRejectedError) as bad:
        await sender.check_account(discord_instance("not-a-token"))
    assert bad.value.reason == REASON_UNAUTHORIZED
    assert bad.value.message.startswith("Discord refused the bot token: ")

    with pytest.raises(ChannelRejectedError) as missing:
        await sender.check_account(discord_instance(""))
    assert missing.value.reason == REASON_MISCONFIGURED


async def test_check_account_when_discord_is_unreachable(
    world: World, sender: DiscordSender, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(discord.http.Route, "BASE", closed_port_url())

    with pytest.raises(ChannelTransientError):
        await sender.check_account(world.instance)


async def test_list_channels_by_guild_then_position(world: World, sender: DiscordSender) -> None:
    second = world.sim.add_guild("Beta", bots=[world.bot.id], channels=("lobby",))
    world.sim.add_guild("Not ours", bots=[world.other_bot.id])

    channels = await sender.list_channels(world.instance)

    acme = world.guild
    assert channels == [
        ChatChannel(acme.channel_ids["general"], "general", "text", acme.id, "Acme"),
        ChatChannel(acme.channel_ids["random"], "random", "text", acme.id, "Acme"),
        ChatChannel(second.channel_ids["lobby"], "lobby", "text", second.id, "Beta"),
    ]


async def test_connection_status_comes_from_the_port(world: World, sender: DiscordSender, status: FixedStatus) -> None:
    connected = ConnectionStatus(state=ConnectionState.CONNECTED, account_id=world.bot.id, latency_ms=12.0)

    none = await sender.connection_status(world.instance, include_qr_code=True)
    status.answer = connected
    running = await sender.connection_status(world.instance, include_qr_code=False)
    status.answer = RuntimeError("ingress is down")
    broken = await sender.connection_status(world.instance, include_qr_code=False)

    assert none.state == ConnectionState.DISCONNECTED
    assert "no bot is running" in none.detail
    assert running == connected
    assert broken.state == ConnectionState.ERROR
    assert "ingress is down" in broken.detail
    assert status.asked == ["acme", "acme", "acme"]
