"""The router with Discord instances: the account is checked before anything is stored, the channel of an instance
never changes, and a Discord message gets the contract's agent payload and a reply that answers it, cut to
Discord's 2,000 characters without breaking a code fence."""

from __future__ import annotations

from typing import Any

import grpc
import pytest
from google.protobuf import field_mask_pb2
from omni.common.v1 import channel_pb2, message_pb2
from omni.router.v1 import instance_pb2, router_service_pb2

from tests.router.conftest import AGENT_KEY, Harness


def discord_instance(agent_url: str, token: str = "discord-token-7001", **overrides: Any) -> instance_pb2.Instance:
    values: dict[str, Any] = {
        "name": "disco",
        "discord": instance_pb2.DiscordConfig(bot_token=instance_pb2.SecretValue(value=token), guild_id="4242"),
        "agent_api_url": agent_url,
        "agent_api_key": instance_pb2.SecretValue(value=AGENT_KEY),
        "default_agent": "support-bot",
        "agent_timeout_seconds": 5,
        "enable_auto_split": True,
        "is_active": True,
    }
    values.update(overrides)
    return instance_pb2.Instance(**values)


def discord_message(message_id: str = "m-1", text: str = "hello", *, dm: bool = False) -> message_pb2.InboundMessage:
    return message_pb2.InboundMessage(
        id=message_id,
        instance_name="disco",
        channel=channel_pb2.CHANNEL_DISCORD,
        channel_message_id=f"11{message_id[-1]}0000000000000001",
        chat_id="900000000000000001",
        sender=message_pb2.Sender(id="800000000000000001", display_name="alice"),
        message_type=channel_pb2.MESSAGE_TYPE_TEXT,
        text=text,
        is_group=not dm,
        context={"guild_id": "" if dm else "4242"},
    )


async def create(h: Harness, **overrides: Any) -> instance_pb2.Instance:
    request = router_service_pb2.CreateInstanceRequest(instance=discord_instance(h.agent.url, **overrides))
    return (await h.stub.CreateInstance(request)).instance


async def test_a_token_discord_refuses_leaves_no_instance(harness: Harness) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await create(
            harness,
            name="bad",
            discord=instance_pb2.DiscordConfig(bot_token=instance_pb2.SecretValue(value="bad-token")),
        )
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "Discord refused the bot token" in (refused.value.details() or "")
    with pytest.raises(grpc.aio.AioRpcError) as missing:
        await harness.stub.GetInstance(router_service_pb2.GetInstanceRequest(name="bad"))
    assert missing.value.code() == grpc.StatusCode.NOT_FOUND

    created = await create(harness)
    assert created.WhichOneof("channel_config") == "discord"
    assert (created.discord.bot_token.hint, created.discord.bot_token.value) == ("****7001", "")
    assert created.discord.guild_id == "4242"
    [check] = [c for c in harness.channels.checks if c.instance.name == "disco"]
    assert check.instance.discord.bot_token.value == "discord-token-7001"  # channels needs it in clear to check


async def test_a_change_of_channel_settings_is_checked_and_the_channel_never_changes(harness: Harness) -> None:
    await create(harness)
    checks = len(harness.channels.checks)

    async def update(instance: instance_pb2.Instance, *paths: str) -> instance_pb2.Instance:
        request = router_service_pb2.UpdateInstanceRequest(
            instance=instance, update_mask=field_mask_pb2.FieldMask(paths=list(paths))
        )
        return (await harness.stub.UpdateInstance(request)).instance

    await update(instance_pb2.Instance(name="disco", default_agent="other"), "default_agent")
    assert len(harness.channels.checks) == checks
    new_token = instance_pb2.DiscordConfig(bot_token=instance_pb2.SecretValue(value="discord-token-8002"))
    updated = await update(instance_pb2.Instance(name="disco", discord=new_token), "discord.bot_token")
    assert updated.discord.bot_token.hint == "****8002"
    assert updated.discord.guild_id == "4242"
    assert len(harness.channels.checks) == checks + 1
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        bad = instance_pb2.DiscordConfig(bot_token=instance_pb2.SecretValue(value="bad-again"))
        await update(instance_pb2.Instance(name="disco", discord=bad), "discord.bot_token")
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    stored = (await harness.stub.GetInstance(router_service_pb2.GetInstanceRequest(name="disco"))).instance
    assert stored.discord.bot_token.hint == "****8002"

    for instance, paths in (
        (instance_pb2.Instance(name="disco", channel=channel_pb2.CHANNEL_WHATSAPP), ["channel"]),
        (
            instance_pb2.Instance(name="disco", whatsapp=instance_pb2.WhatsAppConfig(evolution_url="http://e")),
            ["whatsapp.evolution_url"],
        ),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as changed:
            await update(instance, *paths)
        assert changed.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_a_discord_message_gets_the_contract_payload_and_a_reply_to_it(harness: Harness) -> None:
    await create(harness)
    message = discord_message(text="what is up?")
    response = await harness.stub.RouteMessage(router_service_pb2.RouteMessageRequest(message=message), timeout=30)
    assert response.outcome == channel_pb2.MESSAGE_OUTCOME_SENT

    [body] = harness.agent.calls
    assert body["session_origin"] == "discord"
    assert body["message"] == "what is up?"
    assert body["user"] == {
        "phone_number": None,
        "email": None,
        "user_data": {"name": "alice", "discord_id": "800000000000000001"},
    }
    assert body["context"] == {
        "channel": "discord",
        "instance": "disco",
        "chat_id": "900000000000000001",
        "message_id": message.channel_message_id,
        "is_group": True,
        "quoted_message": None,
        "guild_id": "4242",
    }
    [send] = harness.channels.requests
    assert (send.chat_id, send.quoted_message_id) == ("900000000000000001", message.channel_message_id)

    dm = discord_message("m-2", "in private", dm=True)
    await harness.stub.RouteMessage(router_service_pb2.RouteMessageRequest(message=dm), timeout=30)
    assert harness.agent.calls[-1]["context"]["guild_id"] is None
    assert harness.agent.calls[-1]["context"]["is_group"] is False
    assert harness.agent.calls[0]["user_id"] == harness.agent.calls[1]["user_id"]  # one person per Discord user


async def test_a_long_discord_reply_is_cut_to_2000_characters_around_its_code_fence(harness: Harness) -> None:
    await create(harness, enable_auto_split=False)
    code = "\n".join(f"    line_{i} = compute({i})  # step {i}" for i in range(80))
    reply = "Here is the script:\n\n```python\n" + code + "\n```\n\n" + "All done. " * 80
    assert len(reply) > 3500
    harness.agent.set_reply(lambda _body: {"text": reply})
    await harness.stub.RouteMessage(router_service_pb2.RouteMessageRequest(message=discord_message()), timeout=30)

    [send] = harness.channels.requests
    parts = [p.text for p in send.parts]
    assert len(parts) >= 2
    assert all(len(p) <= 2000 for p in parts)
    assert all(p.count("```") % 2 == 0 for p in parts), "a part opens a code fence it does not close"
    assert "".join(parts).replace("```python\n", "").replace("```", "").count("line_79") == 1
    assert send.quoted_message_id  # the first part answers the user's message
