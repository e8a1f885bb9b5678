"""Webhooks: the simulator's `send.message` posts and the `text_upsert`/`post_webhook` builders."""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path
from typing import Any

import aiohttp

from simulators.evolution import EvolutionSimulator, post_webhook, text_upsert
from tests.simulators.conftest import INSTANCE, TOKEN, Receiver, load_rest, shape

MARIA_JID = "5521991234567@s.whatsapp.net"


async def set_webhook(
    session: aiohttp.ClientSession, sim: EvolutionSimulator, webhook: dict[str, Any]
) -> tuple[int, Any]:
    async with session.post(
        f"{sim.url}/webhook/set/{INSTANCE}", json={"webhook": webhook}, headers={"apikey": TOKEN}
    ) as response:
        return response.status, await response.json()


async def test_webhook_set_stores_the_v2_row(
    simulator: EvolutionSimulator, session: aiohttp.ClientSession, receiver: Receiver, evolution_fixtures: Path
) -> None:
    fixture = load_rest(evolution_fixtures, "webhook-set")
    webhook = {**fixture["request"]["webhook"], "url": receiver.url + "/hook"}
    status, body = await set_webhook(session, simulator, webhook)
    assert status == 201
    assert shape(body) == shape(fixture["response"]["body"])
    assert (body["url"], body["events"], body["enabled"]) == (webhook["url"], webhook["events"], True)
    async with session.get(f"{simulator.url}/webhook/find/{INSTANCE}", headers={"apikey": TOKEN}) as response:
        assert await response.json() == body

    status, body = await set_webhook(session, simulator, {"enabled": True, "url": receiver.url, "events": []})
    assert "SEND_MESSAGE" in body["events"]
    assert "MESSAGES_UPSERT" in body["events"]
    status, body = await set_webhook(session, simulator, {"enabled": True, "url": receiver.url})
    assert (status, body["status"]) == (500, 500)
    status, body = await set_webhook(session, simulator, {"enabled": True, "url": receiver.url, "events": ["NOPE"]})
    assert status == 400


async def test_api_send_posts_send_message_without_blocking_the_answer(
    simulator: EvolutionSimulator, session: aiohttp.ClientSession, receiver: Receiver, evolution_fixtures: Path
) -> None:
    headers = {"Authorization": "Bearer hub-shared-secret"}
    webhook = {"enabled": True, "url": receiver.url + "/wh/acme", "headers": headers, "events": ["SEND_MESSAGE"]}
    await set_webhook(session, simulator, webhook)
    async with session.post(
        f"{simulator.url}/message/sendText/{INSTANCE}",
        json={"number": "5521991234567", "text": "Olá"},
        headers={"apikey": TOKEN},
    ) as response:
        answer = await response.json()

    path, got_headers, envelope = await receiver.next()
    expected = json.loads((evolution_fixtures / "send-message-text.json").read_text())
    assert path == "/wh/acme"
    assert got_headers["authorization"] == "Bearer hub-shared-secret"
    assert got_headers["content-type"] == "application/json"
    assert list(envelope) == list(expected)
    assert shape(envelope) == shape(expected)
    assert envelope["data"] == answer
    assert (envelope["event"], envelope["instance"], envelope["apikey"]) == ("send.message", INSTANCE, None)
    assert (envelope["destination"], envelope["server_url"]) == (webhook["url"], simulator.url)
    assert envelope["sender"] == "5511987650000@s.whatsapp.net"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", envelope["date_time"])
    assert simulator.deliveries == [
        {"event": "send.message", "instance": INSTANCE, "url": webhook["url"], "status": 200}
    ]


async def test_by_events_suffix_jwt_and_unsubscribed_events(
    simulator: EvolutionSimulator, session: aiohttp.ClientSession, receiver: Receiver
) -> None:
    webhook = {"enabled": True, "url": receiver.url, "byEvents": True, "headers": {"jwt_key": "s3cret"}, "events": []}
    await set_webhook(session, simulator, webhook)
    async with session.post(
        f"{simulator.url}/chat/sendPresence/{INSTANCE}",
        json={"number": "5521991234567", "presence": "composing", "delay": 0},
        headers={"apikey": TOKEN},
    ) as response:
        assert response.status == 201
    async with session.post(
        f"{simulator.url}/message/sendText/{INSTANCE}",
        json={"number": "5521991234567", "text": "x"},
        headers={"apikey": TOKEN},
    ) as response:
        assert response.status == 201
    path, headers, envelope = await receiver.next()
    assert (path, envelope["event"]) == ("/send-message", "send.message")
    assert "jwt_key" not in headers
    assert re.fullmatch(r"Bearer [\w-]+\.[\w-]+\.[\w-]+", headers["authorization"])

    await set_webhook(session, simulator, {"enabled": True, "url": receiver.url, "events": ["MESSAGES_UPSERT"]})
    async with session.post(
        f"{simulator.url}/message/sendText/{INSTANCE}",
        json={"number": "5521991234567", "text": "y"},
        headers={"apikey": TOKEN},
    ) as response:
        assert response.status == 201
    await asyncio.sleep(0.05)
    assert receiver.received.empty()


