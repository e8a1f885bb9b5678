"""A WhatsApp text message through the real mesh: gateway → ingress → router → agent → channels → Evolution,
with its trace, on SQLite and on PostgreSQL."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import pytest

from simulators.evolution import text_upsert
from tests.e2e.conftest import AGENT_KEY, World
from tests.helpers.mesh import eventually

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="module")]

MARIA = "5521991234567@s.whatsapp.net"


async def post(world: World, instance: str, envelope: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    async with aiohttp.ClientSession() as session, session.post(world.mesh.webhook_url(instance), json=envelope) as r:
        return r.status, await r.json()


def replies_to(world: World, instance: str, chat: str) -> list[str]:
    return [m.text for m in world.evolution.sent if m.instance == instance and m.remote_jid == chat]


async def trace_of(world: World, trace_id: str, status: str, *span_words: str) -> dict[str, Any]:
    """The trace once it has `status` and, for each word, a span whose name contains it (each service exports its
    spans on its own schedule, so the last ones may land a moment after the status)."""

    async def probe() -> dict[str, Any] | None:
        code, body = await world.mesh.get_json(f"/api/v1/traces/{trace_id}")
        if code != 200 or body["status"] != status:
            return None
        names = [span["name"] for span in body["spans"]]
        return body if all(any(word in name for name in names) for word in span_words) else None

    return await eventually(probe, timeout=15)


async def test_text_message_is_answered_and_traced(world: World) -> None:
    instance = await world.new_instance()
    envelope = text_upsert(instance, MARIA, "Oi! Vocês abrem amanhã?")
    status, body = await post(world, instance, envelope)
    assert status == 200, body
    assert body["status"] == "accepted"

    await eventually(lambda: asyncio.sleep(0, replies_to(world, instance, MARIA) or None))
    assert replies_to(world, instance, MARIA) == ["Echo: Oi! Vocês abrem amanhã?"]

    call = next(c for c in world.agent.calls if c["context"]["instance"] == instance)
    assert call["message"] == "Oi! Vocês abrem amanhã?"
    assert call["session_origin"] == "whatsapp"
    assert call["user"]["phone_number"] == "+5521991234567"
    assert call["context"]["chat_id"] == MARIA
    assert call["context"]["message_id"] == envelope["data"]["key"]["id"]
    headers = world.agent.headers[world.agent.calls.index(call)]
    assert headers["x-api-key"] == AGENT_KEY
    assert headers["traceparent"].split("-")[1] == body["trace_id"]

    trace = await trace_of(world, body["trace_id"], "sent", "accept", "agent", "send")
    assert trace["instance_name"] == instance
    assert trace["source_channel"] == "whatsapp"
    assert trace["session_id"] == call["session_id"]
    assert trace["agent_duration_ms"] >= 0
    assert trace["incoming_payload"] is not None
    assert trace["agent_request_payload"]["message"] == "Oi! Vocês abrem amanhã?"
    assert trace["agent_response_payload"]["text"] == "Echo: Oi! Vocês abrem amanhã?"
    assert trace["outgoing_payload"] is not None
    spans = {span["name"]: span for span in trace["spans"]}
    assert spans["agent.call"]["duration_ms"] > 0
    assert spans["channels.send"]["parent_span_id"]

    code, listing = await world.mesh.get_json("/api/v1/traces", instance_name=instance, status="sent")
    assert code == 200
    assert [t["trace_id"] for t in listing["traces"]] == [body["trace_id"]]


async def test_same_webhook_three_times_gives_one_reply(world: World) -> None:
    instance = await world.new_instance()
    envelope = text_upsert(instance, MARIA, "só uma vez")
    results = await asyncio.gather(*(post(world, instance, envelope) for _ in range(3)))
    assert sorted(body["status"] for _, body in results) == ["accepted", "duplicate", "duplicate"]
    status, body = await post(world, instance, envelope)
    assert (status, body["status"]) == (200, "duplicate")
    await eventually(lambda: asyncio.sleep(0, replies_to(world, instance, MARIA) or None))
    await asyncio.sleep(1.0)
    assert replies_to(world, instance, MARIA) == ["Echo: só uma vez"]
    assert sum(1 for c in world.agent.calls if c["context"]["instance"] == instance) == 1


async def test_group_message_is_answered_in_the_group(world: World) -> None:
    instance = await world.new_instance(group_reply="all")
    group = "120363041857263915@g.us"
    envelope = text_upsert(instance, group, "Bom dia, pessoal!", participant="97315264018832@lid")
    status, _ = await post(world, instance, envelope)
    assert status == 200
    await eventually(lambda: asyncio.sleep(0, replies_to(world, instance, group) or None))
    assert replies_to(world, instance, group) == ["Echo: Bom dia, pessoal!"]


async def test_from_me_and_other_events_are_ignored(world: World) -> None:
    instance = await world.new_instance()
    status, body = await post(world, instance, text_upsert(instance, MARIA, "typed on the phone", from_me=True))
    assert (status, body["status"]) == (200, "ignored")
    presence = {"event": "presence.update", "instance": instance, "data": {"id": MARIA, "presences": {}}}
    status, body = await post(world, instance, presence)
    assert (status, body["status"]) == (200, "ignored")
    await asyncio.sleep(0.5)
    assert replies_to(world, instance, MARIA) == []


async def test_agent_error_ends_the_trace_in_error(world: World) -> None:
    instance = await world.new_instance()
    world.agent.set_reply(lambda body: "not json" if body["context"]["instance"] == instance else None)
    try:
        status, body = await post(world, instance, text_upsert(instance, MARIA, "break it"))
        assert status == 200
        trace = await trace_of(world, body["trace_id"], "error")
    finally:
        world.agent.set_reply(None)
    assert trace["error_message"]
    assert "agent" in trace["error_message"].lower()
    assert replies_to(world, instance, MARIA) == []


@pytest.mark.parametrize(
    ("method", "path", "kwargs", "expected"),
    [
        ("post", "/api/v1/webhook/evolution/{instance}?secret={secret}", {"data": b"{not json"}, 400),
        ("post", "/api/v1/webhook/evolution/{instance}", {"data": b"{not json"}, 401),
        ("post", "/api/v1/webhook/evolution/{instance}?secret=wrong-secret", {"json": {"event": "x"}}, 401),
        ("post", "/api/v1/webhook/evolution/nobody-here", {"json": {"event": "messages.upsert"}}, 401),
        ("get", "/api/v1/instances", {"headers": {"x-api-key": "wrong"}}, 401),
        ("post", "/api/v1/instances", {"json": {"name": "Bad Name!", "channel_type": "whatsapp"}}, 422),
        ("get", "/api/v1/traces/" + "0" * 32, {}, 404),
        ("get", "/api/v1/instances/does-not-exist", {}, 404),
    ],
)
async def test_bad_input_gets_a_clear_json_error(
    world: World, method: str, path: str, kwargs: dict[str, Any], expected: int
) -> None:
    instance = await world.new_instance()
    url = path.format(instance=instance, secret=world.mesh.webhook_secrets.get(instance, ""))
    async with world.mesh.client.request(method, url, **kwargs) as response:
        assert response.status == expected
        body = await response.json()
        assert "detail" in body


async def test_health_and_docs(world: World) -> None:
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{world.mesh.base_url}/health") as response:
            body = await response.json()
            assert response.status == 200
            assert body["status"] == "healthy"
            assert set(body["services"]) == {"ingress", "router", "channels", "tracing"}
        async with session.get(f"{world.mesh.base_url}/docs") as response:
            assert response.status == 200


async def test_instance_secrets_never_come_back_in_clear(world: World) -> None:
    instance = await world.new_instance()
    code, body = await world.mesh.get_json(f"/api/v1/instances/{instance}")
    assert code == 200
    assert AGENT_KEY not in str(body)
    assert body["agent_api_key"].startswith("****")
    assert body["has_agent_api_key"] is True
