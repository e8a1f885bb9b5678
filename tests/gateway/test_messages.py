"""API sends: bodies become SendText/SendMedia calls, with the idempotency key and the send deadline."""

from __future__ import annotations

import httpx
import pytest
from omni.common.v1 import channel_pb2

from servicekit.errors import FailedPreconditionError, InvalidArgumentError, NotFoundError
from tests.gateway.conftest import FakeMesh
from tests.gateway.fakes import GRPC_TIMEOUT_ROUNDING


async def test_send_text(client: httpx.AsyncClient, mesh: FakeMesh) -> None:
    response = await client.post(
        "/api/v1/acme/send-text",
        json={"recipient": "+5511999999999", "text": "hello", "session_id": "s-1"},
        headers={"Idempotency-Key": "order-42"},
    )
    assert response.status_code == 200
    assert response.json() == {"status": "sent", "message_ids": ["wamid-1"], "trace_id": "ab" * 16}
    request = mesh.script.calls["SendText"][0]
    assert (request.instance_name, request.recipient, request.text) == ("acme", "+5511999999999", "hello")
    assert (request.session_id, request.idempotency_key) == ("s-1", "order-42")
    remaining = mesh.script.time_remaining["SendText"]
    assert remaining is not None
    assert 10 < remaining <= 120 + GRPC_TIMEOUT_ROUNDING


async def test_send_media_by_url(client: httpx.AsyncClient, mesh: FakeMesh) -> None:
    response = await client.post(
        "/api/v1/acme/send-media",
        json={
            "recipient": "120363025246125486@g.us",
            "media_url": "https://cdn.example.com/cat.jpg",
            "caption": "a cat",
            "media_type": "image",
            "mime_type": "image/jpeg",
        },
    )
    assert response.status_code == 200
    assert response.json()["message_ids"] == ["wamid-2"]
    media = mesh.script.calls["SendMedia"][0].media
    assert media.type == channel_pb2.MESSAGE_TYPE_IMAGE
    assert (media.url, media.caption, media.mime_type, media.base64) == (
        "https://cdn.example.com/cat.jpg",
        "a cat",
        "image/jpeg",
        "",
    )
    assert mesh.script.calls["SendMedia"][0].idempotency_key == ""


async def test_send_media_by_base64(client: httpx.AsyncClient, mesh: FakeMesh) -> None:
    response = await client.post(
        "/api/v1/acme/send-media",
        json={"recipient": "5511999999999", "media_base64": "JVBERi0=", "filename": "a.pdf", "media_type": "document"},
    )
    assert response.status_code == 200
    media = mesh.script.calls["SendMedia"][0].media
    assert (media.base64, media.filename, media.type) == ("JVBERi0=", "a.pdf", channel_pb2.MESSAGE_TYPE_DOCUMENT)


@pytest.mark.parametrize(
    ("error", "status"),
    [
        (NotFoundError("instance acme not found"), 404),
        (InvalidArgumentError("bad recipient"), 422),
        (FailedPreconditionError("not on WhatsApp", reason="CHANNEL_REJECTED"), 502),
    ],
)
async def test_send_errors(client: httpx.AsyncClient, mesh: FakeMesh, error: Exception, status: int) -> None:
    mesh.script.fail("SendText", error)  # type: ignore[arg-type]
    response = await client.post("/api/v1/acme/send-text", json={"recipient": "x", "text": "y"})
    assert response.status_code == status


async def test_idempotency_key_is_bounded(client: httpx.AsyncClient, mesh: FakeMesh) -> None:
    response = await client.post(
        "/api/v1/acme/send-text", json={"recipient": "x", "text": "y"}, headers={"Idempotency-Key": "k" * 300}
    )
    assert response.status_code == 422
    assert mesh.script.calls["SendText"] == []
