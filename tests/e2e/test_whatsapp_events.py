"""Every Evolution event through the real mesh (gateway webhook route → ingress → router → echo agent → channels →
Evolution simulator), on SQLite and PostgreSQL: every messages-upsert fixture reaches the agent with the payload
checked field by field (or never reaches it), receipts and edits land on the trace of their message, the other
events are acknowledged, and groups answer per `group_reply`, quoting the user."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import aiohttp
import orjson
import pytest

from tests.conftest import FIXTURES
from tests.e2e.conftest import World
from tests.helpers.mesh import eventually

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="module")]

OWN_JID = "5511987650000@s.whatsapp.net"
MARIA = "5521991234567@s.whatsapp.net"
MARIA_LID = "148203657712934@lid"
ANA_LID = "201547896321458@lid"
GROUP = "120363041857263915@g.us"
MARIA_PHONE = "+5521991234567"
CARLOS_PHONE = "+5531988776655"


def expect(
    message_type: str,
    message: str,
    *,
    chat: str = MARIA,
    session_name: str = MARIA_PHONE,
    phone: str | None = MARIA_PHONE,
    name: str = "Maria Souza",
    quoted: str | None = None,
    media: tuple[str, str] | None = None,
) -> dict[str, Any]:
    """What the agent must receive for one fixture (ids are checked against the posted envelope)."""
    return {
        "message_type": message_type,
        "message": message,
        "chat": chat,
        "session_name": session_name,
        "phone": phone,
        "name": name,
        "quoted": quoted,
        "media": media,
    }


def in_group(message_type: str, message: str, media: tuple[str, str] | None = None) -> dict[str, Any]:
    return expect(
        message_type,
        message,
        chat=GROUP,
        session_name=GROUP,
        phone=CARLOS_PHONE,
        name="Carlos Lima",
        media=media,
    )


AGENT_PAYLOADS: dict[str, dict[str, Any]] = {
    "messages-upsert-text.json": expect("text", "Oi! Vocês abrem amanhã?"),
    "messages-upsert-text-reply.json": expect("text", "Pode ser às 15h então", quoted="3EB0F4D2A91C6B7E830A15"),
    "messages-upsert-image.json": expect("image", "Segue a foto do comprovante", media=("image", "image/jpeg")),
    "messages-upsert-image-base64.json": expect("image", "boleto", media=("image", "image/jpeg")),
    "messages-upsert-image-v2.2-encoding.json": expect("image", "Comprovante do PIX", media=("image", "image/jpeg")),
    "messages-upsert-audio-ptt.json": expect("audio", "", media=("audio", "audio/ogg; codecs=opus")),
    "messages-upsert-video.json": expect("video", "Olha o defeito no produto", media=("video", "video/mp4")),
    "messages-upsert-document.json": expect("document", "contrato assinado", media=("document", "application/pdf")),
    "messages-upsert-sticker.json": expect("sticker", "", media=("sticker", "image/webp")),
    "messages-upsert-location.json": expect(
        "location", "Av. Paulista, 1578, Bela Vista, São Paulo - SP (-23.5613991, -46.6565712)"
    ),
    "messages-upsert-contact.json": expect("contact", "João Pereira"),
    "messages-upsert-reaction.json": expect("reaction", "👍"),
    "messages-upsert-group-text.json": in_group("text", "Bom dia, pessoal! Alguém confirma a entrega de hoje?"),
    "messages-upsert-group-image.json": in_group("image", "Chegou a entrega de hoje", media=("image", "image/jpeg")),
    "messages-upsert-lid-v2.3.6.json": expect("text", "Boa tarde, queria remarcar", chat=MARIA_LID),
    "messages-upsert-lid-v2.3.7.json": expect("text", "Boa tarde, queria remarcar"),
    "messages-upsert-lid-v2.4.0-rc.json": expect("text", "Boa tarde, queria remarcar"),
    "messages-upsert-lid-no-alt.json": expect(
        "text", "Olá, vi o anúncio de vocês", chat=ANA_LID, session_name=ANA_LID, phone=None, name="Ana P."
    ),
    "messages-upsert-ephemeral.json": expect("text", "Essa conversa tem mensagens temporárias"),
    "messages-upsert-viewonce.json": expect("image", "só pode ver uma vez", media=("image", "image/jpeg")),
    "messages-upsert-v1.8.json": expect(
        "text", "Vocês entregam em Niterói? https://acme.example.com/frete", quoted="3EB0C1A2B3D4E5F6071829"
    ),
}
NEVER_REACH_THE_AGENT = {"messages-upsert-fromme.json": "from_me", "messages-upsert-placeholder.json": "no_content"}
OTHER_EVENTS = [
    "call.json",
    "chats-update.json",
    "chats-upsert.json",
    "contacts-update.json",
    "contacts-upsert.json",
    "group-participants-update.json",
    "groups-upsert.json",
    "instance-create.json",
    "logout-instance.json",
    "presence-update.json",
    "send-message-update.json",
    "messages-update-delivery.json",
    "messages-update-read.json",
    "messages-delete.json",
    "messages-edited.json",
    "messages-edited-revoke.json",
]

UPSERT_FIXTURES = sorted(p.name for p in FIXTURES.glob("messages-upsert-*.json"))

_instances: dict[str, str] = {}
"""One instance (group_reply "all") per world for the fixture sweep: creating one per fixture costs more than the
posts themselves."""


def fixture(name: str) -> dict[str, Any]:
    envelope = orjson.loads((FIXTURES / name).read_bytes())
    assert isinstance(envelope, dict)
    return envelope


def as_new_message(envelope: dict[str, Any], instance: str) -> dict[str, Any]:
    """The envelope for `instance` with a fresh key id (several fixtures share one, and a key id is unique)."""
    envelope["instance"] = instance
    envelope["data"]["key"]["id"] = f"3A{uuid.uuid4().hex[:18].upper()}"
    return envelope


async def post(world: World, instance: str, envelope: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    async with aiohttp.ClientSession() as session, session.post(world.mesh.webhook_url(instance), json=envelope) as r:
        return r.status, await r.json()


async def sweep_instance(world: World) -> str:
    if world.database not in _instances:
        _instances[world.database] = await world.new_instance(group_reply="all")
    return _instances[world.database]


def agent_call(world: World, instance: str, message_id: str) -> dict[str, Any] | None:
    return next(
        (
            c
            for c in world.agent.calls
            if c["context"]["instance"] == instance and c["context"]["message_id"] == message_id
        ),
        None,
    )


async def trace_with(
    world: World, trace_id: str, *span_words: str, count: int = 1, status: str | None = None
) -> dict[str, Any]:
    """The trace once each word names at least `count` spans, and it has `status` if one is given (services export
    spans on their own schedules)."""

    async def probe() -> dict[str, Any] | None:
        code, body = await world.mesh.get_json(f"/api/v1/traces/{trace_id}")
        if code != 200 or (status is not None and body["status"] != status):
            return None
        names = [span["name"] for span in body["spans"]]
        return body if all(sum(word in name for name in names) >= count for word in span_words) else None

    return await eventually(probe, timeout=15)


async def test_every_upsert_fixture_is_covered() -> None:
    assert set(UPSERT_FIXTURES) == set(AGENT_PAYLOADS) | set(NEVER_REACH_THE_AGENT)


@pytest.mark.parametrize("name", sorted(AGENT_PAYLOADS))
async def test_fixture_reaches_the_agent_field_by_field(world: World, name: str) -> None:
    instance = await sweep_instance(world)
    want = AGENT_PAYLOADS[name]
    envelope = as_new_message(fixture(name), instance)
    message_id = envelope["data"]["key"]["id"]
    status, answer = await post(world, instance, envelope)
    assert (status, answer["status"]) == (200, "accepted"), answer

    call = await eventually(lambda: asyncio.sleep(0, agent_call(world, instance, message_id)), timeout=15)
    assert isinstance(call["user_id"], str)
    assert call["user_id"]
    assert isinstance(call["session_id"], str)
    assert call["session_id"]
    assert call["session_name"] == want["session_name"]
    assert call["message"] == want["message"]
    assert call["message_type"] == want["message_type"]
    assert call["session_origin"] == "whatsapp"
    assert call["agent"] == "echo"
    assert call["user"]["phone_number"] == want["phone"]
    assert call["user"]["user_data"]["name"] == want["name"]
    media = [(m["type"], m["mime_type"]) for m in call["media"]]
    assert media == ([want["media"]] if want["media"] else [])
    context = call["context"]
    assert context["channel"] == "whatsapp"
    assert context["instance"] == instance
    assert context["chat_id"] == want["chat"]
    assert context["message_id"] == message_id
    assert context["is_group"] is (want["chat"] == GROUP)
    if want["quoted"] is None:
        assert context["quoted_message"] is None
    else:
        assert context["quoted_message"]["message_id"] == want["quoted"]
        assert context["quoted_message"]["text"]


async def test_a_lid_only_contact_is_answered_at_the_lid(world: World) -> None:
    instance = await world.new_instance()
    envelope = as_new_message(fixture("messages-upsert-lid-no-alt.json"), instance)
    status, _ = await post(world, instance, envelope)
    assert status == 200

    async def reply() -> list[str] | None:
        sent = [m.remote_jid for m in world.evolution.sent if m.instance == instance]
        return sent or None

    assert await eventually(reply, timeout=15) == [ANA_LID]


@pytest.mark.parametrize(("name", "reason"), sorted(NEVER_REACH_THE_AGENT.items()))
async def test_echoes_and_placeholders_never_reach_the_agent(world: World, name: str, reason: str) -> None:
    instance = await sweep_instance(world)
    envelope = as_new_message(fixture(name), instance)
    status, answer = await post(world, instance, envelope)
    assert (status, answer["status"], answer.get("reason")) == (200, "ignored", reason)
    await asyncio.sleep(0.5)
    assert agent_call(world, instance, envelope["data"]["key"]["id"]) is None


@pytest.mark.parametrize("name", OTHER_EVENTS)
async def test_other_events_are_acknowledged(world: World, name: str) -> None:
    instance = await sweep_instance(world)
    envelope = fixture(name)
    envelope["instance"] = instance
    status, answer = await post(world, instance, envelope)
    assert status == 200, answer
    assert answer["status"] == "ignored"
    assert answer["reason"]


async def test_receipts_show_on_the_trace_of_the_reply(world: World) -> None:
    instance = await world.new_instance()
    envelope = as_new_message(fixture("messages-upsert-text.json"), instance)
    status, answer = await post(world, instance, envelope)
    assert status == 200
    trace_id = answer["trace_id"]

    async def sent_reply() -> str | None:
        return next((m.key_id for m in world.evolution.sent if m.instance == instance), None)

    key_id = await eventually(sent_reply, timeout=15)
    # The send span (which names key_id) may still be on its way to tracing: the receipts must wait for it.
    assert await world.evolution.deliver_receipts(key_id, ("DELIVERY_ACK", "READ")) == [200, 200]
    # Evolution posts events twice when both webhooks are on: a repeat is kept once.
    assert await world.evolution.deliver_receipts(key_id, ("READ",)) == [200]

    # The router's span, which says "sent", is exported on the router's own schedule: it may come after the
    # channels span that linked the reply's id, and so after the receipts.
    trace = await trace_with(world, trace_id, "receipt", count=2, status="sent")
    receipts = [span for span in trace["spans"] if "receipt" in span["name"]]
    assert sorted(span["attributes"]["omni.receipt.status"] for span in receipts) == ["delivered", "read"]
    assert all(span["attributes"]["omni.refers_to.channel_message_id"] == key_id for span in receipts)
    assert all(span["start_time"] for span in receipts)
    assert trace["delivery_status"] == "read"
    assert trace["status"] == "sent"
    await asyncio.sleep(0.5)
    again = await trace_with(world, trace_id, "receipt", count=2)
    assert sum("receipt" in span["name"] for span in again["spans"]) == 2


async def test_an_edit_shows_on_the_trace_of_the_edited_message(world: World) -> None:
    instance = await world.new_instance()
    envelope = as_new_message(fixture("messages-upsert-text.json"), instance)
    _, answer = await post(world, instance, envelope)
    edit = fixture("messages-edited.json")
    edit["instance"] = instance
    edit["data"]["key"]["id"] = envelope["data"]["key"]["id"]
    status, edited = await post(world, instance, edit)
    assert (status, edited["status"], edited["reason"]) == (200, "ignored", "message_edited")
    trace = await trace_with(world, answer["trace_id"], "message_edited")
    (span,) = [s for s in trace["spans"] if "message_edited" in s["name"]]
    assert "Segue a foto do comprovante (corrigido)" in span["attributes"]["omni.message_event.text"]


async def test_groups_answer_mentions_and_replies_to_the_bot_quoting_the_user(world: World) -> None:
    instance = await world.new_instance()  # group_reply defaults to "mention"

    plain = as_new_message(fixture("messages-upsert-group-text.json"), instance)
    status, answer = await post(world, instance, plain)
    assert (status, answer["status"], answer["reason"]) == (200, "ignored", "not_addressed")
    trace = await trace_with(world, answer["trace_id"], "accept")
    assert trace["status"] == "ignored"

    mention = as_new_message(fixture("messages-upsert-group-text.json"), instance)
    mention["data"]["message"]["conversation"] = "@5511987650000 vocês entregam hoje?"
    mention["data"]["contextInfo"] = {"mentionedJid": [OWN_JID]}
    reply_to_bot = as_new_message(fixture("messages-upsert-group-text.json"), instance)
    reply_to_bot["data"]["contextInfo"] = {
        "stanzaId": "3EB0BOTMESSAGE0001",
        "participant": OWN_JID,
        "quotedMessage": {"conversation": "Olá! Como podemos ajudar?"},
    }
    for envelope in (mention, reply_to_bot):
        status, answer = await post(world, instance, envelope)
        assert (status, answer["status"]) == (200, "accepted")

    async def group_replies() -> list[Any] | None:
        sent = [m for m in world.evolution.sent if m.instance == instance and m.remote_jid == GROUP]
        return sent if len(sent) == 2 else None

    sent = await eventually(group_replies, timeout=15)
    quoted = sorted(m.body["quoted"]["key"]["id"] for m in sent)
    assert quoted == sorted([mention["data"]["key"]["id"], reply_to_bot["data"]["key"]["id"]])
    texts = {m.text for m in sent}
    assert "Echo: @5511987650000 vocês entregam hoje?" in texts  # nothing stripped
    assert agent_call(world, instance, plain["data"]["key"]["id"]) is None


async def test_group_reply_never(world: World) -> None:
    instance = await world.new_instance(group_reply="never")
    mention = as_new_message(fixture("messages-upsert-group-text.json"), instance)
    mention["data"]["contextInfo"] = {"mentionedJid": [OWN_JID]}
    status, answer = await post(world, instance, mention)
    assert (status, answer["status"], answer["reason"]) == (200, "ignored", "group_replies_off")
    direct = as_new_message(fixture("messages-upsert-text.json"), instance)
    status, answer = await post(world, instance, direct)
    assert (status, answer["status"]) == (200, "accepted")


async def test_automatic_receipts_are_off_by_default_and_opt_in(world: World) -> None:
    assert world.evolution.auto_receipts == ()
    instance = await world.new_instance()
    world.evolution.auto_receipts = ("SERVER_ACK", "DELIVERY_ACK", "READ", "PLAYED")
    try:
        envelope = as_new_message(fixture("messages-upsert-text.json"), instance)
        _, answer = await post(world, instance, envelope)
        trace = await trace_with(world, answer["trace_id"], "receipt", count=4)
    finally:
        world.evolution.auto_receipts = ()
    assert trace["delivery_status"] == "played"
    updates = [d for d in world.evolution.deliveries if d["instance"] == instance and d["event"] == "messages.update"]
    assert [d["status"] for d in updates] == [200, 200, 200, 200]
