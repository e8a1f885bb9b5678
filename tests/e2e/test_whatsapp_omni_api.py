"""The WhatsApp Omni API through the real mesh (gateway → channels → Evolution simulator): contacts, one contact,
chats, one chat and channels, with a 10,000-contact address book paged quickly, on SQLite and on PostgreSQL."""

from __future__ import annotations

import time

import pytest

from tests.e2e.conftest import World

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="module")]

MARIA = "5521991234567@s.whatsapp.net"
ANA = "148203657712934@lid"
GROUP = "120363041857263915@g.us"
NEWSLETTER = "120363999999999999@newsletter"


async def test_ten_thousand_contacts_are_paged_quickly_and_searched(world: World) -> None:
    instance = await world.new_instance()
    world.evolution.add_contact(instance, MARIA, "Maria Souza", profile_pic_url="https://pps.whatsapp.net/m.jpg")
    world.evolution.add_contact(instance, ANA, "Ana P.")
    world.evolution.add_contact(instance, GROUP, "Equipe Vendas", contact_type="group")
    world.evolution.seed_contacts(instance, 10_000)
    before = len(world.evolution.requests)
    started = time.perf_counter()

    ids: list[str] = []
    for page in range(1, 22):
        code, body = await world.mesh.get_json(f"/api/v1/{instance}/contacts", page=page, page_size=500)
        assert code == 200, body
        assert body["total_count"] == 10_002
        assert body["has_more"] is (page < 21)
        ids += [c["id"] for c in body["contacts"]]
    elapsed = time.perf_counter() - started

    assert len(ids) == len(set(ids)) == 10_002
    assert ids[:2] == [MARIA, ANA], "oldest first"
    assert GROUP not in ids, "groups are chats"
    assert elapsed < 15, f"21 pages of 10,002 contacts took {elapsed:.1f}s"
    fetches = [path for _, path in world.evolution.requests[before:] if path.startswith("/chat/findContacts/")]
    assert len(fetches) == 1, "one Evolution fetch serves every page"

    code, found = await world.mesh.get_json(f"/api/v1/{instance}/contacts", search="MARIA")
    assert code == 200
    assert found["total_count"] == 1
    assert found["contacts"] == [
        {
            "id": MARIA,
            "name": "Maria Souza",
            "phone_number": "+5521991234567",
            "avatar_url": "https://pps.whatsapp.net/m.jpg",
            "email": None,
        }
    ]
    code, by_phone = await world.mesh.get_json(f"/api/v1/{instance}/contacts", search="+55 21 99123")
    assert [c["id"] for c in by_phone["contacts"]] == [MARIA]


async def test_one_contact_by_its_jid_or_number(world: World) -> None:
    instance = await world.new_instance()
    world.evolution.add_contact(instance, ANA, "Ana P.")
    await world.mesh.get_json(f"/api/v1/{instance}/contacts")  # the list is cached; single reads are fresh
    world.evolution.add_contact(instance, MARIA, "Maria Souza")

    code, maria = await world.mesh.get_json(f"/api/v1/{instance}/contacts/{MARIA}")
    assert code == 200, maria
    assert (maria["id"], maria["name"], maria["phone_number"]) == (MARIA, "Maria Souza", "+5521991234567")
    code, same = await world.mesh.get_json(f"/api/v1/{instance}/contacts/+5521991234567")
    assert (code, same) == (200, maria)
    code, ana = await world.mesh.get_json(f"/api/v1/{instance}/contacts/{ANA}")
    assert (code, ana["phone_number"]) == (200, None)

    code, missing = await world.mesh.get_json(f"/api/v1/{instance}/contacts/5511000000000@s.whatsapp.net")
    assert code == 404
    assert missing["reason"] == "CONTACT_NOT_FOUND"


async def test_chats_with_types_filters_and_single_reads(world: World) -> None:
    instance = await world.new_instance()
    world.evolution.add_chat(instance, MARIA, "Maria Souza", unread_count=3, last_text="Oi!", last_timestamp=1764945130)
    world.evolution.add_chat(instance, GROUP, "Equipe Vendas", last_text="Bom dia")
    world.evolution.add_chat(instance, NEWSLETTER, "Novidades")
    world.evolution.add_chat(instance, ANA, "Ana P.")

    code, page = await world.mesh.get_json(f"/api/v1/{instance}/chats", page=1, page_size=3)
    assert code == 200, page
    assert (page["page"], page["page_size"], page["total_count"], page["has_more"]) == (1, 3, 4, True)
    assert [(c["id"], c["chat_type"]) for c in page["chats"]] == [
        (MARIA, "direct"),
        (GROUP, "group"),
        (NEWSLETTER, "channel"),
    ]
    assert page["chats"][0] == {
        "id": MARIA,
        "name": "Maria Souza",
        "chat_type": "direct",
        "unread_count": 3,
        "last_message_at": "2025-12-05T14:32:10Z",
        "avatar_url": None,
        "last_message_text": "Oi!",
    }
    code, rest = await world.mesh.get_json(f"/api/v1/{instance}/chats", page=2, page_size=3)
    assert ([c["id"] for c in rest["chats"]], rest["has_more"]) == ([ANA], False)

    code, groups = await world.mesh.get_json(f"/api/v1/{instance}/chats", chat_type="group")
    assert ([c["id"] for c in groups["chats"]], groups["total_count"]) == ([GROUP], 1)
    code, searched = await world.mesh.get_json(f"/api/v1/{instance}/chats", search="novid")
    assert [c["id"] for c in searched["chats"]] == [NEWSLETTER]
    code, _ = await world.mesh.get_json(f"/api/v1/{instance}/chats", chat_type="private")
    assert code == 422

    code, group = await world.mesh.get_json(f"/api/v1/{instance}/chats/{GROUP}")
    assert code == 200, group
    assert (group["name"], group["chat_type"], group["last_message_text"]) == ("Equipe Vendas", "group", "Bom dia")
    code, missing = await world.mesh.get_json(f"/api/v1/{instance}/chats/5511000000000@s.whatsapp.net")
    assert (code, missing["reason"]) == (404, "CHAT_NOT_FOUND")


async def test_channels_show_the_whatsapp_account_with_its_status(world: World) -> None:
    instance = await world.new_instance()

    code, body = await world.mesh.get_json(f"/api/v1/{instance}/channels")

    assert code == 200, body
    (channel,) = body["channels"]
    assert channel["instance_name"] == instance
    assert channel["channel_type"] == "whatsapp"
    assert channel["status"] == "connected"
    assert (channel["id"], channel["kind"]) == (instance, "account")


async def test_unknown_instances_are_404(world: World) -> None:
    for path in ("contacts", f"contacts/{MARIA}", "chats", f"chats/{GROUP}", "channels"):
        code, body = await world.mesh.get_json(f"/api/v1/nobody-here/{path}")
        assert code == 404, (path, body)
        assert body["reason"] == "INSTANCE_NOT_FOUND"
