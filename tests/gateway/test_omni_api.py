"""The Omni API routes over the fake channels service: contacts, chats and their single reads, paging fields, query
validation, and channels' errors as HTTP."""

from __future__ import annotations

import httpx
import pytest
from google.protobuf import timestamp_pb2
from omni.channels.v1 import channels_service_pb2

from servicekit.errors import FailedPreconditionError, NotFoundError, OmniError, UnavailableError
from tests.gateway.conftest import FakeMesh, whatsapp_instance

GROUP = "120363041857263915@g.us"
MARIA = "5521991234567@s.whatsapp.net"


@pytest.fixture
async def acme(client: httpx.AsyncClient) -> str:
    assert (await client.post("/api/v1/instances", json=whatsapp_instance("acme"))).status_code == 201
    return "acme"


def chats(total: int, *items: channels_service_pb2.Chat) -> channels_service_pb2.ListChatsResponse:
    return channels_service_pb2.ListChatsResponse(chats=list(items), total_count=total)


async def test_chats_page_has_items_totals_and_has_more(client: httpx.AsyncClient, mesh: FakeMesh, acme: str) -> None:
    mesh.script.respond(
        "ListChats",
        chats(
            120,
            channels_service_pb2.Chat(
                id=MARIA,
                name="Maria Souza",
                chat_type="direct",
                unread_count=2,
                last_message_at=timestamp_pb2.Timestamp(seconds=1764945130),
                avatar_url="https://pps.whatsapp.net/m.jpg",
                last_message_text="Oi!",
            ),
            channels_service_pb2.Chat(id=GROUP, name="Equipe", chat_type="group"),
        ),
    )

    response = await client.get(
        f"/api/v1/{acme}/chats", params={"page": 2, "page_size": 50, "search": "e", "chat_type": "group"}
    )

    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["page"], body["page_size"], body["total_count"], body["has_more"]) == (2, 50, 120, True)
    assert body["chats"][0] == {
        "id": MARIA,
        "name": "Maria Souza",
        "chat_type": "direct",
        "unread_count": 2,
        "last_message_at": "2025-12-05T14:32:10Z",
        "avatar_url": "https://pps.whatsapp.net/m.jpg",
        "last_message_text": "Oi!",
    }
    assert body["chats"][1] == {
        "id": GROUP,
        "name": "Equipe",
        "chat_type": "group",
        "unread_count": 0,
        "last_message_at": None,
        "avatar_url": None,
        "last_message_text": None,
    }
    sent = mesh.script.calls["ListChats"][-1]
    assert (sent.instance_name, sent.page, sent.page_size, sent.search, sent.chat_type) == (
        "acme",
        2,
        50,
        "e",
        "group",
    )


async def test_the_last_page_has_no_more(client: httpx.AsyncClient, mesh: FakeMesh, acme: str) -> None:
    mesh.script.respond("ListChats", chats(120))

    body = (await client.get(f"/api/v1/{acme}/chats", params={"page": 3, "page_size": 60})).json()

    assert (body["chats"], body["total_count"], body["has_more"]) == ([], 120, False)


async def test_chats_default_to_the_first_page_of_fifty(client: httpx.AsyncClient, mesh: FakeMesh, acme: str) -> None:
    body = (await client.get(f"/api/v1/{acme}/chats")).json()

    assert (body["page"], body["page_size"], body["total_count"], body["has_more"]) == (1, 50, 1, False)
    sent = mesh.script.calls["ListChats"][-1]
    assert (sent.page, sent.page_size, sent.search, sent.chat_type) == (1, 50, "", "")


@pytest.mark.parametrize(
    "params",
    [
        {"chat_type": "private"},
        {"page": 0},
        {"page_size": 501},
        {"page_size": "many"},
        {"search": "x" * 201},
    ],
)
async def test_bad_chat_queries_are_422_without_a_call(
    client: httpx.AsyncClient, mesh: FakeMesh, acme: str, params: dict[str, str | int]
) -> None:
    response = await client.get(f"/api/v1/{acme}/chats", params=params)

    assert response.status_code == 422
    assert response.json()["reason"] == "INVALID_ARGUMENT"
    assert "ListChats" not in mesh.script.calls


