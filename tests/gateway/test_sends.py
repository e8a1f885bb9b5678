"""The WhatsApp sends and chat actions of the REST API: each body becomes one RouterService call with the
Idempotency-Key and the send deadline, bad bodies are a 422 with the field, and the channel's refusals come back
with an honest status and its reason."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from omni.common.v1 import channel_pb2, message_pb2
from omni.router.v1 import router_service_pb2

from servicekit import errors
from tests.gateway.conftest import FakeMesh
from tests.gateway.fakes import GRPC_TIMEOUT_ROUNDING


async def test_send_audio_is_a_voice_note(client: httpx.AsyncClient, mesh: FakeMesh) -> None:
    response = await client.post(
        "/api/v1/acme/send-audio",
        json={"recipient": "+5511999999999", "audio_url": "https://files.example.com/reply.mp3"},
        headers={"Idempotency-Key": "vn-1"},
    )

    assert response.status_code == 200
    assert response.json() == {"status": "sent", "message_ids": ["wamid-2"], "trace_id": "cd" * 16}
    [request] = mesh.script.calls["SendMedia"]
    assert (request.instance_name, request.recipient, request.idempotency_key) == ("acme", "+5511999999999", "vn-1")
    media = request.media
    assert (media.type, media.voice_note, media.url, media.base64) == (
        channel_pb2.MESSAGE_TYPE_AUDIO,
        True,
        "https://files.example.com/reply.mp3",
        "",
    )
    remaining = mesh.script.time_remaining["SendMedia"]
    assert remaining is not None
    assert 10 < remaining <= 120 + GRPC_TIMEOUT_ROUNDING


async def test_send_sticker_by_base64(client: httpx.AsyncClient, mesh: FakeMesh) -> None:
    response = await client.post(
        "/api/v1/acme/send-sticker", json={"recipient": "5511999999999", "sticker_base64": "UklGRg=="}
    )

    assert response.status_code == 200
    media = mesh.script.calls["SendMedia"][0].media
    assert (media.type, media.base64, media.voice_note) == (channel_pb2.MESSAGE_TYPE_STICKER, "UklGRg==", False)


async def test_send_reaction(client: httpx.AsyncClient, mesh: FakeMesh) -> None:
    response = await client.post(
        "/api/v1/acme/send-reaction",
        json={"recipient": "5521991234567", "message_id": "3A9C4E2B7D1F5A8C6E30", "reaction": "❤️"},
        headers={"Idempotency-Key": "re-1"},
    )

    assert response.status_code == 200
    assert response.json() == {"status": "sent", "message_ids": ["wamid-3"], "trace_id": "ef" * 16}
    [request] = mesh.script.calls["SendReaction"]
    assert request.reaction == message_pb2.Reaction(message_id="3A9C4E2B7D1F5A8C6E30", emoji="❤️", from_me=False)
    assert request.idempotency_key == "re-1"


async def test_an_empty_reaction_removes_it(client: httpx.AsyncClient, mesh: FakeMesh) -> None:
    response = await client.post(
        "/api/v1/acme/send-reaction",
        json={"recipient": "5521991234567", "message_id": "3EB0AA", "reaction": "", "from_me": True},
    )

    assert response.status_code == 200
    assert mesh.script.calls["SendReaction"][0].reaction.from_me is True


async def test_send_location(client: httpx.AsyncClient, mesh: FakeMesh) -> None:
    response = await client.post(
        "/api/v1/acme/send-location",
        json={"recipient": "5521991234567", "latitude": -23.5613991, "longitude": -46.6565712, "name": "Loja"},
    )

    assert response.status_code == 200
    location = mesh.script.calls["SendLocation"][0].location
    assert (location.latitude, location.longitude, location.name, location.address) == (
        -23.5613991,
        -46.6565712,
        "Loja",
        "",
    )


async def test_send_contact(client: httpx.AsyncClient, mesh: FakeMesh) -> None:
    response = await client.post(
        "/api/v1/acme/send-contact",
        json={
            "recipient": "5521991234567",
            "contacts": [
                {"full_name": "Carlos Lima", "phone_number": "+5531988776655", "organization": "Acme"},
                {"full_name": "Ana P.", "phone_number": "5521988887777", "email": "ana@example.com"},
            ],
        },
        headers={"Idempotency-Key": "co-1"},
    )

    assert response.status_code == 200
    [request] = mesh.script.calls["SendContact"]
    assert list(request.contacts) == [
        message_pb2.ContactCard(full_name="Carlos Lima", phone_number="+5531988776655", organization="Acme"),
        message_pb2.ContactCard(full_name="Ana P.", phone_number="5521988887777", email="ana@example.com"),
    ]
    assert request.idempotency_key == "co-1"


async def test_send_presence(client: httpx.AsyncClient, mesh: FakeMesh) -> None:
    response = await client.post(
        "/api/v1/acme/send-presence", json={"recipient": "5521991234567", "presence": "recording", "duration_ms": 1500}
    )

    assert (response.status_code, response.json()) == (200, {"status": "sent"})
    [request] = mesh.script.calls["SendPresence"]
    assert (request.recipient, request.presence, request.duration_ms) == ("5521991234567", "recording", 1500)


async def test_fetch_profile(client: httpx.AsyncClient, mesh: FakeMesh) -> None:
    mesh.script.respond(
        "FetchProfile",
        router_service_pb2.FetchProfileResponse(
            profile=message_pb2.Profile(
                id="5521991234567@s.whatsapp.net",
                name="Maria Souza",
                phone_number="+5521991234567",
                status="Disponível",
                picture_url="https://pps.whatsapp.net/maria.jpg",
                is_business=True,
                description="Doces finos",
            )
        ),
    )

    response = await client.post("/api/v1/acme/fetch-profile", json={"recipient": "+5521991234567"})

    assert response.status_code == 200
    assert response.json() == {
        "id": "5521991234567@s.whatsapp.net",
        "name": "Maria Souza",
        "phone_number": "+5521991234567",
        "status": "Disponível",
        "picture_url": "https://pps.whatsapp.net/maria.jpg",
        "is_business": True,
        "description": "Doces finos",
    }
    assert mesh.script.calls["FetchProfile"][0].recipient == "+5521991234567"


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("send-audio", {"recipient": "1"}, "body"),
        ("send-audio", {"recipient": "1", "audio_url": "https://a.example/x", "audio_base64": "AA=="}, "body"),
        ("send-audio", {"recipient": "1", "audio_url": "ftp://a.example/x"}, "audio_url"),
        ("send-sticker", {"recipient": "1"}, "body"),
        ("send-reaction", {"recipient": "1", "reaction": "👍"}, "message_id"),
        ("send-reaction", {"recipient": "1", "message_id": "m", "reaction": "x" * 33}, "reaction"),
        ("send-location", {"recipient": "1", "latitude": 91, "longitude": 0}, "latitude"),
        ("send-location", {"recipient": "1", "latitude": 0, "longitude": -181}, "longitude"),
        ("send-location", {"recipient": "1", "latitude": "north", "longitude": 0}, "latitude"),
        ("send-contact", {"recipient": "1", "contacts": []}, "contacts"),
        ("send-contact", {"recipient": "1", "contacts": [{"full_name": "A", "phone_number": "abc"}]}, "phone_number"),
        ("send-contact", {"recipient": "1", "contacts": [{"phone_number": "5511999999999"}]}, "full_name"),
        ("send-presence", {"recipient": "1", "presence": "typing"}, "presence"),
        ("send-presence", {"recipient": "1", "presence": "paused", "duration_ms": 20001}, "duration_ms"),
        ("fetch-profile", {}, "recipient"),
    ],
)
async def test_bad_bodies_are_422_with_the_field(
    client: httpx.AsyncClient, mesh: FakeMesh, path: str, body: dict[str, Any], field: str
) -> None:
    response = await client.post(f"/api/v1/acme/{path}", json=body)

    assert response.status_code == 422
    assert field in [str(part) for item in response.json()["detail"] for part in item["loc"]]
    assert not any(mesh.script.calls.values())


@pytest.mark.parametrize(
    ("error", "status"),
    [
        (errors.FailedPreconditionError("5511900000000 is not on WhatsApp", reason="RECIPIENT_NOT_ON_WHATSAPP"), 422),
        (errors.FailedPreconditionError("Reaction must be a single emoji", reason="CHANNEL_REQUEST_INVALID"), 422),
        (errors.FailedPreconditionError("not supported on discord", reason="CHANNEL_NOT_SUPPORTED"), 422),
        (errors.FailedPreconditionError("Evolution refused the key", reason="EVOLUTION_UNAUTHORIZED"), 502),
        (errors.FailedPreconditionError("instance missing", reason="EVOLUTION_INSTANCE_NOT_FOUND"), 502),
        (errors.UnavailableError("Evolution error 500: Connection Closed", reason="CHANNEL_UPSTREAM_ERROR"), 502),
        (errors.UnavailableError("Evolution did not answer in time", reason="CHANNEL_TIMEOUT"), 504),
        (errors.UnavailableError("rate-overlimit", reason="CHANNEL_RATE_LIMITED", retry_after=10), 429),
        (errors.InvalidArgumentError("invalid recipient"), 422),
        (errors.NotFoundError("instance acme not found"), 404),
    ],
)
async def test_channel_failures_map_to_honest_statuses(
    client: httpx.AsyncClient, mesh: FakeMesh, error: errors.OmniError, status: int
) -> None:
    mesh.script.fail("SendLocation", error)

    response = await client.post(
        "/api/v1/acme/send-location", json={"recipient": "5521991234567", "latitude": 1, "longitude": 2}
    )

    assert response.status_code == status
    assert response.json()["detail"] == error.message
    assert response.json()["reason"] == error.reason
    if status == 429:
        assert response.headers["Retry-After"] == "10"


async def test_a_presence_failure_keeps_its_reason(client: httpx.AsyncClient, mesh: FakeMesh) -> None:
    mesh.script.fail(
        "SendPresence", errors.UnavailableError("presence not sent: Unauthorized", reason="EVOLUTION_UNAUTHORIZED")
    )

    response = await client.post(
        "/api/v1/acme/send-presence", json={"recipient": "5521991234567", "presence": "paused"}
    )

    assert (response.status_code, response.json()["reason"]) == (502, "EVOLUTION_UNAUTHORIZED")
