"""The Slack simulator's Events API delivery (signed, retried) and Socket Mode, against slack_sdk's own verifier
and `SocketModeClient`."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from slack_sdk.signature import SignatureVerifier
from slack_sdk.socket_mode.aiohttp import SocketModeClient
from slack_sdk.socket_mode.request import SocketModeRequest
from slack_sdk.socket_mode.response import SocketModeResponse
from slack_sdk.web.async_client import AsyncWebClient

from simulators.slack import Bot, SlackSimulator, Team, User

SECRET = "8f742231b10e8888abcd99yyyzzz85a5"


@dataclass
class Hub:
    """A Request URL that verifies signatures like the hub; `statuses` scripts its answers (then 200)."""

    url: str = ""
    verified: list[tuple[dict[str, str], bytes]] = field(default_factory=list)
    rejected: int = 0
    statuses: list[int] = field(default_factory=list)


@pytest.fixture
async def hub() -> AsyncIterator[Hub]:
    state = Hub()
    verifier = SignatureVerifier(SECRET)

    async def events(request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        headers = dict(request.headers)
        if not verifier.is_valid_request(raw, headers):
            state.rejected += 1
            return web.Response(status=401)
        state.verified.append(({k.lower(): v for k, v in headers.items()}, raw))
        body = await request.json()
        if body.get("type") == "url_verification":
            return web.json_response({"challenge": body["challenge"]})
        return web.Response(status=state.statuses.pop(0) if state.statuses else 200)

    app = web.Application()
    app.router.add_post("/slack/events", events)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    state.url = f"http://127.0.0.1:{runner.addresses[0][1]}/slack/events"
    try:
        yield state
    finally:
        await runner.cleanup()


@pytest.fixture
async def sim() -> AsyncIterator[SlackSimulator]:
    async with SlackSimulator(
        ack_timeout=0.5, retry_delays=(0.0, 0.01, 0.01), socket_ack_timeout=0.3, disconnect_grace=0.1
    ) as simulator:
        yield simulator


@pytest.fixture
def team(sim: SlackSimulator) -> Team:
    return sim.add_team("Acme")


@pytest.fixture
def bot(sim: SlackSimulator, team: Team, hub: Hub) -> Bot:
    return sim.add_bot(team.id, "omni", signing_secret=SECRET, request_url=hub.url)


@pytest.fixture
def alice(sim: SlackSimulator, team: Team) -> User:
    return sim.add_user(team.id, "alice")


async def test_mention_in_a_channel_arrives_signed_as_message_and_app_mention(
    sim: SlackSimulator, team: Team, bot: Bot, alice: User, hub: Hub
) -> None:
    channel = sim.add_channel(team.id, "general")
    message, deliveries = await sim.post_user_message(channel.id, alice.id, f"<@{bot.user_id}> hello")
    assert sorted(d.event_type for d in deliveries) == ["app_mention", "message"]
    assert all(d.ok and d.status == 200 for d in deliveries)
    assert len(hub.verified) == 2
    assert hub.rejected == 0
    envelope = deliveries[0].envelope
    assert envelope["type"] == "event_callback"
    assert envelope["api_app_id"] == bot.app_id
    assert envelope["authorizations"][0]["user_id"] == bot.user_id
    event = next(d.envelope["event"] for d in deliveries if d.event_type == "message")
    assert (event["channel"], event["user"], event["ts"], event["channel_type"]) == (
        channel.id,
        alice.id,
        message["ts"],
        "channel",
    )
    dm = sim.open_dm(bot, alice.id)
    _, (im,) = await sim.post_user_message(dm.id, alice.id, "in private")
    assert im.envelope["event"]["channel_type"] == "im"


async def test_unanswered_events_are_retried_with_slack_headers(
    sim: SlackSimulator, team: Team, bot: Bot, alice: User, hub: Hub
) -> None:
    channel = sim.add_channel(team.id, "general")
    hub.statuses = [500, 500]
    _, (delivery,) = await sim.post_user_message(channel.id, alice.id, "anyone?")
    assert [a.status for a in delivery.attempts] == [500, 500, 200]
    assert [(a.retry_num, a.retry_reason) for a in delivery.attempts] == [(0, ""), (1, "http_error"), (2, "http_error")]
    retried = [h for h, _ in hub.verified if "x-slack-retry-num" in h]
    assert [h["x-slack-retry-num"] for h in retried] == ["1", "2"]
    assert {h["x-slack-retry-reason"] for h in retried} == {"http_error"}
    hub.statuses = [500] * 5
    _, (gave_up,) = await sim.post_user_message(channel.id, alice.id, "still?")
    assert len(gave_up.attempts) == 4
    assert not gave_up.ok


async def test_edits_deletes_joins_files_and_bot_posts_have_slack_shapes(
    sim: SlackSimulator, team: Team, bot: Bot, alice: User, hub: Hub
) -> None:
    channel = sim.add_channel(team.id, "general")
    message, _ = await sim.post_user_message(channel.id, alice.id, "typo")
    changed, _ = await sim.edit_message(channel.id, message["ts"], "fixed")
    assert (changed["subtype"], changed["message"]["text"], changed["previous_message"]["text"]) == (
        "message_changed",
        "fixed",
        "typo",
    )
    deleted, _ = await sim.delete_message(channel.id, message["ts"])
    assert deleted["deleted_ts"] == message["ts"]
    bob = sim.add_user(team.id, "bob")
    _joined, (join_delivery,) = await sim.join_channel(channel.id, bob.id)
    assert join_delivery.envelope["event"]["subtype"] == "channel_join"
    _shared, (file_delivery,) = await sim.post_user_message(
        channel.id, alice.id, "see file", files=[{"name": "a.txt", "data": b"hello"}]
    )
    event = file_delivery.envelope["event"]
    assert event["subtype"] == "file_share"
    assert event["files"][0]["name"] == "a.txt"
    async with (
        aiohttp.ClientSession() as http,
        http.get(event["files"][0]["url_private"], headers={"Authorization": f"Bearer {bot.token}"}) as response,
    ):
        assert await response.read() == b"hello"
    web = AsyncWebClient(token=bot.token, base_url=sim.api_url)
    _, (foreign,) = await sim.post_bot_message(channel.id, "beep", bot_id="BOTHER", username="ci")
    assert foreign.envelope["event"]["bot_id"] == "BOTHER"
    await web.chat_postMessage(channel=channel.id, text="my own post")
    await asyncio.sleep(0.1)
    echo = sim.deliveries[-1].envelope["event"]
    assert echo["bot_id"] == bot.bot_id
    assert echo["text"] == "my own post"


async def test_signature_helpers_produce_what_the_verifier_rejects(sim: SlackSimulator, bot: Bot, hub: Hub) -> None:
    verification = await sim.url_verification(bot, challenge="3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P")
    assert verification.status == 200
    assert "3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P" in verification.body
    body = {"type": "event_callback", "event": {"type": "message"}}
    assert (await sim.post_signed(bot, body)).status == 200
    variants: list[dict[str, Any]] = [
        {"tamper": True},
        {"secret": "wrong"},
        {"timestamp": time.time() - 600},
        {"omit_headers": ["X-Slack-Signature"]},
        {"omit_headers": ["X-Slack-Request-Timestamp"]},
        {"unsigned": True},
    ]
    for kwargs in variants:
        attempt = await sim.post_signed(bot, body, **kwargs)
        assert attempt.status == 401, kwargs
    assert hub.rejected == 6


async def socket_client(
    sim: SlackSimulator, bot: Bot, acked: list[dict[str, Any]], ack: bool = True
) -> SocketModeClient:
    client = SocketModeClient(
        app_token=bot.app_token, web_client=AsyncWebClient(base_url=sim.api_url), ping_interval=0.5
    )

    async def listener(client: SocketModeClient, request: SocketModeRequest) -> None:
        acked.append({**request.payload, "retry_attempt": request.retry_attempt})
        if ack:
            await client.send_socket_mode_response(SocketModeResponse(envelope_id=request.envelope_id))

    client.socket_mode_request_listeners.append(listener)  # type: ignore[arg-type]
    await client.connect()  # type: ignore[no-untyped-call]
    return client


async def test_socket_mode_hello_envelope_ack_and_reconnect(sim: SlackSimulator, team: Team, alice: User) -> None:
    bot = sim.add_bot(team.id, "socket-bot")
    channel = sim.add_channel(team.id, "general")
    received: list[dict[str, Any]] = []
    client = await socket_client(sim, bot, received)
    try:
        await sim.wait_for_socket(bot)
        _, (delivery,) = await sim.post_user_message(channel.id, alice.id, "over the socket")
        assert delivery.transport == "socket"
        assert delivery.acked
        assert delivery.sends == 1
        assert received[0]["event"]["text"] == "over the socket"
        assert sim.socket_acks[0]["envelope_id"] == delivery.envelope_id
        assert await sim.socket_disconnect(bot) == 1
        await sim.wait_for_connects(bot, 2)
        _, (again,) = await sim.post_user_message(channel.id, alice.id, "after refresh")
        assert again.acked
        assert received[-1]["event"]["text"] == "after refresh"
    finally:
        await client.close()  # type: ignore[no-untyped-call]


async def test_socket_mode_redelivers_an_unacked_envelope(sim: SlackSimulator, team: Team, alice: User) -> None:
    bot = sim.add_bot(team.id, "lazy-bot")
    channel = sim.add_channel(team.id, "general")
    received: list[dict[str, Any]] = []
    client = await socket_client(sim, bot, received, ack=False)
    try:
        await sim.wait_for_socket(bot)
        _, (delivery,) = await sim.post_user_message(channel.id, alice.id, "ack me")
        assert not delivery.acked
        assert delivery.sends == 4
        assert [r["retry_attempt"] for r in received] == [0, 1, 2, 3]
        assert {r["event_id"] for r in received} == {delivery.event_id}
    finally:
        await client.close()  # type: ignore[no-untyped-call]