async def test_contacts_pass_search_and_paging_through(client: httpx.AsyncClient, mesh: FakeMesh, acme: str) -> None:
    mesh.script.respond(
        "ListContacts",
        channels_service_pb2.ListContactsResponse(
            contacts=[
                channels_service_pb2.Contact(id=MARIA, name="Maria Souza", phone_number="+5521991234567"),
                channels_service_pb2.Contact(id="148203657712934@lid", name="Ana P."),
            ],
            total_count=10_000,
        ),
    )

    body = (await client.get(f"/api/v1/{acme}/contacts", params={"page": 3, "page_size": 2, "search": "+55"})).json()

    assert (body["page"], body["page_size"], body["total_count"], body["has_more"]) == (3, 2, 10_000, True)
    assert body["contacts"][0] == {
        "id": MARIA,
        "name": "Maria Souza",
        "phone_number": "+5521991234567",
        "avatar_url": None,
        "email": None,
    }
    assert body["contacts"][1]["phone_number"] is None
    sent = mesh.script.calls["ListContacts"][-1]
    assert (sent.page, sent.page_size, sent.search) == (3, 2, "+55")


async def test_one_contact_and_one_chat_by_their_jid(client: httpx.AsyncClient, mesh: FakeMesh, acme: str) -> None:
    contact = await client.get(f"/api/v1/{acme}/contacts/{MARIA}")
    chat = await client.get(f"/api/v1/{acme}/chats/{GROUP}")

    assert contact.status_code == 200, contact.text
    assert contact.json()["id"] == MARIA
    assert chat.status_code == 200, chat.text
    assert (chat.json()["id"], chat.json()["chat_type"]) == (GROUP, "group")
    assert (mesh.script.calls["GetContact"][-1].instance_name, mesh.script.calls["GetContact"][-1].id) == (
        "acme",
        MARIA,
    )
    assert mesh.script.calls["GetChat"][-1].id == GROUP


@pytest.mark.parametrize(
    ("method", "path", "error", "reason", "status"),
    [
        ("GetContact", "contacts/5511000000000@s.whatsapp.net", NotFoundError, "CONTACT_NOT_FOUND", 404),
        ("GetChat", f"chats/{MARIA}", NotFoundError, "CHAT_NOT_FOUND", 404),
        ("ListChats", "chats", FailedPreconditionError, "CHATS_NOT_LISTED", 409),
        ("ListContacts", "contacts", UnavailableError, "CHANNEL_UNAVAILABLE", 502),
        ("ListChats", "chats", FailedPreconditionError, "EVOLUTION_UNAUTHORIZED", 502),
        ("GetChat", f"chats/{GROUP}", UnavailableError, "UNAVAILABLE", 503),
    ],
)
async def test_channel_errors_are_json_with_a_reason(
    client: httpx.AsyncClient,
    mesh: FakeMesh,
    acme: str,
    method: str,
    path: str,
    error: type[OmniError],
    reason: str,
    status: int,
) -> None:
    mesh.script.fail(method, error(f"channels said {reason}", reason=reason))

    response = await client.get(f"/api/v1/{acme}/{path}")

    assert response.status_code == status
    assert response.headers["content-type"] == "application/json"
    assert response.json() == {"detail": f"channels said {reason}", "reason": reason}


async def test_an_overlong_id_is_422(client: httpx.AsyncClient, mesh: FakeMesh, acme: str) -> None:
    response = await client.get(f"/api/v1/{acme}/chats/{'9' * 300}@g.us")

    assert response.status_code == 422
    assert "GetChat" not in mesh.script.calls


async def test_whatsapp_channels_are_the_account_with_the_instance_status(
    client: httpx.AsyncClient, mesh: FakeMesh, acme: str
) -> None:
    mesh.script.respond(
        "ListChannels",
        channels_service_pb2.ListChannelsResponse(
            channels=[channels_service_pb2.ChatChannel(id="acme-support", name="acme-support", kind="account")]
        ),
    )

    response = await client.get(f"/api/v1/{acme}/channels")

    assert response.status_code == 200, response.text
    (channel,) = response.json()["channels"]
    assert channel["instance_name"] == "acme"
    assert channel["channel_type"] == "whatsapp"
    assert channel["status"] == "connecting"
    assert (channel["id"], channel["kind"]) == ("acme-support", "account")
