"""Every WhatsApp send through the channels core, the outbox and the Evolution client, against the simulator: the
outbound bodies match the Evolution REST fixtures, and Evolution's answers are classified honestly."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import grpc
import pytest
from omni.channels.v1 import channels_service_pb2, channels_service_pb2_grpc, outbound_pb2
from omni.common.v1 import channel_pb2, message_pb2

from servicekit.channels import Channel
from servicekit.errors import FailedPreconditionError, InvalidArgumentError, UnavailableError
from servicekit.grpc_clients import open_channel
from servicekit.grpc_server import set_serving
from servicekit.instances import Instance
from servicekit.messages import ContactCard, Location, Media, Reaction
from services.channels.config import Settings
from services.channels.core.models import OutboundPart, PartState, SendRequest
from services.channels.core.reconcile import matches
from services.channels.core.senders.base import ChannelRejectedError, SendTarget, WithoutStructuredSends
from services.channels.server import SERVICE_NAME, create_server
from simulators.evolution import EvolutionSimulator
from tests.channels.conftest import CHAT, EVOLUTION_INSTANCE, MakeHarness
from tests.helpers.mesh_auth import mesh_as

JID = f"{CHAT}@s.whatsapp.net"


def fixture_request(folder: Path, name: str) -> dict[str, Any]:
    request: dict[str, Any] = json.loads((folder / "rest" / f"{name}.json").read_text())["request"]
    return request


def fixture_response(folder: Path, name: str) -> dict[str, Any]:
    body: dict[str, Any] = json.loads((folder / "rest" / f"{name}.json").read_text())["response"]["body"]
    return body


def request_of(key: str, *parts: OutboundPart) -> SendRequest:
    return SendRequest(instance_name="acme", chat_id=CHAT, idempotency_key=key, parts=list(parts))


def sends(requests: list[str]) -> list[str]:
    return [r for r in requests if r.startswith("POST /message/")]


# ---------------------------------------------------------------------------------------------- outbound bodies


async def test_a_voice_note_goes_to_send_whatsapp_audio_as_the_fixture(
    make_harness: MakeHarness, sim: EvolutionSimulator, evolution_fixtures: Path
) -> None:
    expected = fixture_request(evolution_fixtures, "send-whatsapp-audio")
    media = Media(type="audio", url=expected["audio"], voice_note=True)

    [result] = await make_harness().core.send_message(request_of("vn-1", OutboundPart(media=media)))

    [sent] = sim.sent
    assert sent.endpoint == "sendWhatsAppAudio"
    assert sent.body == {key: value for key, value in expected.items() if key != "delay"}
    assert sent.raw["message"]["audioMessage"]["ptt"] is True
    assert result.channel_message_id == sent.key_id


async def test_a_voice_note_in_base64_is_sent_raw(make_harness: MakeHarness, sim: EvolutionSimulator) -> None:
    media = Media(type="audio", base64="data:audio/ogg;base64,T2dnUwACAAAAAAAA", voice_note=True)

    await make_harness().core.send_message(request_of("vn-2", OutboundPart(media=media)))

    assert sim.sent[0].body == {"number": CHAT, "audio": "T2dnUwACAAAAAAAA", "encoding": True}


async def test_an_audio_file_that_is_not_a_voice_note_stays_on_send_media(
    make_harness: MakeHarness, sim: EvolutionSimulator
) -> None:
    media = Media(type="audio", mime_type="audio/mpeg", url="https://files.example.com/song.mp3")

    await make_harness().core.send_message(request_of("au-1", OutboundPart(media=media)))

    assert (sim.sent[0].endpoint, sim.sent[0].body["mediatype"]) == ("sendMedia", "audio")


async def test_a_sticker_goes_to_send_sticker(make_harness: MakeHarness, sim: EvolutionSimulator) -> None:
    media = Media(type="sticker", url="https://files.example.com/party.webp")

    [result] = await make_harness().core.send_message(request_of("st-1", OutboundPart(media=media)))

    [sent] = sim.sent
    assert sent.endpoint == "sendSticker"
    assert sent.body == {"number": CHAT, "sticker": "https://files.example.com/party.webp"}
    assert sent.raw["messageType"] == "stickerMessage"
    assert result.channel_message_id == sent.key_id


async def test_media_by_url_and_by_base64_match_the_fixtures(
    make_harness: MakeHarness, sim: EvolutionSimulator, evolution_fixtures: Path
) -> None:
    image = fixture_request(evolution_fixtures, "send-media-image-url")
    document = fixture_request(evolution_fixtures, "send-media-document-base64")
    parts = (
        OutboundPart(
            text=image["caption"],
            media=Media(type="image", mime_type=image["mimetype"], url=image["media"], filename=image["fileName"]),
        ),
        OutboundPart(
            text=document["caption"],
            media=Media(
                type="document",
                mime_type=document["mimetype"],
                base64=document["media"],
                filename=document["fileName"],
            ),
        ),
    )

    await make_harness().core.send_message(request_of("md-1", *parts))

    assert [s.body for s in sim.sent] == [image, document]
    assert [s.raw["messageType"] for s in sim.sent] == ["imageMessage", "documentMessage"]


async def test_a_reaction_matches_the_fixture(
    make_harness: MakeHarness, sim: EvolutionSimulator, evolution_fixtures: Path
) -> None:
    expected = fixture_request(evolution_fixtures, "send-reaction")
    reaction = Reaction(message_id=expected["key"]["id"], emoji=expected["reaction"], from_me=False)

    [result] = await make_harness().core.send_message(request_of("re-1", OutboundPart(reaction=reaction)))

    [sent] = sim.sent
    assert (sent.endpoint, sent.body) == ("sendReaction", expected)
    assert sent.raw["message"]["reactionMessage"]["key"] == expected["key"]
    assert result.channel_message_id == sent.key_id


async def test_an_empty_reaction_removes_it_and_a_group_jid_is_kept(
    make_harness: MakeHarness, sim: EvolutionSimulator
) -> None:
    group = "120363041857263915@g.us"
    request = SendRequest(
        instance_name="acme",
        chat_id=group,
        idempotency_key="re-2",
        parts=[OutboundPart(reaction=Reaction(message_id="3EB0AAAA", emoji="", from_me=True))],
    )

    await make_harness().core.send_message(request)

    assert sim.sent[0].body == {"key": {"remoteJid": group, "fromMe": True, "id": "3EB0AAAA"}, "reaction": ""}


async def test_a_location_matches_the_fixture_and_absent_labels_go_empty(
    make_harness: MakeHarness, sim: EvolutionSimulator, evolution_fixtures: Path
) -> None:
    expected = fixture_request(evolution_fixtures, "send-location")
    full = Location(expected["latitude"], expected["longitude"], expected["name"], expected["address"])
    bare = Location(-22.9068, -43.1729)

    await make_harness().core.send_message(request_of("lo-1", OutboundPart(location=full), OutboundPart(location=bare)))

    assert [s.endpoint for s in sim.sent] == ["sendLocation", "sendLocation"]
    assert sim.sent[0].body == expected
    assert sim.sent[1].body == {"number": CHAT, "latitude": -22.9068, "longitude": -43.1729, "name": "", "address": ""}
    pin = sim.sent[0].raw["message"]["locationMessage"]
    assert (pin["degreesLatitude"], pin["name"]) == (expected["latitude"], expected["name"])


async def test_contact_cards_are_one_message(make_harness: MakeHarness, sim: EvolutionSimulator) -> None:
    one = ContactCard("Carlos Lima", "+55 31 98877-6655", email="carlos@example.com", organization="Acme")
    two = ContactCard("Ana P.", "5521988887777")

    await make_harness().core.send_message(
        request_of("co-1", OutboundPart(contacts=(one,)), OutboundPart(contacts=(one, two)))
    )

    first, second = sim.sent
    assert first.endpoint == "sendContact"
    assert first.body == {
        "number": CHAT,
        "contact": [
            {
                "fullName": "Carlos Lima",
                "wuid": "5531988776655",
                "phoneNumber": "+55 31 98877-6655",
                "organization": "Acme",
                "email": "carlos@example.com",
            }
        ],
    }
    card = first.raw["message"]["contactMessage"]
    assert card["displayName"] == "Carlos Lima"
    assert "item1.TEL;waid=5531988776655:+55 31 98877-6655" in card["vcard"]
    assert second.body["contact"][1] == {"fullName": "Ana P.", "wuid": "5521988887777", "phoneNumber": "5521988887777"}
    assert second.raw["message"]["contactsArrayMessage"]["displayName"] == "2 contacts"


async def test_presence_available_matches_the_fixture_shape(
    make_harness: MakeHarness, sim: EvolutionSimulator, evolution_fixtures: Path
) -> None:
    expected = fixture_request(evolution_fixtures, "send-presence")

    await make_harness().core.send_presence("acme", expected["number"], "available", 1)
    await make_harness().core.send_presence("acme", expected["number"], expected["presence"], expected["delay"])

    assert sim.presences == [
        {"instance": EVOLUTION_INSTANCE, "number": expected["number"], "presence": "available", "delay": 1},
        {"instance": EVOLUTION_INSTANCE, **expected},
    ]


async def test_a_structured_send_is_idempotent_under_its_key(
    make_harness: MakeHarness, sim: EvolutionSimulator
) -> None:
    harness = make_harness()
    part = OutboundPart(location=Location(1.5, 2.5, "Here"))

    first = await harness.core.send_message(request_of("idem-1", part))
    second = await harness.core.send_message(request_of("idem-1", part))

    assert first == second
    assert len(sim.sent) == 1
    [row] = await harness.store.parts("idem-1")
    assert (row.state, row.part.location) == (PartState.SENT, Location(1.5, 2.5, "Here"))


# ---------------------------------------------------------------------------------------------- fetch profile


async def test_fetch_profile_maps_evolutions_answer(
    make_harness: MakeHarness, sim: EvolutionSimulator, session: aiohttp.ClientSession
) -> None:
    profile = {
        "number": CHAT,
        "name": "Maria Souza",
        "picture": "https://pps.whatsapp.net/v/t61/maria.jpg",
        "status": {"status": "Disponível", "setAt": "2025-11-01T10:00:00.000Z"},
        "isBusiness": True,
        "description": "Doces finos",
        "email": "maria@example.com",
        "website": "https://maria.example.com",
    }
    async with session.post(f"{sim.url}/__sim/profiles", json=profile) as answer:
        assert answer.status == 201

    fetched = await make_harness().core.fetch_profile("acme", CHAT)

    assert (fetched.id, fetched.name, fetched.phone_number) == (JID, "Maria Souza", f"+{CHAT}")
    assert (fetched.status, fetched.picture_url) == ("Disponível", "https://pps.whatsapp.net/v/t61/maria.jpg")
    assert (fetched.is_business, fetched.description) == (True, "Doces finos")
    assert ("POST", f"/chat/fetchProfile/{EVOLUTION_INSTANCE}") in sim.requests


async def test_fetch_profile_of_a_number_without_whatsapp_is_refused(
    make_harness: MakeHarness, sim: EvolutionSimulator
) -> None:
    sim.not_on_whatsapp.add("5511900000000")

    with pytest.raises(FailedPreconditionError) as caught:
        await make_harness().core.fetch_profile("acme", "5511900000000")

    assert caught.value.reason == "RECIPIENT_NOT_ON_WHATSAPP"
    assert "5511900000000 is not on WhatsApp" in caught.value.message


async def test_fetch_profile_failures_carry_their_reason(make_harness: MakeHarness, sim: EvolutionSimulator) -> None:
    harness = make_harness()
    sim.fail_next(1, status=500)
    with pytest.raises(UnavailableError) as caught:
        await harness.core.fetch_profile("acme", CHAT)
    assert (caught.value.reason, "Connection Closed" in caught.value.message) == ("CHANNEL_UPSTREAM_ERROR", True)

    sim.fail_next(1, status=401)
    with pytest.raises(FailedPreconditionError) as refused:
        await harness.core.fetch_profile("acme", CHAT)
    assert refused.value.reason == "EVOLUTION_UNAUTHORIZED"


# ---------------------------------------------------------------------------------------------- Evolution's answers


async def test_not_on_whatsapp_is_the_callers_problem_with_evolutions_words(
    make_harness: MakeHarness, sim: EvolutionSimulator, evolution_fixtures: Path, requests: list[str]
) -> None:
    sim.fail_next(1, status=400, body=fixture_response(evolution_fixtures, "error-400-not-on-whatsapp"))

    with pytest.raises(FailedPreconditionError) as caught:
        await make_harness().core.send_message(request_of("er-1", OutboundPart(location=Location(1, 2))))

    assert caught.value.reason == "RECIPIENT_NOT_ON_WHATSAPP"
    assert "5511900000000 is not on WhatsApp" in caught.value.message
    assert len(sends(requests)) == 1


async def test_evolutions_validation_is_a_request_error(make_harness: MakeHarness, sim: EvolutionSimulator) -> None:
    reaction = Reaction(message_id="3A9C4E2B7D1F5A8C6E30", emoji="ok")

    with pytest.raises(FailedPreconditionError) as caught:
        await make_harness().core.send_message(request_of("er-2", OutboundPart(reaction=reaction)))

    assert caught.value.reason == "CHANNEL_REQUEST_INVALID"
    assert caught.value.message == "Reaction must be a single emoji or empty string"
    assert sim.sent == []


async def test_a_failure_inside_the_send_stays_the_channels(make_harness: MakeHarness, sim: EvolutionSimulator) -> None:
    sim.fail_next(1, status=400, body={"status": 400, "error": "Bad Request", "response": {"message": ["Error: x"]}})

    with pytest.raises(FailedPreconditionError) as caught:
        await make_harness().core.send_message(request_of("er-3", OutboundPart(text="hi")))

    assert caught.value.reason == "CHANNEL_REJECTED"


async def test_rate_overlimit_is_transient_with_a_backoff(
    make_harness: MakeHarness, sim: EvolutionSimulator, evolution_fixtures: Path, requests: list[str]
) -> None:
    harness = make_harness()
    sim.fail_next(1, status=400, body=fixture_response(evolution_fixtures, "error-400-send-failed"))
    part = OutboundPart(contacts=(ContactCard("Ana", "5521988887777"),))

    with pytest.raises(UnavailableError) as caught:
        await harness.core.send_message(request_of("er-4", part))

    assert (caught.value.reason, caught.value.retry_after) == ("CHANNEL_RATE_LIMITED", 7.5)
    assert len(sends(requests)) == 1
    [row] = await harness.store.parts("er-4")
    assert row.state is PartState.PENDING  # nothing went out: the next try simply sends
    [result] = await harness.core.send_message(request_of("er-4", part))
    assert result.channel_message_id == sim.sent[0].key_id


async def test_a_5xx_is_retried_then_reported_as_an_upstream_error(
    make_harness: MakeHarness, sim: EvolutionSimulator, requests: list[str]
) -> None:
    sim.fail_next(3, status=500)

    with pytest.raises(UnavailableError) as caught:
        await make_harness(attempts=3).core.send_message(request_of("er-5", OutboundPart(location=Location(1, 2))))

    assert caught.value.reason == "CHANNEL_UPSTREAM_ERROR"
    assert "Connection Closed" in caught.value.message
    assert len(sends(requests)) == 3


async def test_a_timeout_is_reported_as_such_and_reconciled_before_a_resend(
    make_harness: MakeHarness, sim: EvolutionSimulator, requests: list[str]
) -> None:
    harness = make_harness(timeout=0.3)
    sim.fail_next(1, status=201, delay=1.0, after_send=True)
    reaction = Reaction(message_id="3A9C4E2B7D1F5A8C6E30", emoji="👍")

    with pytest.raises(UnavailableError) as caught:
        await harness.core.send_message(request_of("er-6", OutboundPart(reaction=reaction)))
    assert caught.value.reason == "CHANNEL_TIMEOUT"

    [result] = await harness.core.send_message(request_of("er-6", OutboundPart(reaction=reaction)))
    assert result.channel_message_id == sim.sent[0].key_id
    assert len(sim.sent) == 1  # found in Evolution's store, not sent twice


async def test_a_wrong_key_is_a_misconfigured_instance(
    make_harness: MakeHarness, sim: EvolutionSimulator, evolution_fixtures: Path
) -> None:
    sim.fail_next(1, status=401, body=fixture_response(evolution_fixtures, "error-401"))

    with pytest.raises(FailedPreconditionError) as caught:
        await make_harness().core.send_message(
            request_of("er-7", OutboundPart(media=Media(type="sticker", url="https://x.example/a.webp")))
        )

    assert caught.value.reason == "EVOLUTION_UNAUTHORIZED"
    assert "evolution_key" in caught.value.message
    assert "Unauthorized" in caught.value.message


# ---------------------------------------------------------------------------------------------- validation


@pytest.mark.parametrize(
    ("part", "field"),
    [
        (OutboundPart(reaction=Reaction(message_id="")), "parts[0].reaction.message_id"),
        (OutboundPart(location=Location(91, 0)), "parts[0].location.latitude"),
        (OutboundPart(location=Location(0, float("nan"))), "parts[0].location.longitude"),
        (OutboundPart(contacts=(ContactCard("", "5511"),)), "parts[0].contacts[0].full_name"),
        (OutboundPart(contacts=(ContactCard("Ana", "none"),)), "parts[0].contacts[0].phone_number"),
        (OutboundPart(location=Location(1, 2), reaction=Reaction("x", "👍")), "parts[0]"),
    ],
)
async def test_malformed_structured_parts_are_refused_before_any_send(
    make_harness: MakeHarness, sim: EvolutionSimulator, part: OutboundPart, field: str
) -> None:
    with pytest.raises(InvalidArgumentError) as caught:
        await make_harness().core.send_message(request_of("bad-1", part))
    assert field in [v.field for v in caught.value.violations]
    assert sim.requests == []


async def test_channels_without_structured_sends_refuse_them_for_good() -> None:
    class Plain(WithoutStructuredSends):
        channel = Channel.DISCORD

    instance = Instance(name="d")
    with pytest.raises(ChannelRejectedError) as caught:
        await Plain().send_reaction(instance, SendTarget(chat_id="1"), Reaction("m", "👍"))
    assert (caught.value.reason, caught.value.message) == (
        "CHANNEL_NOT_SUPPORTED",
        "sending a reaction is not supported on discord",
    )
    with pytest.raises(ChannelRejectedError):
        await Plain().fetch_profile(instance, "1")


# ---------------------------------------------------------------------------------------------- storage and lookup


def test_outbox_json_round_trips_and_leaves_text_parts_as_they_were() -> None:
    part = OutboundPart(
        text="x",
        reaction=Reaction("m1", "👍", True),
        location=None,
        contacts=(ContactCard("Ana", "+5521", "a@example.com", "Acme"),),
    )
    assert OutboundPart.from_json(json.loads(json.dumps(part.to_json()))) == part
    assert set(OutboundPart(text="hi").to_json()) == {"text", "media", "quoted_message_id", "thread_id"}


@pytest.mark.parametrize(
    ("message", "part", "expected"),
    [
        ({"reactionMessage": {"key": {"id": "m1"}, "text": "👍"}}, OutboundPart(reaction=Reaction("m1", "👍")), True),
        ({"reactionMessage": {"key": {"id": "m1"}, "text": "👍"}}, OutboundPart(reaction=Reaction("m1", "")), False),
        (
            {"locationMessage": {"degreesLatitude": 1.5, "degreesLongitude": 2}},
            OutboundPart(location=Location(1.5, 2)),
            True,
        ),
        (
            {"locationMessage": {"degreesLatitude": 1.5, "degreesLongitude": 2}},
            OutboundPart(location=Location(1.5, 3)),
            False,
        ),
        ({"contactMessage": {"displayName": "Ana"}}, OutboundPart(contacts=(ContactCard("Ana", "1"),)), True),
        (
            {"contactsArrayMessage": {"contacts": [{"displayName": "Ana"}, {"displayName": "Bo"}]}},
            OutboundPart(contacts=(ContactCard("Ana", "1"), ContactCard("Bo", "2"))),
            True,
        ),
        ({"conversation": "Ana"}, OutboundPart(contacts=(ContactCard("Ana", "1"),)), False),
        ({"stickerMessage": {"url": "u"}}, OutboundPart(media=Media(type="sticker", url="u")), True),
        ({"audioMessage": {"ptt": True}}, OutboundPart(media=Media(type="audio", url="u", voice_note=True)), True),
    ],
)
def test_reconciliation_recognises_each_kind(message: dict[str, Any], part: OutboundPart, expected: bool) -> None:
    assert matches({"message": message}, part) is expected


# ---------------------------------------------------------------------------------------------- over gRPC


@pytest.fixture
async def stub(make_harness: MakeHarness) -> AsyncIterator[channels_service_pb2_grpc.ChannelsServiceAsyncStub]:
    settings = Settings(enable_tracing=False, grpc_host="127.0.0.1")
    server, port, health = create_server(settings, make_harness().core, port=0)
    await server.start()
    await set_serving(health, [SERVICE_NAME], True)
    async with open_channel(f"127.0.0.1:{port}", tracing=False, mesh=mesh_as("router")) as opened:
        yield channels_service_pb2_grpc.ChannelsServiceStub(opened)
    await server.stop(None)


async def test_structured_parts_and_profiles_cross_the_wire(
    stub: channels_service_pb2_grpc.ChannelsServiceAsyncStub, sim: EvolutionSimulator
) -> None:
    parts = [
        outbound_pb2.OutboundPart(reaction=message_pb2.Reaction(message_id="m1", emoji="👍")),
        outbound_pb2.OutboundPart(location=message_pb2.Location(latitude=1.5, longitude=2.5, name="Here")),
        outbound_pb2.OutboundPart(contacts=[message_pb2.ContactCard(full_name="Ana", phone_number="5521988887777")]),
        outbound_pb2.OutboundPart(
            media=message_pb2.Media(type=channel_pb2.MESSAGE_TYPE_AUDIO, url="https://f.example/a.ogg", voice_note=True)
        ),
    ]
    request = channels_service_pb2.SendMessageRequest(
        instance_name="acme", chat_id=CHAT, idempotency_key="wire-1", parts=parts
    )

    response = await stub.SendMessage(request, timeout=10)

    assert [s.endpoint for s in sim.sent] == ["sendReaction", "sendLocation", "sendContact", "sendWhatsAppAudio"]
    assert [r.channel_message_id for r in response.results] == [s.key_id for s in sim.sent]

    profile = await stub.FetchProfile(channels_service_pb2.FetchProfileRequest(instance_name="acme", chat_id=CHAT))
    assert (profile.profile.id, profile.profile.status) == (JID, "Hey there! I am using WhatsApp.")

    await stub.SendPresence(
        channels_service_pb2.SendPresenceRequest(
            instance_name="acme", chat_id=CHAT, presence=outbound_pb2.PRESENCE_AVAILABLE, duration_ms=5
        )
    )
    assert sim.presences[-1]["presence"] == "available"

    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.FetchProfile(channels_service_pb2.FetchProfileRequest(instance_name="nope", chat_id=CHAT))
    assert caught.value.code() is grpc.StatusCode.NOT_FOUND