async def test_webhook_failures_are_ignored(simulator: EvolutionSimulator, session: aiohttp.ClientSession) -> None:
    await set_webhook(session, simulator, {"enabled": True, "url": "http://127.0.0.1:9/nothing", "events": []})
    async with session.post(
        f"{simulator.url}/message/sendText/{INSTANCE}",
        json={"number": "5521991234567", "text": "z"},
        headers={"apikey": TOKEN},
    ) as response:
        assert response.status == 201
    for _ in range(100):
        if simulator.deliveries:
            break
        await asyncio.sleep(0.01)
    assert simulator.deliveries[0]["status"] is None


async def test_text_upsert_matches_the_fixture(evolution_fixtures: Path) -> None:
    expected = json.loads((evolution_fixtures / "messages-upsert-text.json").read_text())
    built = text_upsert(
        INSTANCE,
        MARIA_JID,
        "Oi! Vocês abrem amanhã?",
        message_id="A3F1C0D9E8B7A6954321FEDCBA098765",
        remote_jid_alt="148203657712934@lid",
        timestamp=1764945130,
    )
    assert list(built) == list(expected)
    assert shape(built) == shape(expected)
    assert built["data"]["key"] == expected["data"]["key"]
    assert {k: v for k, v in built["data"].items() if k not in ("message", "instanceId")} == {
        k: v for k, v in expected["data"].items() if k not in ("message", "instanceId")
    }
    assert built["data"]["message"]["conversation"] == expected["data"]["message"]["conversation"]


async def test_text_upsert_group_and_defaults(evolution_fixtures: Path) -> None:
    expected = json.loads((evolution_fixtures / "messages-upsert-group-text.json").read_text())
    built = text_upsert(
        INSTANCE,
        "120363041857263915@g.us",
        "Bom dia",
        message_id="3A9C4E2B7D1F5A8C6E30",
        participant="97315264018832@lid",
        remote_jid_alt="5531988776655@s.whatsapp.net",
    )
    assert built["data"]["key"] == expected["data"]["key"]
    assert built["data"]["source"] == "ios"
    fresh = text_upsert(INSTANCE, MARIA_JID, "hi", from_me=True)
    assert re.fullmatch(r"[0-9A-F]{32}", fresh["data"]["key"]["id"])
    assert (fresh["data"]["key"]["fromMe"], fresh["data"]["status"], fresh["data"]["source"]) == (
        True,
        "SERVER_ACK",
        "android",
    )


async def test_post_webhook_returns_the_status(session: aiohttp.ClientSession, receiver: Receiver) -> None:
    envelope = text_upsert(INSTANCE, MARIA_JID, "hello")
    receiver.status = 202
    assert await post_webhook(session, receiver.url + "/in", envelope) == 202
    path, headers, body = await receiver.next()
    assert (path, body, headers["content-type"]) == ("/in", envelope, "application/json")


async def test_emit_and_connection_updates_reach_the_webhook(
    simulator: EvolutionSimulator, session: aiohttp.ClientSession, receiver: Receiver
) -> None:
    await set_webhook(
        session, simulator, {"enabled": True, "url": receiver.url, "events": ["MESSAGES_UPDATE", "CONNECTION_UPDATE"]}
    )
    receipt = {"keyId": "3EB0C1A2B3D4E5F6071829", "remoteJid": MARIA_JID, "fromMe": True, "status": "DELIVERY_ACK"}
    assert await simulator.emit(INSTANCE, "messages.update", receipt) == 200
    _, _, envelope = await receiver.next()
    assert (envelope["event"], envelope["data"]) == ("messages.update", receipt)
    assert await simulator.emit(INSTANCE, "send.message", {}) is None

    simulator.set_state(INSTANCE, "close")
    _, _, envelope = await receiver.next()
    assert envelope["data"] == {"instance": INSTANCE, "state": "close", "statusReason": 401}
