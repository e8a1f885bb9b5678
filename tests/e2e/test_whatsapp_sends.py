"""Every WhatsApp send of the REST API through the real mesh to the Evolution simulator: what Evolution receives,
idempotency, each send's own trace, and Evolution's failures answered honestly (422, 429, 502, 504)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio

from examples.agent_echo import EchoAgent
from simulators.evolution import EvolutionSimulator, post_webhook, text_upsert
from tests.e2e.conftest import AGENT_KEY, World, running_mesh
from tests.helpers.mesh import eventually

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="module")]

CHAT = "5521991234567"
JID = f"{CHAT}@s.whatsapp.net"
EVOLUTION_TIMEOUT_SECONDS = 1.0
SENDS_ENV = {
    # A short Evolution timeout so the 504 test is quick, and quick in-call retries of a 5xx.
    "AUTOMAGIK_OMNI_CHANNELS_EVOLUTION_TIMEOUT_SECONDS": str(EVOLUTION_TIMEOUT_SECONDS),
    "AUTOMAGIK_OMNI_CHANNELS_SEND_ATTEMPTS": "3",
    "AUTOMAGIK_OMNI_CHANNELS_RETRY_BACKOFF_SECONDS": "0.05",
    "AUTOMAGIK_OMNI_CHANNELS_RATE_LIMIT_BACKOFF_SECONDS": "4",
}


@pytest_asyncio.fixture(scope="module", loop_scope="module", params=["sqlite", "postgres"])
async def world(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[World]:
    evolution = EvolutionSimulator()
    agent = EchoAgent(api_key=AGENT_KEY)
    await evolution.start()
    await agent.start()
    data_dir: Path = tmp_path_factory.mktemp(f"sends-{request.param}")
    try:
        async with running_mesh(data_dir, request.param, extra_env=SENDS_ENV) as mesh:
            yield World(mesh, evolution, agent, request.param)
    finally:
        await agent.stop()
        await evolution.stop()


@pytest_asyncio.fixture(loop_scope="module")
async def instance(world: World) -> AsyncIterator[str]:
    world.evolution.reset()
    yield await world.new_instance()
    world.evolution.reset()


async def post(world: World, path: str, body: dict[str, Any], key: str | None = None) -> tuple[int, Any, Any]:
    """POST a public route; returns (status, JSON body, headers)."""
    headers = {"Idempotency-Key": key} if key else {}
    async with world.mesh.client.post(path, json=body, headers=headers) as response:
        return response.status, await response.json(), response.headers


def sent_by(world: World, instance: str) -> list[Any]:
    return [s for s in world.evolution.sent if s.instance == instance]


async def trace_of(world: World, trace_id: str) -> dict[str, Any]:
    async def probe() -> dict[str, Any] | None:
        code, body = await world.mesh.get_json(f"/api/v1/traces/{trace_id}")
        return body if code == 200 and body["status"] in ("sent", "error") else None

    return await eventually(probe, timeout=15)


async def test_every_send_reaches_evolution_with_its_own_trace(world: World, instance: str) -> None:
    base = f"/api/v1/{instance}"
    calls: list[tuple[str, dict[str, Any]]] = [
        ("send-text", {"recipient": f"+{CHAT}", "text": "Olá"}),
        ("send-media", {"recipient": CHAT, "media_url": "https://files.example.com/a.jpg", "media_type": "image"}),
        (
            "send-media",
            {"recipient": CHAT, "media_base64": "JVBERi0xLjQK", "media_type": "document", "filename": "c.pdf"},
        ),
        ("send-audio", {"recipient": CHAT, "audio_url": "https://files.example.com/tts/reply.mp3"}),
        ("send-sticker", {"recipient": CHAT, "sticker_base64": "UklGRgAAAABXRUJQ"}),
        ("send-reaction", {"recipient": JID, "message_id": "3A9C4E2B7D1F5A8C6E30", "reaction": "❤️"}),
        ("send-location", {"recipient": CHAT, "latitude": -23.5613991, "longitude": -46.6565712, "name": "Loja"}),
        ("send-contact", {"recipient": CHAT, "contacts": [{"full_name": "Carlos", "phone_number": "+5531988776655"}]}),
    ]
    answers = []
    for path, body in calls:
        status, answer, _ = await post(world, f"{base}/{path}", body)
        assert status == 200, (path, answer)
        assert answer["status"] == "sent"
        answers.append(answer)

    sent = sent_by(world, instance)
    assert [s.endpoint for s in sent] == [
        "sendText",
        "sendMedia",
        "sendMedia",
        "sendWhatsAppAudio",
        "sendSticker",
        "sendReaction",
        "sendLocation",
        "sendContact",
    ]
    assert [a["message_ids"] for a in answers] == [[s.key_id] for s in sent]
    assert sent[3].body == {"number": CHAT, "audio": "https://files.example.com/tts/reply.mp3", "encoding": True}
    assert sent[4].body == {"number": CHAT, "sticker": "UklGRgAAAABXRUJQ"}
    assert sent[5].body == {"key": {"remoteJid": JID, "fromMe": False, "id": "3A9C4E2B7D1F5A8C6E30"}, "reaction": "❤️"}
    assert sent[6].body == {
        "number": CHAT,
        "latitude": -23.5613991,
        "longitude": -46.6565712,
        "name": "Loja",
        "address": "",
    }
    assert sent[7].body["contact"] == [{"fullName": "Carlos", "wuid": "5531988776655", "phoneNumber": "+5531988776655"}]

    for answer in answers[3:]:
        trace = await trace_of(world, answer["trace_id"])
        assert (trace["status"], trace["instance_name"]) == ("sent", instance)
        assert any("send" in span["name"] for span in trace["spans"])


async def test_presence_and_profile(world: World, instance: str) -> None:
    status, answer, _ = await post(
        world, f"/api/v1/{instance}/send-presence", {"recipient": CHAT, "presence": "available", "duration_ms": 10}
    )
    assert (status, answer) == (200, {"status": "sent"})
    assert world.evolution.presences[-1] == {"instance": instance, "number": CHAT, "presence": "available", "delay": 10}

    async with aiohttp.ClientSession() as session:
        profile = {"number": CHAT, "name": "Maria Souza", "status": {"status": "Oi!", "setAt": "2025-01-01"}}
        async with session.post(f"{world.evolution.url}/__sim/profiles", json=profile) as created:
            assert created.status == 201
    status, answer, _ = await post(world, f"/api/v1/{instance}/fetch-profile", {"recipient": f"+{CHAT}"})
    assert status == 200
    assert answer == {
        "id": JID,
        "name": "Maria Souza",
        "phone_number": f"+{CHAT}",
        "status": "Oi!",
        "picture_url": None,
        "is_business": False,
        "description": None,
    }


async def test_a_repeated_key_sends_once(world: World, instance: str) -> None:
    key = f"order-{uuid.uuid4().hex}"
    body = {"recipient": CHAT, "latitude": 1.5, "longitude": 2.5}
    first = await post(world, f"/api/v1/{instance}/send-location", body, key)
    second = await post(world, f"/api/v1/{instance}/send-location", body, key)
    reaction = {"recipient": CHAT, "message_id": "3EB0AA", "reaction": "👍"}
    third = await post(world, f"/api/v1/{instance}/send-reaction", reaction, key + "-r")
    fourth = await post(world, f"/api/v1/{instance}/send-reaction", reaction, key + "-r")

    assert (first[0], second[0], third[0], fourth[0]) == (200, 200, 200, 200)
    assert first[1]["message_ids"] == second[1]["message_ids"]
    assert third[1]["message_ids"] == fourth[1]["message_ids"]
    assert [s.endpoint for s in sent_by(world, instance)] == ["sendLocation", "sendReaction"]
    other = await post(world, f"/api/v1/{instance}/send-location", {**body, "latitude": 3}, key)
    assert (other[0], other[1]["reason"]) == (409, "IDEMPOTENCY_KEY_REUSED")


async def test_a_number_without_whatsapp_is_a_422_with_evolutions_words(world: World, instance: str) -> None:
    world.evolution.not_on_whatsapp.add("5511900000000")

    status, answer, _ = await post(
        world,
        f"/api/v1/{instance}/send-contact",
        {"recipient": "5511900000000", "contacts": [{"full_name": "A", "phone_number": "5511999999999"}]},
    )
    assert (status, answer["reason"]) == (422, "RECIPIENT_NOT_ON_WHATSAPP")
    assert "5511900000000 is not on WhatsApp" in answer["detail"]

    status, answer, _ = await post(world, f"/api/v1/{instance}/fetch-profile", {"recipient": "5511900000000"})
    assert (status, answer["reason"]) == (422, "RECIPIENT_NOT_ON_WHATSAPP")


async def test_evolutions_validation_is_a_422(world: World, instance: str) -> None:
    status, answer, _ = await post(
        world, f"/api/v1/{instance}/send-reaction", {"recipient": CHAT, "message_id": "m1", "reaction": "ok"}
    )
    assert (status, answer["reason"]) == (422, "CHANNEL_REQUEST_INVALID")
    assert answer["detail"] == "Reaction must be a single emoji or empty string"


async def test_a_5xx_is_retried_then_a_502_with_the_reason(world: World, instance: str) -> None:
    world.evolution.fail_next(3, status=500)

    status, answer, _ = await post(
        world, f"/api/v1/{instance}/send-sticker", {"recipient": CHAT, "sticker_url": "https://f.example/s.webp"}
    )

    assert (status, answer["reason"]) == (502, "CHANNEL_UPSTREAM_ERROR")
    assert "Connection Closed" in answer["detail"]
    attempts = [r for r in world.evolution.requests if r == ("POST", f"/message/sendSticker/{instance}")]
    assert len(attempts) == 3
    assert sent_by(world, instance) == []


async def test_rate_overlimit_is_a_429_with_retry_after(world: World, instance: str) -> None:
    body = {"status": 400, "error": "Bad Request", "response": {"message": ["Error: rate-overlimit"]}}
    world.evolution.fail_next(1, status=400, body=body)

    status, answer, headers = await post(world, f"/api/v1/{instance}/send-text", {"recipient": CHAT, "text": "hi"})

    assert (status, answer["reason"], headers["Retry-After"]) == (429, "CHANNEL_RATE_LIMITED", "4")


async def test_a_timeout_is_a_504_and_the_retry_does_not_send_twice(world: World, instance: str) -> None:
    world.evolution.fail_next(1, status=201, delay=EVOLUTION_TIMEOUT_SECONDS + 1, after_send=True)
    key = f"slow-{uuid.uuid4().hex}"
    body = {"recipient": CHAT, "message_id": "3EB0BB", "reaction": "🎉"}

    status, answer, _ = await post(world, f"/api/v1/{instance}/send-reaction", body, key)
    assert (status, answer["reason"]) == (504, "CHANNEL_TIMEOUT")

    [sent] = sent_by(world, instance)

    async def retried() -> list[str] | None:
        code, again, _ = await post(world, f"/api/v1/{instance}/send-reaction", body, key)
        return again["message_ids"] if code == 200 else None

    assert await eventually(retried, timeout=30, every=0.5) == [sent.key_id]
    assert len(sent_by(world, instance)) == 1


async def test_a_wrong_key_and_a_missing_instance_are_502s_that_say_so(world: World, instance: str) -> None:
    world.evolution.add_instance(instance, token="rotated-on-evolution")

    status, answer, _ = await post(
        world, f"/api/v1/{instance}/send-location", {"recipient": CHAT, "latitude": 0, "longitude": 0}
    )
    assert (status, answer["reason"]) == (502, "EVOLUTION_UNAUTHORIZED")
    assert "evolution_key" in answer["detail"]

    status, answer, _ = await post(
        world, f"/api/v1/{instance}/send-presence", {"recipient": CHAT, "presence": "paused"}
    )
    assert (status, answer["reason"]) == (502, "EVOLUTION_UNAUTHORIZED")

    del world.evolution.state.instances[instance]
    status, answer, _ = await post(
        world,
        f"/api/v1/{instance}/send-contact",
        {"recipient": CHAT, "contacts": [{"full_name": "A", "phone_number": "5511999999999"}]},
    )
    assert (status, answer["reason"]) == (502, "EVOLUTION_INSTANCE_NOT_FOUND")


async def test_bad_recipients_and_other_tenants(world: World, instance: str) -> None:
    status, answer, _ = await post(
        world, f"/api/v1/{instance}/send-sticker", {"recipient": "hello", "sticker_url": "https://f.example/s.webp"}
    )
    assert status == 422
    assert answer["errors"][0]["field"] == "recipient"

    other = await world.new_instance()
    async with world.mesh.client.post(f"/api/v1/instances/{other}/keys") as created:
        scoped = (await created.json())["key"]
    async with world.mesh.client.post(
        f"/api/v1/{instance}/send-reaction",
        json={"recipient": CHAT, "message_id": "m", "reaction": "👍"},
        headers={"x-api-key": scoped},
    ) as response:
        assert response.status == 404


async def test_agent_replies_carry_stickers_and_audio(world: World, instance: str) -> None:
    media = [
        {"type": "sticker", "url": "https://files.example.com/party.webp"},
        {"type": "audio", "mime_type": "audio/mpeg", "url": "https://files.example.com/song.mp3"},
    ]
    world.agent.set_reply(lambda body: {"text": "Aqui!", "media": media})
    try:
        async with aiohttp.ClientSession() as session:
            status = await post_webhook(session, world.mesh.webhook_url(instance), text_upsert(instance, JID, "oi"))
        assert status == 200

        async def three() -> list[str] | None:
            sent = sent_by(world, instance)
            return [s.endpoint for s in sent] if len(sent) >= 3 else None

        assert await eventually(three, timeout=20) == ["sendText", "sendSticker", "sendMedia"]
        assert sent_by(world, instance)[2].body["mediatype"] == "audio"
    finally:
        world.agent.set_reply(None)
