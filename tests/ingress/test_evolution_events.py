"""Every Evolution event does something useful and never fails: the payload variants of the contract (§2.1, §2.2,
§2.3, §5), receipts/edits/deletions as one span each (no inbox row), the other events ignored with a reason, and
`group_reply` in groups."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import orjson
import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from servicekit import trace_attributes as attrs
from servicekit.channels import Channel
from servicekit.instances import Instance
from services.ingress.core.accept import IGNORED_DISPOSITION, IngressCore
from services.ingress.core.evolution_events import (
    REASON_HISTORY_SYNC,
    REASON_MALFORMED,
    REASON_MESSAGE_CHANGED,
    REASON_NOT_A_MESSAGE,
    REASON_OWN_EDIT,
    REASON_UNKNOWN_EVENT,
)
from services.ingress.core.evolution_parser import KNOWN_EVENTS, parse_envelope
from services.ingress.core.group_addressing import REASON_GROUP_REPLIES_OFF, OwnLids, addresses_bot
from services.ingress.core.message_events import MessageEvent, MessageEventsReceived
from services.ingress.core.receivers.base import NOT_ADDRESSED
from services.ingress.core.receivers.whatsapp import EvolutionReceiver
from services.ingress.storage import InboxStore
from tests.helpers.instances import DictDirectory
from tests.ingress.support import OWN_JID, body, upsert

MARIA = "5521991234567@s.whatsapp.net"
MARIA_LID = "148203657712934@lid"
ANA_LID = "201547896321458@lid"
CARLOS = "5531988776655@s.whatsapp.net"
CARLOS_LID = "97315264018832@lid"
GROUP = "120363041857263915@g.us"
OWN_LID = "77788899900011@lid"


def load(directory: Path, name: str) -> dict[str, Any]:
    envelope = orjson.loads((directory / name).read_bytes())
    assert isinstance(envelope, dict)
    return envelope


# --- payload variants (fixtures written from the contract's text) ---------------------------------------------

VARIANTS: dict[str, dict[str, Any]] = {
    "messages-upsert-lid-v2.4.0-rc.json": {
        "type": "text",
        "text": "Boa tarde, queria remarcar",
        "chat": MARIA,
        "sender": MARIA,
        "alt": MARIA_LID,
        "phone": "+5521991234567",
    },
    "messages-upsert-lid-no-alt.json": {
        "type": "text",
        "text": "Olá, vi o anúncio de vocês",
        "chat": ANA_LID,
        "sender": ANA_LID,
        "alt": "",
        "phone": "",
        "name": "Ana P.",
    },
    "messages-upsert-ephemeral.json": {"type": "text", "text": "Essa conversa tem mensagens temporárias"},
    "messages-upsert-viewonce.json": {
        "type": "image",
        "text": "só pode ver uma vez",
        "media": ("image", "image/jpeg", 96231, "só pode ver uma vez"),
    },
    "messages-upsert-image-v2.2-encoding.json": {
        "type": "image",
        "text": "Comprovante do PIX",
        "alt": "",
        "media": ("image", "image/jpeg", 184213, "Comprovante do PIX"),
    },
    "messages-upsert-v1.8.json": {
        "type": "text",
        "text": "Vocês entregam em Niterói? https://acme.example.com/frete",
        "alt": "",
        "quoted": ("3EB0C1A2B3D4E5F6071829", OWN_JID, "Olá! Como podemos ajudar?"),
    },
    "messages-upsert-group-image.json": {
        "type": "image",
        "text": "Chegou a entrega de hoje",
        "chat": GROUP,
        "sender": CARLOS,
        "alt": CARLOS_LID,
        "phone": "+5531988776655",
        "name": "Carlos Lima",
        "group": True,
        "media": ("image", "image/jpeg", 211874, "Chegou a entrega de hoje"),
    },
    "messages-upsert-video.json": {
        "type": "video",
        "text": "Olha o defeito no produto",
        "media": ("video", "video/mp4", 2874512, "Olha o defeito no produto"),
    },
}


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_payload_variant(evolution_fixtures: Path, name: str) -> None:
    expect = {
        "chat": MARIA,
        "sender": MARIA,
        "alt": MARIA_LID,
        "phone": "+5521991234567",
        "name": "Maria Souza",
        "group": False,
        "quoted": None,
        "media": None,
        **VARIANTS[name],
    }
    envelope = load(evolution_fixtures, name)
    parsed = parse_envelope(envelope)
    assert (parsed.kind, parsed.reason) == ("message", "")
    message = parsed.message
    assert message is not None
    assert message.channel_message_id == envelope["data"]["key"]["id"]
    assert (message.message_type, message.text) == (expect["type"], expect["text"])
    assert (message.chat_id, message.is_group) == (expect["chat"], expect["group"])
    assert (message.sender.id, message.sender.alt_id, message.sender.phone_number, message.sender.display_name) == (
        expect["sender"],
        expect["alt"],
        expect["phone"],
        expect["name"],
    )
    assert message.sent_at == 1764945130.0
    if expect["quoted"] is None:
        assert message.quoted is None
    else:
        assert message.quoted is not None
        assert (message.quoted.channel_message_id, message.quoted.sender_id, message.quoted.text) == expect["quoted"]
    if expect["media"] is None:
        assert message.media == ()
    else:
        (media,) = message.media
        assert (media.type, media.mime_type, media.size_bytes, media.caption) == expect["media"]
        assert media.url.startswith("https://mmg.whatsapp.net/")
        assert media.base64 == ""  # wrapped and older-encoding media carry no inline file


def test_v18_has_no_apikey_and_keeps_extended_text(evolution_fixtures: Path) -> None:
    envelope = load(evolution_fixtures, "messages-upsert-v1.8.json")
    assert "apikey" not in envelope
    assert "extendedTextMessage" in envelope["data"]["message"]
    assert envelope["data"]["owner"] == "acme-support"


def test_older_encoding_is_left_opaque(evolution_fixtures: Path) -> None:
    """≤2.3.2 sends bytes as base64 strings and int64 as decimal strings: the numbers are read, the bytes ignored."""
    envelope = load(evolution_fixtures, "messages-upsert-image-v2.2-encoding.json")
    image = envelope["data"]["message"]["imageMessage"]
    assert isinstance(image["mediaKey"], str)
    assert image["fileLength"] == "184213"
    assert envelope["data"]["message"]["messageContextInfo"]["deviceListMetadata"]["senderAccountType"] == "E2EE"
    message = parse_envelope(envelope).message
    assert message is not None
    assert message.media[0].size_bytes == 184213


@pytest.mark.parametrize("participant", ["", None, "absent"])
def test_one_to_one_participant_forms(participant: str | None) -> None:
    envelope = upsert("P1", key_extra={"remoteJidAlt": MARIA_LID, "addressingMode": "pn"})
    if participant == "absent":
        del envelope["data"]["key"]["participant"]
    else:
        envelope["data"]["key"]["participant"] = participant
    message = parse_envelope(envelope).message
    assert message is not None
    assert (message.chat_id, message.sender.id, message.sender.alt_id, message.is_group) == (
        MARIA,
        MARIA,
        MARIA_LID,
        False,
    )


# --- receipts, edits, deletions ------------------------------------------------------------------------------


def only_event(received: object) -> MessageEvent:
    assert isinstance(received, MessageEventsReceived)
    (event,) = received.events
    return event


def test_delivery_receipt_with_a_lid(evolution_fixtures: Path) -> None:
    parsed = parse_envelope(load(evolution_fixtures, "messages-update-delivery.json"))
    assert (parsed.event, parsed.kind, parsed.reason, parsed.message) == ("messages.update", "ignored", "receipt", None)
    event = only_event(parsed)
    assert (event.kind, event.channel_message_id, event.chat_id, event.status, event.from_me) == (
        "receipt",
        "3EB0C1A2B3D4E5F6071829",  # keyId, not Evolution's row id (messageId)
        MARIA_LID,
        "delivered",
        True,
    )
    assert event.key == "receipt:3EB0C1A2B3D4E5F6071829:delivered"


def test_read_receipt(evolution_fixtures: Path) -> None:
    event = only_event(parse_envelope(load(evolution_fixtures, "messages-update-read.json")))
    assert (event.status, event.chat_id) == ("read", MARIA)


def receipt(**data: Any) -> dict[str, Any]:
    return {"event": "messages.update", "instance": "acme-support", "data": data, "sender": OWN_JID}


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        ("SERVER_ACK", "sent"),
        ("DELIVERY_ACK", "delivered"),
        ("READ", "read"),
        ("PLAYED", "played"),
        ("ERROR", "failed"),
        ("read", "read"),
        (3, "delivered"),
        (4, "read"),
    ],
)
def test_receipt_statuses(status: object, expected: str) -> None:
    event = only_event(parse_envelope(receipt(keyId="K1", remoteJid=MARIA, fromMe=True, status=status)))
    assert event.status == expected


def test_v18_receipt_spreads_the_key() -> None:
    envelope = receipt(id="K18", remoteJid=MARIA, fromMe=True, status="DELIVERY_ACK", datetime=1764945130482)
    event = only_event(parse_envelope(envelope))
    assert (event.channel_message_id, event.status) == ("K18", "delivered")


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        ({"keyId": "K1", "remoteJid": MARIA, "fromMe": True, "status": "DELETED"}, REASON_MESSAGE_CHANGED),
        (
            {"keyId": "K1", "status": "READ", "pollUpdates": [{"name": "Sim", "voters": [MARIA]}]},
            REASON_MESSAGE_CHANGED,
        ),
        ({"keyId": "K1", "status": None}, REASON_MESSAGE_CHANGED),
        ({"remoteJid": MARIA, "status": "READ"}, REASON_MALFORMED),
    ],
)
def test_updates_that_are_not_receipts(data: dict[str, Any], reason: str) -> None:
    parsed = parse_envelope(receipt(**data))
    assert (parsed.kind, parsed.reason) == ("ignored", reason)
    assert not isinstance(parsed, MessageEventsReceived)


def test_a_list_of_receipts_gives_one_event_each() -> None:
    envelope = receipt()
    envelope["data"] = [
        {"keyId": "K1", "remoteJid": MARIA, "fromMe": True, "status": "READ"},
        {"keyId": "K2", "remoteJid": MARIA, "fromMe": True, "status": "READ"},
        "garbage",
    ]
    parsed = parse_envelope(envelope)
    assert isinstance(parsed, MessageEventsReceived)
    assert [e.channel_message_id for e in parsed.events] == ["K1", "K2"]


def test_edit(evolution_fixtures: Path) -> None:
    parsed = parse_envelope(load(evolution_fixtures, "messages-edited.json"))
    event = only_event(parsed)
    assert (parsed.event, parsed.reason) == ("messages.edited", "message_edited")
    assert (event.kind, event.channel_message_id, event.text) == (
        "message_edited",
        "A3F1C0D9E8B7A6954321FEDCBA0987AA",
        "Segue a foto do comprovante (corrigido)",
    )
    assert event.key == "message_edited:A3F1C0D9E8B7A6954321FEDCBA0987AA:1764945190482"


def test_both_reports_of_one_deletion_are_the_same_event(evolution_fixtures: Path) -> None:
    revoke = only_event(parse_envelope(load(evolution_fixtures, "messages-edited-revoke.json")))
    delete = only_event(parse_envelope(load(evolution_fixtures, "messages-delete.json")))
    assert revoke.kind == delete.kind == "message_deleted"
    assert revoke.key == delete.key == "message_deleted:A3F1C0D9E8B7A6954321FEDCBA0987AA"


@pytest.mark.parametrize(
    ("data", "kind"),
    [
        (
            {"key": {"id": "E1"}, "type": 14, "editedMessage": {"extendedTextMessage": {"text": "novo"}}},
            "message_edited",
        ),
        ({"key": {"id": "E1"}, "editedMessage": {"conversation": "novo"}}, "message_edited"),
        ({"key": {"id": "E1"}, "type": 0}, "message_deleted"),
    ],
)
def test_edit_variants(data: dict[str, Any], kind: str) -> None:
    event = only_event(parse_envelope({"event": "messages.edited", "data": data}))
    assert event.kind == kind
    if kind == "message_edited":
        assert event.text == "novo"


def test_protocol_messages_that_are_neither_edit_nor_revoke() -> None:
    parsed = parse_envelope({"event": "MESSAGES_EDITED", "data": {"key": {"id": "E1"}, "type": "EPHEMERAL_SETTING"}})
    assert (parsed.kind, parsed.reason) == ("ignored", REASON_NOT_A_MESSAGE)


# --- the other events ----------------------------------------------------------------------------------------


OTHER_EVENT_FIXTURES = [
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
]


@pytest.mark.parametrize("name", OTHER_EVENT_FIXTURES)
def test_other_events_are_ignored_as_not_messages(evolution_fixtures: Path, name: str) -> None:
    parsed = parse_envelope(load(evolution_fixtures, name))
    assert (parsed.kind, parsed.reason, parsed.message) == ("ignored", REASON_NOT_A_MESSAGE, None)


def test_contacts_as_object_or_array(evolution_fixtures: Path) -> None:
    as_array = load(evolution_fixtures, "contacts-upsert.json")
    as_object = load(evolution_fixtures, "contacts-update.json")
    assert isinstance(as_array["data"], list)
    assert isinstance(as_object["data"], dict)
    swapped = [{**as_array, "data": as_array["data"][0]}, {**as_object, "data": [as_object["data"]]}]
    for envelope in (as_array, as_object, *swapped):
        assert parse_envelope(envelope).reason == REASON_NOT_A_MESSAGE


def test_own_edit_and_history_sync_have_their_reasons(evolution_fixtures: Path) -> None:
    assert parse_envelope(load(evolution_fixtures, "send-message-update.json")).reason == REASON_OWN_EDIT
    history = {"isLatest": True, "progress": 100, "event": "messages.set", "data": [upsert("H1")["data"]]}
    assert parse_envelope(history).reason == REASON_HISTORY_SYNC


def test_unknown_event() -> None:
    parsed = parse_envelope({"event": "something.brand.new", "data": {"x": 1}})
    assert (parsed.event, parsed.kind, parsed.reason) == ("something.brand.new", "ignored", REASON_UNKNOWN_EVENT)


@pytest.mark.parametrize("event", KNOWN_EVENTS)
@pytest.mark.parametrize("data", [None, [], "text", 7, {}, [None], {"key": None, "keyId": 5}])
def test_no_event_and_no_data_shape_raises(event: str, data: object) -> None:
    parsed = parse_envelope({"event": event, "data": data, "sender": OWN_JID})
    assert parsed.event == event
    assert parsed.kind in ("message", "own_send", "ignored")


# --- the accept path: one span per event, no inbox row -------------------------------------------------------

ACME = Instance(name="acme", webhook_auth="none")


async def test_receipt_webhook_is_one_span_and_no_row(
    store: InboxStore, spans: tuple[TracerProvider, InMemorySpanExporter], evolution_fixtures: Path
) -> None:
    provider, exporter = spans
    core = IngressCore(store, DictDirectory(ACME), tracer=provider.get_tracer("test"))
    payload = (evolution_fixtures / "messages-update-delivery.json").read_bytes()
    result = await core.receive_webhook("acme", Channel.WHATSAPP, payload, {})
    assert (result.disposition, result.reason, result.message_id, result.event) == (
        IGNORED_DISPOSITION,
        "receipt",
        "",
        "messages.update",
    )
    assert await store.count_by_state() == {}
    (span,) = exporter.get_finished_spans()
    assert span.name == "whatsapp.receipt"
    assert span.attributes is not None
    assert dict(span.attributes) == {
        attrs.INSTANCE_NAME: "acme",
        attrs.SOURCE_CHANNEL: "whatsapp",
        attrs.REFERS_TO_CHANNEL_MESSAGE_ID: "3EB0C1A2B3D4E5F6071829",
        attrs.MESSAGE_EVENT_KEY: "receipt:3EB0C1A2B3D4E5F6071829:delivered",
        attrs.MESSAGE_EVENT_FROM_ME: True,
        attrs.RECEIPT_STATUS: "delivered",
        "omni.event": "messages.update",
        "omni.chat_id": MARIA_LID,
    }
    assert attrs.STATUS not in span.attributes  # not a message trace of its own


async def test_edit_span_carries_the_new_text_capped(
    store: InboxStore, spans: tuple[TracerProvider, InMemorySpanExporter], evolution_fixtures: Path
) -> None:
    provider, exporter = spans
    core = IngressCore(store, DictDirectory(ACME), tracer=provider.get_tracer("test"))
    envelope = load(evolution_fixtures, "messages-edited.json")
    envelope["data"]["editedMessage"]["conversation"] = "x" * 50_000
    await core.receive_webhook("acme", Channel.WHATSAPP, orjson.dumps(envelope), {})
    (span,) = exporter.get_finished_spans()
    assert span.name == "whatsapp.message_edited"
    assert span.attributes is not None
    text = span.attributes[attrs.MESSAGE_EVENT_TEXT]
    assert isinstance(text, str)
    assert text.startswith('{"text":"xxxx')
    assert len(text) < 2_000


# --- groups: group_reply -------------------------------------------------------------------------------------


def group_upsert(key_id: str, *, context: dict[str, Any] | None = None, **kwargs: Any) -> dict[str, Any]:
    envelope = upsert(key_id, chat=GROUP, key_extra={"participant": CARLOS_LID, "participantAlt": CARLOS}, **kwargs)
    if context is not None:
        envelope["data"]["contextInfo"] = context
    return envelope


def parse_for(instance: Instance, envelope: dict[str, Any], receiver: EvolutionReceiver | None = None) -> Any:
    received, _ = (receiver or EvolutionReceiver()).parse(body(envelope), instance)
    return received


MENTION = Instance(name="grp", webhook_auth="none")
ALL = Instance(name="grp-all", webhook_auth="none", group_reply="all")
NEVER = Instance(name="grp-never", webhook_auth="none", group_reply="never")


def test_default_is_mention() -> None:
    assert MENTION.group_reply == "mention"


def test_group_message_without_mention_is_recorded_but_not_for_the_agent() -> None:
    received = parse_for(MENTION, group_upsert("G1", text="bom dia pessoal"))
    assert (received.kind, received.reason) == ("ignored", NOT_ADDRESSED)
    assert received.message is not None
    assert received.message.text == "bom dia pessoal"
    assert received.is_message_event  # traced as an ignored message, like an echo


@pytest.mark.parametrize(
    "mentioned",
    [
        [OWN_JID],
        ["5511987650000:7@s.whatsapp.net"],
        ["5511987650000@c.us"],
        [CARLOS, OWN_JID],
    ],
)
def test_a_mention_of_the_bot_reaches_the_agent_text_untouched(mentioned: list[str]) -> None:
    envelope = group_upsert("G2", text="@5511987650000 qual o horário?", context={"mentionedJid": mentioned})
    received = parse_for(MENTION, envelope)
    assert received.kind == "message"
    assert received.message.text == "@5511987650000 qual o horário?"


def test_a_reply_to_the_bot_reaches_the_agent() -> None:
    context = {"stanzaId": "3EB0BOT", "participant": OWN_JID, "quotedMessage": {"conversation": "Olá!"}}
    assert parse_for(MENTION, group_upsert("G3", text="e amanhã?", context=context)).kind == "message"


def test_a_reply_to_someone_else_or_mention_of_someone_else_does_not() -> None:
    context = {"stanzaId": "3A0OTHER", "participant": CARLOS, "mentionedJid": [MARIA]}
    assert parse_for(MENTION, group_upsert("G4", text="ok", context=context)).reason == NOT_ADDRESSED


def test_mentions_inside_the_content_count_too() -> None:
    """v1.8 keeps extendedTextMessage with its contextInfo; media keep theirs; wrappers are not unwrapped."""
    v18 = {"extendedTextMessage": {"text": "@bot oi", "contextInfo": {"mentionedJid": [OWN_JID]}}}
    image = {
        "imageMessage": {"caption": "@bot veja", "mimetype": "image/jpeg", "contextInfo": {"mentionedJid": [OWN_JID]}}
    }
    wrapped = {"ephemeralMessage": {"message": copy.deepcopy(v18)}}
    for message in (v18, image, wrapped):
        assert parse_for(MENTION, group_upsert("G5", message=message)).kind == "message"


def test_a_lid_mention_is_recognised_once_the_own_lid_is_known() -> None:
    receiver = EvolutionReceiver()
    mention = group_upsert("G6", text="@bot oi", context={"mentionedJid": [OWN_LID]})
    assert parse_for(MENTION, mention, receiver).reason == NOT_ADDRESSED
    # The bot writes in the group from the phone: its key pairs the own LID with the own phone JID.
    own_post = upsert("G7", chat=GROUP, from_me=True, key_extra={"participant": OWN_LID, "participantAlt": OWN_JID})
    assert parse_for(MENTION, own_post, receiver).reason == "from_me"
    assert parse_for(
        MENTION, group_upsert("G8", text="@bot oi", context={"mentionedJid": [OWN_LID]}), receiver
    ).kind == ("message")


def test_own_lids_are_learned_only_from_own_messages() -> None:
    lids = OwnLids(capacity=2)
    someone = upsert("L1", chat=GROUP, key_extra={"participant": CARLOS_LID, "participantAlt": CARLOS})
    lids.learn("a", someone)
    assert lids.get("a") == ""
    for name in ("a", "b", "c"):
        lids.learn(
            name, upsert("L2", chat=GROUP, from_me=True, key_extra={"participant": OWN_LID, "participantAlt": OWN_JID})
        )
    assert (lids.get("a"), lids.get("c")) == ("", OWN_LID)  # bounded: the oldest is forgotten


def test_all_and_never() -> None:
    plain = group_upsert("G9", text="bom dia")
    mentioned = group_upsert("G10", text="@bot", context={"mentionedJid": [OWN_JID]})
    assert parse_for(ALL, plain).kind == "message"
    assert (parse_for(NEVER, mentioned).kind, parse_for(NEVER, mentioned).reason) == (
        "ignored",
        REASON_GROUP_REPLIES_OFF,
    )


@pytest.mark.parametrize("instance", [MENTION, NEVER])
def test_direct_messages_are_not_affected(instance: Instance) -> None:
    assert parse_for(instance, upsert("D1")).kind == "message"


def test_without_an_own_jid_nothing_is_a_mention() -> None:
    envelope = group_upsert("G11", context={"mentionedJid": [OWN_JID]})
    del envelope["sender"]
    assert not addresses_bot(envelope)


async def test_a_group_message_not_addressed_is_stored_as_ignored(
    store: InboxStore, spans: tuple[TracerProvider, InMemorySpanExporter]
) -> None:
    provider, exporter = spans
    core = IngressCore(store, DictDirectory(MENTION), tracer=provider.get_tracer("test"))
    result = await core.receive_webhook("grp", Channel.WHATSAPP, body(group_upsert("G12")), {})
    assert (result.disposition, result.reason) == (IGNORED_DISPOSITION, NOT_ADDRESSED)
    assert result.trace_id  # an ignored message trace, like an echo
    (span,) = exporter.get_finished_spans()
    assert span.attributes is not None
    assert (span.attributes[attrs.STATUS], span.attributes[attrs.ERROR_MESSAGE]) == ("ignored", NOT_ADDRESSED)
    assert await store.count_by_state() == {"ignored": 1}
    again = await core.receive_webhook("grp", Channel.WHATSAPP, body(group_upsert("G12")), {})
    assert again.disposition == "duplicate"
