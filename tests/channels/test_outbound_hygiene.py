"""The channels service's calls to tenant-chosen servers: Evolution and agent media URLs.

Real aiohttp servers stand in for a misbehaving Evolution (redirecting, flooding) and for a media host that
redirects; the clients use the guarded session the service itself runs with.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp import web

from servicekit.address_guard import guarded_session
from servicekit.instances import DiscordConfig, Instance, WhatsAppConfig
from servicekit.messages import Media
from services.channels.core.evolution import MAX_RESPONSE_BYTES, EvolutionClient
from services.channels.core.models import ConnectionStatus
from services.channels.core.senders.base import (
    REASON_MISCONFIGURED,
    ChannelRejectedError,
    ChannelTransientError,
    SendTarget,
)
from services.channels.core.senders.discord import DiscordSender
from simulators.discord import DiscordSimulator
from tests.helpers.http_servers import FakeServer, ServerFactory, flooding


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with guarded_session() as client_session:
        yield client_session


def whatsapp(url: str) -> Instance:
    return Instance(name="acme", config=WhatsAppConfig(evolution_url=url, evolution_key="k", whatsapp_instance="wa"))


async def redirect_pair(servers: ServerFactory) -> tuple[FakeServer, FakeServer]:
    """A server answering 307 to everything, pointing at a second one that must never be asked."""

    async def collect(request: web.Request) -> web.StreamResponse:
        return web.json_response({"key": {"id": "stolen"}})

    target = await servers(collect)

    async def redirect(request: web.Request) -> web.StreamResponse:
        raise web.HTTPTemporaryRedirect(target.url + "/collect")

    return await servers(redirect), target


async def test_an_evolution_redirect_is_refused_and_not_followed(
    session: aiohttp.ClientSession, servers: ServerFactory
) -> None:
    evolution, target = await redirect_pair(servers)
    client = EvolutionClient(session, timeout_seconds=5)

    with pytest.raises(ChannelRejectedError) as err:
        await client.send_text(whatsapp(evolution.url), "5511999990001", "hi")

    assert err.value.reason == REASON_MISCONFIGURED
    assert err.value.message == (
        f"Evolution answered HTTP 307 redirecting to {target.url}/collect; redirects are not followed"
    )
    assert evolution.paths == ["/message/sendText/wa"]
    assert target.paths == []


async def test_an_oversized_evolution_answer_is_not_read_to_the_end(
    session: aiohttp.ClientSession, servers: ServerFactory
) -> None:
    total = MAX_RESPONSE_BYTES * 8
    written: list[int] = []
    evolution = await servers(flooding(total, written, chunk=65536))
    client = EvolutionClient(session, timeout_seconds=10)

    with pytest.raises(ChannelTransientError, match=f"larger than {MAX_RESPONSE_BYTES} bytes") as err:
        await client.send_text(whatsapp(evolution.url), "5511999990001", "hi")

    assert err.value.outcome_unknown  # the send itself may have happened: reconcile before resending
    await evolution.stop()  # waits for the handler, which ends once the client hung up
    assert written
    assert written[0] < total // 2


async def test_an_evolution_url_on_a_metadata_address_is_refused_without_a_connection(
    session: aiohttp.ClientSession,
) -> None:
    client = EvolutionClient(session, timeout_seconds=5)
    refused = re.escape("Evolution address refused: refused to call 169.254.169.254")
    with pytest.raises(ChannelRejectedError, match=refused) as err:
        await client.connection_state(whatsapp("http://169.254.169.254:8080"))
    assert err.value.reason == REASON_MISCONFIGURED


class NoBots:
    async def bot_status(self, instance_name: str) -> ConnectionStatus | None:
        return None


async def test_a_redirecting_media_url_is_refused_before_anything_is_sent(
    discord_sim: DiscordSimulator, servers: ServerFactory
) -> None:
    bot = discord_sim.add_bot(name="omni-bot")
    guild = discord_sim.add_guild("Acme", bots=[bot.id], channels=("general",))
    instance = Instance(name="acme", config=DiscordConfig(bot_token=bot.token))
    media_host, target = await redirect_pair(servers)
    sender = DiscordSender(NoBots(), send_timeout_seconds=5.0)
    try:
        with pytest.raises(ChannelRejectedError, match="redirects are not followed"):
            await sender.send_media(
                instance, SendTarget(guild.channel_ids["general"]), Media(url=f"{media_host.url}/a.png"), ""
            )
        with pytest.raises(ChannelRejectedError, match=re.escape("refused to call 169.254.169.254")):
            await sender.send_media(
                instance, SendTarget(guild.channel_ids["general"]), Media(url="http://169.254.169.254/a.png"), ""
            )
    finally:
        await sender.aclose()
    assert media_host.paths == ["/a.png"]
    assert target.paths == []
    assert discord_sim.sent == []
