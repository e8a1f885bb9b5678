"""Access rules through the real mesh (SQLite and PostgreSQL): a blocked WhatsApp sender never reaches the agent, gets
nothing (or the instance's blocked_text), and its trace ends `blocked` naming the rule; allowlist mode."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import pytest

from simulators.evolution import text_upsert
from tests.e2e.conftest import World
from tests.helpers.mesh import eventually

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="module")]

BLOCKED_JID = "5521990000001@s.whatsapp.net"
FRIEND_JID = "5511990000002@s.whatsapp.net"


async def post_webhook(world: World, instance: str, envelope: dict[str, Any]) -> dict[str, Any]:
    async with aiohttp.ClientSession() as session, session.post(world.mesh.webhook_url(instance), json=envelope) as r:
        assert r.status == 200
        body: dict[str, Any] = await r.json()
        return body


async def add_rule(world: World, **body: Any) -> dict[str, Any]:
    async with world.mesh.client.post("/api/v1/access/rules", json=body) as response:
        created: dict[str, Any] = await response.json()
        assert response.status == 201, created
        return created


def replies_to(world: World, instance: str, chat: str) -> list[str]:
    return [m.text for m in world.evolution.sent if m.instance == instance and m.remote_jid == chat]


def agent_calls(world: World, instance: str) -> int:
    return sum(1 for call in world.agent.calls if call["context"]["instance"] == instance)


async def trace_with_status(world: World, trace_id: str, status: str) -> dict[str, Any]:
    async def probe() -> dict[str, Any] | None:
        code, body = await world.mesh.get_json(f"/api/v1/traces/{trace_id}")
        return body if code == 200 and body["status"] == status else None

    found: dict[str, Any] = await eventually(probe, timeout=15)
    return found


async def test_a_blocked_sender_gets_nothing_and_its_trace_names_the_rule(world: World) -> None:
    instance = await world.new_instance()
    rule = await add_rule(world, phone_number="+55 21 99000-0001", rule_type="block", instance_name=instance)
    assert rule["phone_number"] == "+5521990000001"

    blocked = await post_webhook(world, instance, text_upsert(instance, BLOCKED_JID, "let me in"))
    trace = await trace_with_status(world, blocked["trace_id"], "blocked")
    assert rule["id"] in trace["error_message"]
    assert "+5521990000001" in trace["error_message"]

    friend = await post_webhook(world, instance, text_upsert(instance, FRIEND_JID, "hello"))
    await trace_with_status(world, friend["trace_id"], "sent")
    assert replies_to(world, instance, FRIEND_JID) == ["Echo: hello"]
    assert replies_to(world, instance, BLOCKED_JID) == []
    assert agent_calls(world, instance) == 1

    async with world.mesh.client.post(
        "/api/v1/access/check", json={"instance_name": instance, "sender_id": BLOCKED_JID}
    ) as response:
        check = await response.json()
    assert (check["allowed"], check["rule"]["id"]) == (False, rule["id"])


async def test_blocked_text_is_sent_instead_of_the_agent_reply(world: World) -> None:
    instance = await world.new_instance(blocked_text="This number cannot use the assistant.")
    await add_rule(world, phone_number="+552199*", rule_type="block", instance_name=instance)
    blocked = await post_webhook(world, instance, text_upsert(instance, BLOCKED_JID, "hi"))
    await trace_with_status(world, blocked["trace_id"], "blocked")
    await eventually(lambda: asyncio.sleep(0, replies_to(world, instance, BLOCKED_JID) or None))
    assert replies_to(world, instance, BLOCKED_JID) == ["This number cannot use the assistant."]
    assert agent_calls(world, instance) == 0


async def test_allowlist_mode_lets_only_allowed_senders_reach_the_agent(world: World) -> None:
    instance = await world.new_instance(access_mode="allowlist")
    await add_rule(world, sender_id=FRIEND_JID, rule_type="allow", instance_name=instance)
    stranger = await post_webhook(world, instance, text_upsert(instance, BLOCKED_JID, "who am I"))
    trace = await trace_with_status(world, stranger["trace_id"], "blocked")
    assert "allowlist" in trace["error_message"]
    friend = await post_webhook(world, instance, text_upsert(instance, FRIEND_JID, "it's me"))
    await trace_with_status(world, friend["trace_id"], "sent")
    assert replies_to(world, instance, FRIEND_JID) == ["Echo: it's me"]
    assert replies_to(world, instance, BLOCKED_JID) == []
    assert agent_calls(world, instance) == 1
