"""Slack end to end through the real processes and the Slack simulator: Events API and Socket Mode in, Web API out,
replies in the user's thread, never answered twice, never answering the bot itself, tenants never crossing."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from examples.agent_echo import EchoAgent
from launcher.local_mesh import LocalMesh
from simulators.slack import Bot, SlackSimulator, Team, User
from simulators.slack import Channel as SlackChannel
from tests.e2e.conftest import AGENT_KEY, running_mesh
from tests.helpers.mesh import eventually

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="module")]


@dataclass(frozen=True)
class Workspace:
    """One Slack instance of the hub: its workspace, app, a user and a channel they share."""

    instance: str
    team: Team
    bot: Bot
    user: User
    channel: SlackChannel


@dataclass
class SlackWorld:
    mesh: LocalMesh
    slack: SlackSimulator
    agent: EchoAgent

    async def new_workspace(self, *, socket_mode: bool = False) -> Workspace:
        """A fresh workspace with the app installed, and a Slack instance for it (Events API unless `socket_mode`)."""
        suffix = uuid.uuid4().hex[:8]
        team = self.slack.add_team(name=f"team-{suffix}")
        bot = self.slack.add_bot(team.id, f"omni-{suffix}")
        user = self.slack.add_user(team.id, f"user-{suffix}")
        channel = self.slack.add_channel(team.id, f"general-{suffix}")
        name = f"slack-{suffix}"
        fields: dict[str, Any] = {
            "name": name,
            "channel_type": "slack",
            "slack_bot_token": bot.token,
            "slack_signing_secret": bot.signing_secret,
            "agent_api_url": self.agent.url,
            "agent_api_key": AGENT_KEY,
            "default_agent": "echo",
            "agent_timeout": 10,
        }
        if socket_mode:
            fields["slack_app_token"] = bot.app_token
        created = await self.mesh.create_instance(**fields)
        assert created["slack_bot_user_id"] == bot.user_id
        if socket_mode:
            await self.slack.wait_for_socket(bot, 1)
        else:
            self.slack.set_request_url(bot, created["webhook_url"])
        return Workspace(name, team, bot, user, channel)

    async def replies_in(self, workspace: Workspace, channel: str, thread_ts: str, count: int) -> list[str]:
        """The bot's posts in that thread once there are `count` of them (then a moment later, still `count`)."""

        def posts() -> list[str]:
            return [
                p.text for p in self.slack.posts if p.bot_user_id == workspace.bot.user_id and p.channel == channel
                and p.thread_ts == thread_ts
            ]  # fmt: skip

        await eventually(lambda: asyncio.sleep(0, len(posts()) >= count), timeout=20)
        await asyncio.sleep(0.5)
        return posts()


