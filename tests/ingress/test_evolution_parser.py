"""The Evolution parser against every shared fixture and hand-written variants of the contract (§2)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest

from services.ingress.core.evolution_parser import (
    REASON_BROADCAST,
    REASON_FROM_ME,
    REASON_MALFORMED,
    REASON_NEWSLETTER,
    REASON_NO_CONTENT,
    REASON_NO_EVENT,
    REASON_OWN_SEND,
    normalize_event,
    parse_envelope,
    to_int,
)
from tests.conftest import FIXTURES
from tests.ingress.support import OWN_JID, upsert, with_key
from tests.ingress.test_evolution_events import OTHER_EVENT_FIXTURES, VARIANTS

MARIA = "5521991234567@s.whatsapp.net"
MARIA_LID = "148203657712934@lid"
CARLOS = "5531988776655@s.whatsapp.net"
CARLOS_LID = "97315264018832@lid"
GROUP = "120363041857263915@g.us"
TS = 1764945130.0

WEBHOOK_FIXTURES = sorted(p.name for p in FIXTURES.glob("*.json"))


def load(directory: Path, name: str) -> dict[str, Any]:
    envelope = orjson.loads((directory / name).read_bytes())
    assert isinstance(envelope, dict)
    return envelope


@dataclass(frozen=True)
class Expect:
    """What one messages-upsert fixture must parse to."""

    type: str
    text: str
    chat: str = MARIA
    sender: str = MARIA
    alt: str = MARIA_LID
    phone: str = "+5521991234567"
    is_group: bool = False
    name: str = "Maria Souza"
    quoted: tuple[str, str, str] | None = None
    media: dict[str, Any] | None = None


EXPECTED: dict[str, Expect] = {
    "messages-upsert-text.json": Expect("text", "Oi! Vocês abrem amanhã?"),
    "messages-upsert-text-reply.json": Expect(
        "text",
        "Pode ser às 15h então",
        quoted=("3EB0F4D2A91C6B7E830A15", OWN_JID, "Temos horário amanhã às 10h ou às 15h."),
    ),
    "messages-upsert-group-text.json": Expect(
        "text",
        "Bom dia, pessoal! Alguém confirma a entrega de hoje?",
        chat=GROUP,
        sender=CARLOS_LID,
        alt=CARLOS,
        phone="+5531988776655",
        is_group=True,
        name="Carlos Lima",
    ),
    "messages-upsert-lid-v2.3.6.json": Expect(
        "text", "Boa tarde, queria remarcar", chat=MARIA_LID, sender=MARIA_LID, alt=MARIA
    ),
    "messages-upsert-lid-v2.3.7.json": Expect("text", "Boa tarde, queria remarcar", alt=""),
    "messages-upsert-image.json": Expect(
        "image",
        "Segue a foto do comprovante",
        media={"type": "image", "mime_type": "image/jpeg", "size_bytes": 184213, "base64": ""},
    ),
    "messages-upsert-image-base64.json": Expect(
        "image", "boleto", media={"type": "image", "mime_type": "image/jpeg", "size_bytes": 134}
    ),
    "messages-upsert-audio-ptt.json": Expect(
        "audio",
        "",
        media={"type": "audio", "mime_type": "audio/ogg; codecs=opus", "size_bytes": 14873, "duration_seconds": 9},
    ),
    "messages-upsert-document.json": Expect(
        "document",
        "contrato assinado",
        media={
            "type": "document",
            "mime_type": "application/pdf",
            "filename": "Contrato_2025.pdf",
            "size_bytes": 248133,
            "caption": "contrato assinado",
        },
    ),
    "messages-upsert-sticker.json": Expect(
        "sticker", "", media={"type": "sticker", "mime_type": "image/webp", "size_bytes": 21830}
    ),
    "messages-upsert-location.json": Expect(
        "location", "Av. Paulista, 1578, Bela Vista, São Paulo - SP (-23.5613991, -46.6565712)"
    ),
    "messages-upsert-contact.json": Expect("contact", "João Pereira"),
    "messages-upsert-reaction.json": Expect("reaction", "👍"),
}
IGNORED_UPSERTS = {"messages-upsert-fromme.json": REASON_FROM_ME, "messages-upsert-placeholder.json": REASON_NO_CONTENT}


def test_every_upsert_fixture_has_an_expectation() -> None:
    upserts = {n for n in WEBHOOK_FIXTURES if n.startswith("messages-upsert-")}
    assert upserts, "the shared fixtures are missing"
    assert upserts == set(EXPECTED) | set(IGNORED_UPSERTS) | set(VARIANTS)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_upsert_fixture(evolution_fixtures: Path, name: str) -> None:
    expect = EXPECTED[name]
    envelope = load(evolution_fixtures, name)
    parsed = parse_envelope(envelope)
    assert (parsed.event, parsed.kind, parsed.reason) == ("messages.upsert", "message", "")
    message = parsed.message
    assert message is not None
    assert message.channel_message_id == envelope["data"]["key"]["id"] == parsed.channel_message_id
    assert (message.message_type, message.text) == (expect.type, expect.text)
    assert (message.chat_id, message.is_group) == (expect.chat, expect.is_group)
    assert (message.sender.id, message.sender.alt_id, message.sender.phone_number) == (
        expect.sender,
        expect.alt,
        expect.phone,
    )
    assert message.sender.display_name == expect.name
    assert message.sent_at == TS
    assert message.raw_event == "messages.upsert"
    if expect.quoted is None:
        assert message.quoted is None
    else:
        assert message.quoted is not None
        assert (message.quoted.channel_message_id, message.quoted.sender_id, message.quoted.text) == expect.quoted
    if expect.media is None:
        assert message.media == ()
    else:
        (media,) = message.media
        for attr, value in expect.media.items():
            assert getattr(media, attr) == value, attr
        assert media.url.startswith("https://mmg.whatsapp.net/")


def test_base64_fixture_carries_the_file(evolution_fixtures: Path) -> None:
    envelope = load(evolution_fixtures, "messages-upsert-image-base64.json")
    parsed = parse_envelope(envelope)
    assert parsed.message is not None
    assert parsed.message.media[0].base64 == envelope["data"]["message"]["base64"]
    assert parsed.message.media[0].base64.startswith("/9j/")


@pytest.mark.parametrize(("name", "reason"), sorted(IGNORED_UPSERTS.items()))
def test_ignored_upsert_fixture(evolution_fixtures: Path, name: str, reason: str) -> None:
    parsed = parse_envelope(load(evolution_fixtures, name))
    assert (parsed.kind, parsed.reason) == ("ignored", reason)
    assert parsed.message is not None, "ignored messages are still recorded"
    assert parsed.channel_message_id
    assert parsed.is_message_event


def test_placeholder_sender_phone(evolution_fixtures: Path) -> None:
    parsed = parse_envelope(load(evolution_fixtures, "messages-upsert-placeholder.json"))
    assert parsed.message is not None
    assert parsed.message.sender.phone_number == "+551140028922"


def test_send_message_fixture_is_an_own_send(evolution_fixtures: Path) -> None:
    parsed = parse_envelope(load(evolution_fixtures, "send-message-text.json"))
    assert (parsed.event, parsed.kind, parsed.reason) == ("send.message", "own_send", REASON_OWN_SEND)
    assert parsed.channel_message_id == "3EB0C1A2B3D4E5F6071829"
    assert not parsed.is_message_event


def test_every_other_fixture_has_an_expectation() -> None:
    """Connection, QR and message-event fixtures have their own tests (connection events, message events)."""
    handled = ("messages-upsert-", "send-message-", "messages-update-", "messages-edited", "messages-delete")
    others = {n for n in WEBHOOK_FIXTURES if not n.startswith(handled) and not n.startswith(("connection-", "qrcode-"))}
    assert others == set(OTHER_EVENT_FIXTURES)


@pytest.mark.parametrize("name", WEBHOOK_FIXTURES)
def test_every_fixture_parses_under_every_event_spelling(evolution_fixtures: Path, name: str) -> None:
    envelope = load(evolution_fixtures, name)
    canonical = parse_envelope(envelope)
    for spelling in (
        envelope["event"].upper().replace(".", "_").replace("-", "_"),
        envelope["event"].replace(".", "-"),
    ):
        parsed = parse_envelope({**envelope, "event": spelling})
        assert parsed == canonical


# --- event names ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("messages.upsert", "messages.upsert"),
        ("MESSAGES_UPSERT", "messages.upsert"),
        ("messages-upsert", "messages.upsert"),
        ("Messages.Upsert", "messages.upsert"),
        ("SEND_MESSAGE", "send.message"),
        ("send-message-update", "send.message.update"),
        ("GROUP_PARTICIPANTS_UPDATE", "group-participants.update"),
        ("group-participants-update", "group-participants.update"),
        ("something_new", "something.new"),
        (None, ""),
        (7, ""),
    ],
)
def test_normalize_event(raw: object, expected: str) -> None:
    assert normalize_event(raw) == expected


# --- hand-written variants -----------------------------------------------------------------------------------


def test_v18_extended_text_with_quote() -> None:
    envelope = upsert(
        "V18",
        message={
            "extendedTextMessage": {
                "text": "sim, pode ser",
                "contextInfo": {
                    "stanzaId": "Q1",
                    "participant": OWN_JID,
                    "quotedMessage": {"extendedTextMessage": {"text": "Confirma amanhã?"}},
                },
            }
        },
        data_extra={"owner": "acme-support", "messageTimestamp": "1764945130", "status": None},
        envelope_extra={"apikey": "B6D711FCDE4D4FD5936544120E713976"},
    )
    del envelope["data"]["key"]["participant"]
    parsed = parse_envelope(envelope)
    assert parsed.kind == "message"
    message = parsed.message
    assert message is not None
    assert (message.message_type, message.text, message.sent_at) == ("text", "sim, pode ser", TS)
    assert message.quoted is not None
    assert (message.quoted.channel_message_id, message.quoted.text) == ("Q1", "Confirma amanhã?")
    assert message.sender.phone_number == "+5521991234567"


def test_v240rc_lid_swap() -> None:
    envelope = upsert("RC", key_extra={"remoteJidAlt": MARIA_LID, "addressingMode": "pn"})
    message = parse_envelope(envelope).message
    assert message is not None
    assert (message.chat_id, message.sender.id, message.sender.alt_id) == (MARIA, MARIA, MARIA_LID)
    assert message.sender.phone_number == "+5521991234567"


def test_lid_without_alt_replies_to_the_lid() -> None:
    message = parse_envelope(upsert("NOALT", chat="201547896321458@lid", key_extra={"addressingMode": "lid"})).message
    assert message is not None
    assert (message.chat_id, message.sender.id, message.sender.alt_id, message.sender.phone_number) == (
        "201547896321458@lid",
        "201547896321458@lid",
        "",
        "",
    )


@pytest.mark.parametrize("field", ["senderPn", "previousRemoteJid"])
def test_older_versions_alt_identity(field: str) -> None:
    other = MARIA_LID if field == "previousRemoteJid" else MARIA
    chat = MARIA if field == "previousRemoteJid" else MARIA_LID
    message = parse_envelope(upsert("OLD", chat=chat, key_extra={field: other})).message
    assert message is not None
    assert (message.sender.id, message.sender.alt_id, message.sender.phone_number) == (chat, other, "+5521991234567")


def test_alt_equal_to_own_jid_is_not_the_contact() -> None:
    message = parse_envelope(upsert("OWN", chat=MARIA_LID, key_extra={"remoteJidAlt": OWN_JID})).message
    assert message is not None
    assert (message.sender.alt_id, message.sender.phone_number) == ("", "")


def test_device_suffix_is_dropped_from_the_phone() -> None:
    message = parse_envelope(
        upsert("DEV", chat=GROUP, key_extra={"participant": "5531988776655:12@s.whatsapp.net"})
    ).message
    assert message is not None
    assert message.sender.phone_number == "+5531988776655"


@pytest.mark.parametrize("participant", ["", None, "absent"])
def test_group_with_odd_participant_never_crashes(participant: str | None) -> None:
    envelope = upsert("GRP", chat=GROUP, key_extra={"participantAlt": CARLOS})
    if participant == "absent":
        del envelope["data"]["key"]["participant"]
    else:
        envelope["data"]["key"]["participant"] = participant
    message = parse_envelope(envelope).message
    assert message is not None
    assert (message.sender.id, message.sender.phone_number, message.is_group) == (CARLOS, "+5531988776655", True)


def test_group_pn_addressed_with_sender_key_distribution() -> None:
    envelope = upsert(
        "GIMG",
        chat=GROUP,
        key_extra={"participant": CARLOS, "participantAlt": CARLOS_LID, "addressingMode": "pn"},
        message={
            "senderKeyDistributionMessage": {"groupId": GROUP, "axolotlSenderKeyDistributionMessage": {"0": 1}},
            "imageMessage": {"url": "https://mmg.whatsapp.net/x", "mimetype": "image/jpeg", "caption": "entrega"},
        },
    )
    message = parse_envelope(envelope).message
    assert message is not None
    assert (message.message_type, message.text, message.sender.id, message.sender.alt_id) == (
        "image",
        "entrega",
        CARLOS,
        CARLOS_LID,
    )


@pytest.mark.parametrize(
    ("ts", "expected"),
    [
        (1764945130, TS),
        ("1764945130", TS),
        ({"low": 1764945130, "high": 0, "unsigned": True}, TS),
        ({"low": -286428445, "high": 410}, float(410 * 2**32 + (-286428445 % 2**32))),
        (None, 0.0),
        ("garbage", 0.0),
    ],
)
def test_timestamps(ts: object, expected: float) -> None:
    message = parse_envelope(upsert("TS", ts=ts)).message
    assert message is not None
    assert message.sent_at == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [(5, 5), ("184213", 184213), ({"low": 184213, "high": 0, "unsigned": True}, 184213), (True, None), ([], None)],
)
def test_to_int(value: object, expected: int | None) -> None:
    assert to_int(value) == expected


@pytest.mark.parametrize(
    ("message", "kind", "text"),
    [
        ({"ephemeralMessage": {"message": {"extendedTextMessage": {"text": "sumindo"}}}}, "text", "sumindo"),
        (
            {"viewOnceMessageV2": {"message": {"imageMessage": {"caption": "uma vez", "mimetype": "image/jpeg"}}}},
            "image",
            "uma vez",
        ),
        ({"viewOnceMessage": {"message": {"videoMessage": {"caption": "vídeo"}}}}, "video", "vídeo"),
        ({"viewOnceMessageV2Extension": {"message": {"audioMessage": {"ptt": True, "seconds": 3}}}}, "audio", ""),
        (
            {"documentWithCaptionMessage": {"message": {"documentMessage": {"caption": "nota", "fileName": "n.pdf"}}}},
            "document",
            "nota",
        ),
        (
            {"editedMessage": {"message": {"protocolMessage": {"editedMessage": {"conversation": "corrigido"}}}}},
            "text",
            "corrigido",
        ),
        (
            {"ephemeralMessage": {"message": {"viewOnceMessageV2": {"message": {"conversation": "duplo"}}}}},
            "text",
            "duplo",
        ),
        ({"buttonsResponseMessage": {"selectedButtonId": "btn-1", "selectedDisplayText": "Sim"}}, "text", "Sim"),
        ({"buttonsResponseMessage": {"selectedButtonId": "btn-1"}}, "text", "btn-1"),
        (
            {"listResponseMessage": {"title": "Plano B", "singleSelectReply": {"selectedRowId": "r2"}}},
            "text",
            "Plano B",
        ),
        ({"listResponseMessage": {"singleSelectReply": {"selectedRowId": "r2"}}}, "text", "r2"),
        ({"templateButtonReplyMessage": {"selectedId": "t1", "selectedDisplayText": "Ok"}}, "text", "Ok"),
        ({"interactiveResponseMessage": {"body": {"text": "Escolhi"}}}, "text", "Escolhi"),
        (
            {"interactiveResponseMessage": {"nativeFlowResponseMessage": {"paramsJson": '{"id":"x"}'}}},
            "text",
            '{"id":"x"}',
        ),
        ({"pollUpdateMessage": {"vote": {"selectedOptions": ["Terça", "Quarta"]}}}, "text", "Terça, Quarta"),
        (
            {"ephemeralMessage": {"message": {"reactionMessage": {"text": "❤️", "key": {"id": "X"}}}}},
            "reaction",
            "❤️",
        ),
        ({"contactMessage": {"vcard": "BEGIN:VCARD\nFN:Ana\nEND:VCARD"}}, "contact", "BEGIN:VCARD\nFN:Ana\nEND:VCARD"),
        ({"contactsArrayMessage": {"displayName": "2 contatos", "contacts": []}}, "contact", "2 contatos"),
        ({"liveLocationMessage": {"degreesLatitude": 1.5, "degreesLongitude": -2.25}}, "location", "(1.5, -2.25)"),
        ({"ptvMessage": {"mimetype": "video/mp4", "seconds": 4}}, "video", ""),
    ],
)
def test_text_and_type_extraction(message: dict[str, Any], kind: str, text: str) -> None:
    parsed = parse_envelope(upsert("X", message=message))
    assert parsed.kind == "message"
    assert parsed.message is not None
    assert (parsed.message.message_type, parsed.message.text) == (kind, text)


def test_wrappers_deeper_than_five_levels_are_not_followed() -> None:
    message: dict[str, Any] = {"conversation": "deep"}
    for _ in range(6):
        message = {"ephemeralMessage": {"message": message}}
    assert parse_envelope(upsert("DEEP", message=message)).reason == REASON_NO_CONTENT
    for _ in range(1):
        message = message["ephemeralMessage"]["message"]
    assert parse_envelope(upsert("DEEP", message=message)).message.text == "deep"  # type: ignore[union-attr]


def test_media_prefers_s3_url_and_reads_string_lengths() -> None:
    parsed = parse_envelope(
        upsert(
            "S3",
            message={
                "videoMessage": {"url": "https://mmg.whatsapp.net/enc", "fileLength": "1048576", "seconds": 12},
                "mediaUrl": "https://s3.example.com/video.mp4",
            },
        )
    )
    assert parsed.message is not None
    (media,) = parsed.message.media
    assert (media.url, media.size_bytes, media.duration_seconds) == ("https://s3.example.com/video.mp4", 1048576, 12)


def test_audio_transcription_becomes_the_text() -> None:
    parsed = parse_envelope(upsert("STT", message={"audioMessage": {"ptt": True}, "speechToText": "oi tudo bem"}))
    assert parsed.message is not None
    assert (parsed.message.message_type, parsed.message.text) == ("audio", "oi tudo bem")


@pytest.mark.parametrize(
    ("message", "reason"),
    [
        ({}, REASON_NO_CONTENT),
        ({"messageContextInfo": {"deviceListMetadataVersion": 2}}, REASON_NO_CONTENT),
        ({"placeholderMessage": {"type": 0}}, REASON_NO_CONTENT),
        ({"protocolMessage": {"type": 0}}, REASON_NO_CONTENT),
        ({"conversation": ""}, REASON_NO_CONTENT),
    ],
)
def test_messages_without_content_are_ignored(message: dict[str, Any], reason: str) -> None:
    parsed = parse_envelope(upsert("EMPTY", message=message))
    assert (parsed.kind, parsed.reason, parsed.channel_message_id) == ("ignored", reason, "EMPTY")


def test_missing_message_field_is_no_content() -> None:
    envelope = upsert("NOMSG")
    del envelope["data"]["message"]
    assert parse_envelope(envelope).reason == REASON_NO_CONTENT


@pytest.mark.parametrize(
    ("chat", "reason"), [("status@broadcast", REASON_BROADCAST), ("120363025246125244@newsletter", REASON_NEWSLETTER)]
)
def test_broadcast_and_newsletter_are_ignored(chat: str, reason: str) -> None:
    parsed = parse_envelope(upsert("B", chat=chat))
    assert (parsed.kind, parsed.reason) == ("ignored", reason)


@pytest.mark.parametrize(
    "envelope",
    [
        {"event": "messages.upsert"},
        {"event": "messages.upsert", "data": None},
        {"event": "messages.upsert", "data": "text"},
        {"event": "messages.upsert", "data": []},
        {"event": "messages.upsert", "data": {"message": {"conversation": "no key"}}},
        {"event": "messages.upsert", "data": {"key": "nope"}},
        with_key(upsert("K"), id=None),
        with_key(upsert("K"), remoteJid=None),
        with_key(upsert("K"), id=12345),
        {"event": "send.message", "data": {"key": {}}},
        {"event": "send.message", "data": None},
    ],
)
def test_malformed_payloads_are_ignored_not_raised(envelope: dict[str, Any]) -> None:
    parsed = parse_envelope(envelope)
    assert (parsed.kind, parsed.reason) == ("ignored", REASON_MALFORMED)


@pytest.mark.parametrize("envelope", [{}, {"event": None}, {"event": ""}, {"data": {}}])
def test_envelope_without_event(envelope: dict[str, Any]) -> None:
    assert parse_envelope(envelope).reason == REASON_NO_EVENT


def test_data_as_single_item_list_is_accepted() -> None:
    envelope = upsert("L")
    envelope["data"] = [envelope["data"]]
    assert parse_envelope(envelope).kind == "message"


def test_odd_types_everywhere_do_not_crash() -> None:
    envelope = upsert("ODD", data_extra={"pushName": 5, "contextInfo": "x"}, envelope_extra={"sender": None})
    envelope["data"]["message"] = {"imageMessage": {"caption": 7, "fileLength": {"low": "x"}, "mimetype": None}}
    parsed = parse_envelope(envelope)
    assert parsed.message is not None
    assert (parsed.message.message_type, parsed.message.text, parsed.message.sender.display_name) == ("image", "", "")
    assert parsed.message.media[0].size_bytes == 0


def test_from_me_in_wrapper_is_still_ignored() -> None:
    parsed = parse_envelope(
        upsert("ME", from_me=True, message={"ephemeralMessage": {"message": {"conversation": "eco"}}})
    )
    assert (parsed.kind, parsed.reason) == ("ignored", REASON_FROM_ME)
    assert parsed.message is not None
    assert parsed.message.text == "eco"