@pytest_asyncio.fixture(scope="module", loop_scope="module", params=["sqlite", "postgres"])
async def world(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[SlackWorld]:
    slack = SlackSimulator(retry_delays=(0.2, 0.5, 1.0))
    agent = EchoAgent(api_key=AGENT_KEY)
    await slack.start()
    await agent.start()
    data_dir: Path = tmp_path_factory.mktemp(f"slack-mesh-{request.param}")
    env = {"AUTOMAGIK_OMNI_SLACK_API_URL": slack.api_url}
    try:
        async with running_mesh(data_dir, request.param, extra_env=env) as mesh:
            yield SlackWorld(mesh, slack, agent)
    finally:
        await agent.stop()
        await slack.stop()


async def test_a_dm_is_answered_in_its_thread(world: SlackWorld) -> None:
    ws = await world.new_workspace()
    dm = world.slack.open_dm(ws.bot, ws.user.id)
    message, deliveries = await world.slack.post_user_message(dm.id, ws.user.id, "hello from a DM")
    assert [d.status for d in deliveries] == [200]
    assert await world.replies_in(ws, dm.id, message["ts"], 1) == ["Echo: hello from a DM"]
    call = next(c for c in world.agent.calls if c.get("message") == "hello from a DM")
    assert call["session_origin"] == "slack"
    assert call["context"]["team_id"] == ws.team.id


async def test_a_mention_is_answered_without_the_mention_and_once(world: SlackWorld) -> None:
    """Slack sends the mention both as `app_mention` and as `message`: one reply."""
    ws = await world.new_workspace()
    text = f"<@{ws.bot.user_id}> what is the status?"
    message, deliveries = await world.slack.post_user_message(ws.channel.id, ws.user.id, text)
    assert sorted(d.event_type for d in deliveries) == ["app_mention", "message"]
    assert await world.replies_in(ws, ws.channel.id, message["ts"], 1) == ["Echo: what is the status?"]


async def test_a_reply_in_the_bots_thread_is_answered_and_other_chatter_is_not(world: SlackWorld) -> None:
    ws = await world.new_workspace()
    root, _ = await world.slack.post_user_message(ws.channel.id, ws.user.id, f"<@{ws.bot.user_id}> start")
    await world.replies_in(ws, ws.channel.id, root["ts"], 1)
    await world.slack.post_user_message(ws.channel.id, ws.user.id, "and a follow-up", thread_ts=root["ts"])
    await world.slack.post_user_message(ws.channel.id, ws.user.id, "chatter nobody asked the bot about")
    replies = await world.replies_in(ws, ws.channel.id, root["ts"], 2)
    assert replies == ["Echo: start", "Echo: and a follow-up"]
    assert not any(c.get("message") == "chatter nobody asked the bot about" for c in world.agent.calls)


async def test_a_retried_delivery_is_answered_once_and_the_bots_own_posts_never(world: SlackWorld) -> None:
    ws = await world.new_workspace()
    dm = world.slack.open_dm(ws.bot, ws.user.id)
    message, deliveries = await world.slack.post_user_message(dm.id, ws.user.id, "once please")
    await world.slack.deliver_envelope(ws.bot, deliveries[0].envelope)  # Slack's retry of the same event
    replies = await world.replies_in(ws, dm.id, message["ts"], 1)
    await asyncio.sleep(1.0)  # the echo of the bot's own reply came back as an event; it must not be answered
    assert replies == ["Echo: once please"]
    assert sum(1 for c in world.agent.calls if c.get("message") == "once please") == 1


async def test_a_long_reply_arrives_in_order_in_the_thread(world: SlackWorld) -> None:
    ws = await world.new_workspace()
    paragraphs = [f"part {i}: " + "x" * 600 for i in range(3)]
    world.agent.set_reply(lambda body: {"text": "\n\n".join(paragraphs)})
    try:
        dm = world.slack.open_dm(ws.bot, ws.user.id)
        message, _ = await world.slack.post_user_message(dm.id, ws.user.id, "tell me a lot")
        assert await world.replies_in(ws, dm.id, message["ts"], 3) == paragraphs
    finally:
        world.agent.set_reply(None)


async def test_socket_mode_answers_and_reconnects(world: SlackWorld) -> None:
    ws = await world.new_workspace(socket_mode=True)
    dm = world.slack.open_dm(ws.bot, ws.user.id)
    first, deliveries = await world.slack.post_user_message(dm.id, ws.user.id, "over the socket")
    assert [d.transport for d in deliveries] == ["socket"]
    assert await world.replies_in(ws, dm.id, first["ts"], 1) == ["Echo: over the socket"]
    assert all(d.acked for d in deliveries)

    await world.slack.socket_disconnect(ws.bot, reason="refresh_requested")
    await world.slack.wait_for_connects(ws.bot, 2)
    await world.slack.wait_for_socket(ws.bot, 1)
    second, _ = await world.slack.post_user_message(dm.id, ws.user.id, "after the reconnect")
    assert await world.replies_in(ws, dm.id, second["ts"], 1) == ["Echo: after the reconnect"]


async def test_two_workspaces_never_cross(world: SlackWorld) -> None:
    one, two = await world.new_workspace(), await world.new_workspace()
    dm_one = world.slack.open_dm(one.bot, one.user.id)
    dm_two = world.slack.open_dm(two.bot, two.user.id)
    m1, _ = await world.slack.post_user_message(dm_one.id, one.user.id, "from workspace one")
    m2, _ = await world.slack.post_user_message(dm_two.id, two.user.id, "from workspace two")
    assert await world.replies_in(one, dm_one.id, m1["ts"], 1) == ["Echo: from workspace one"]
    assert await world.replies_in(two, dm_two.id, m2["ts"], 1) == ["Echo: from workspace two"]
    assert {p.team_id for p in world.slack.posts if p.bot_user_id == one.bot.user_id} == {one.team.id}
    assert {p.team_id for p in world.slack.posts if p.bot_user_id == two.bot.user_id} == {two.team.id}


async def test_rest_sends_reach_a_user_by_dm_and_channels_are_listed(world: SlackWorld) -> None:
    ws = await world.new_workspace()
    async with world.mesh.client.post(
        f"/api/v1/{ws.instance}/send-text", json={"recipient": ws.user.id, "text": "a note from the operator"}
    ) as response:
        assert response.status == 200, await response.text()
        sent = await response.json()
    [post] = [p for p in world.slack.posts if p.text == "a note from the operator"]
    assert post.channel.startswith("D")
    assert sent["message_ids"] == [post.ts]
    async with world.mesh.client.post(
        f"/api/v1/{ws.instance}/send-text", json={"recipient": "not-a-slack-id", "text": "x"}
    ) as response:
        assert response.status == 422
    code, listed = await world.mesh.get_json(f"/api/v1/{ws.instance}/channels")
    assert code == 200
    assert ws.channel.id in {c["id"] for c in listed["channels"]}


async def test_contacts_are_the_workspaces_people_paged_by_name(world: SlackWorld) -> None:
    ws = await world.new_workspace()
    for name in ("zoe", "bruno", "carla"):
        world.slack.add_user(ws.team.id, f"{name}-{ws.instance[-4:]}", real_name=name.title())
    code, first = await world.mesh.get_json(f"/api/v1/{ws.instance}/contacts", page=1, page_size=2)
    assert code == 200, first
    assert first["total_count"] == 4  # three colleagues and the workspace's first user; never the bot
    assert (first["page"], first["page_size"], first["has_more"]) == (1, 2, True)
    code, second = await world.mesh.get_json(f"/api/v1/{ws.instance}/contacts", page=2, page_size=2)
    assert second["has_more"] is False
    ids = [c["id"] for c in first["contacts"] + second["contacts"]]
    assert ws.bot.user_id not in ids
    assert len(set(ids)) == 4
    code, found = await world.mesh.get_json(f"/api/v1/{ws.instance}/contacts", search="carl")
    assert [c["name"] for c in found["contacts"]] == ["Carla"]


async def test_a_blocked_slack_user_gets_nothing_and_the_trace_names_the_rule(world: SlackWorld) -> None:
    ws = await world.new_workspace()
    rule_body = {"sender_id": ws.user.id, "rule_type": "block", "instance_name": ws.instance}
    async with world.mesh.client.post("/api/v1/access/rules", json=rule_body) as response:
        rule = await response.json()
        assert response.status == 201, rule
    dm = world.slack.open_dm(ws.bot, ws.user.id)
    _, deliveries = await world.slack.post_user_message(dm.id, ws.user.id, "blocked hello")
    assert [d.status for d in deliveries] == [200]

    async def blocked() -> dict[str, Any] | None:
        code, listing = await world.mesh.get_json("/api/v1/traces", instance_name=ws.instance, status="blocked")
        assert code == 200, listing
        return listing["traces"][0] if listing["traces"] else None

    summary = await eventually(blocked, timeout=15)
    code, trace = await world.mesh.get_json(f"/api/v1/traces/{summary['trace_id']}")
    assert code == 200
    assert rule["id"] in trace["error_message"]
    await asyncio.sleep(1.0)  # a reply now would be a leak
    assert not [p for p in world.slack.posts if p.bot_user_id == ws.bot.user_id and p.channel == dm.id]
    assert not [c for c in world.agent.calls if c.get("message") == "blocked hello"]
