"""WhatsApp contacts and chats against the Evolution simulator: one fetch per instance and minute paged in memory,
totals, search, chat types, single reads, failures, and an order that growth only appends to."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from servicekit.errors import (
    FailedPreconditionError,
    InvalidArgumentError,
    NotFoundError,
    UnavailableError,
)
from servicekit.instances import Instance, WhatsAppConfig
from services.channels.core import directory
from services.channels.core.directory import ExpiringCache, Needle, chat_type_of, phone_number_of
from services.channels.core.evolution import EvolutionClient
from services.channels.core.evolution_directory import EvolutionDirectory, chat_from_record, contact_from_record
from services.channels.core.senders.slack import SlackSender
from services.channels.core.senders.whatsapp import EvolutionSender
from simulators.evolution import EvolutionSimulator
from tests.channels.conftest import EVOLUTION_INSTANCE, MakeHarness

MARIA = "5521991234567@s.whatsapp.net"
GROUP = "120363041857263915@g.us"


@pytest.fixture
async def client() -> AsyncIterator[EvolutionClient]:
    async with aiohttp.ClientSession() as session:
        yield EvolutionClient(session, timeout_seconds=10)


def sender_of(client: EvolutionClient, cache_seconds: float = 60.0) -> EvolutionSender:
    return EvolutionSender(client, directory=EvolutionDirectory(client, cache_seconds=cache_seconds))


def finds(sim: EvolutionSimulator, action: str) -> int:
    return sum(1 for _, path in sim.requests if path.startswith(f"/chat/{action}/"))


async def walk_contacts(sender: EvolutionSender, instance: Instance, page_size: int) -> list[str]:
    ids: list[str] = []
    page = 1
    while True:
        contacts, total = await directory.list_contacts_page(sender, instance, page=page, page_size=page_size)
        ids += [c.id for c in contacts]
        if page * page_size >= total:
            return ids
        page += 1


# ---------------------------------------------------------------------------------------------- contacts


async def test_ten_thousand_contacts_are_fetched_once_and_paged_in_memory(
    sim: EvolutionSimulator, instance: Instance, client: EvolutionClient
) -> None:
    seeded = sim.seed_contacts(EVOLUTION_INSTANCE, 10_000)
    sender = sender_of(client)
    started = time.perf_counter()

    first, total = await directory.list_contacts_page(sender, instance, page=1, page_size=50)
    ids = await walk_contacts(sender, instance, page_size=50)
    elapsed = time.perf_counter() - started

    assert total == 10_000
    assert [c.id for c in first] == [row["remoteJid"] for row in seeded[:50]], "oldest first"
    assert ids == [row["remoteJid"] for row in seeded]
    assert finds(sim, "findContacts") == 1, "201 page reads, one Evolution request"
    assert elapsed < 10, f"paging 10,000 contacts took {elapsed:.1f}s"
    last, _ = await directory.list_contacts_page(sender, instance, page=20, page_size=500)
    assert [c.id for c in last] == [row["remoteJid"] for row in seeded[-500:]]
    beyond, total = await directory.list_contacts_page(sender, instance, page=21, page_size=500)
    assert (beyond, total) == ([], 10_000)


async def test_page_size_is_defaulted_and_capped(
    sim: EvolutionSimulator, instance: Instance, client: EvolutionClient
) -> None:
    sim.seed_contacts(EVOLUTION_INSTANCE, 600)
    sender = sender_of(client)

    default, _ = await directory.list_contacts_page(sender, instance, page=0, page_size=0)
    capped, total = await directory.list_contacts_page(sender, instance, page=1, page_size=10_000)

    assert len(default) == 50
    assert (len(capped), total) == (500, 600)


async def test_contacts_are_people_with_their_phone_and_picture(
    sim: EvolutionSimulator, instance: Instance, client: EvolutionClient
) -> None:
    sim.add_contact(EVOLUTION_INSTANCE, MARIA, "Maria Souza", profile_pic_url="https://pps.whatsapp.net/m.jpg")
    sim.add_contact(EVOLUTION_INSTANCE, "148203657712934@lid", "Ana P.")
    sim.add_contact(EVOLUTION_INSTANCE, GROUP, "Equipe", contact_type="group")
    sim.add_contact(EVOLUTION_INSTANCE, "97315264018832@lid", "Carlos", contact_type="group_member")
    sim.add_contact(EVOLUTION_INSTANCE, "5531900000000@s.whatsapp.net", None)

    contacts, total = await directory.list_contacts_page(sender_of(client), instance, page=1, page_size=50)

    assert total == 3, "groups are chats and group members are not the account's contacts"
    maria, ana, nameless = contacts
    assert (maria.id, maria.name, maria.phone_number) == (MARIA, "Maria Souza", "+5521991234567")
    assert maria.avatar_url == "https://pps.whatsapp.net/m.jpg"
    assert (ana.id, ana.name, ana.phone_number) == ("148203657712934@lid", "Ana P.", ""), "a LID is no phone"
    assert nameless.name == "+5531900000000", "a contact without a pushName is called by its number"


@pytest.mark.parametrize(
    ("search", "expected"),
    [
        ("maria", ["Maria Souza"]),
        ("SOUZA", ["Maria Souza"]),
        ("+55 21 99123-4567", ["Maria Souza"]),
        ("553198", ["Carlos"]),
        ("@lid", ["Ana P."]),
        ("a", ["Maria Souza", "Carlos", "Ana P."]),
        ("nobody", []),
    ],
)
async def test_search_is_case_insensitive_on_name_phone_and_id(
    sim: EvolutionSimulator, instance: Instance, client: EvolutionClient, search: str, expected: list[str]
) -> None:
    sim.add_contact(EVOLUTION_INSTANCE, MARIA, "Maria Souza")
    sim.add_contact(EVOLUTION_INSTANCE, "5531988776655@s.whatsapp.net", "Carlos")
    sim.add_contact(EVOLUTION_INSTANCE, "148203657712934@lid", "Ana P.")

    found, total = await directory.list_contacts_page(sender_of(client), instance, page=1, page_size=50, search=search)

    assert [c.name for c in found] == expected
    assert total == len(expected)


async def test_search_total_counts_every_match_across_pages(
    sim: EvolutionSimulator, instance: Instance, client: EvolutionClient
) -> None:
    sim.seed_contacts(EVOLUTION_INSTANCE, 300, name_prefix="Cliente")
    sim.seed_contacts(EVOLUTION_INSTANCE, 200, name_prefix="Fornecedor")

    page, total = await directory.list_contacts_page(
        sender_of(client), instance, page=2, page_size=150, search="fornecedor"
    )

    assert total == 200
    assert len(page) == 50
    assert all(c.name.startswith("Fornecedor") for c in page)


async def test_a_contact_is_read_fresh_by_its_id_or_number(
    sim: EvolutionSimulator, instance: Instance, client: EvolutionClient
) -> None:
    sender = sender_of(client)
    await directory.list_contacts_page(sender, instance, page=1, page_size=50)  # the (empty) list is now cached
    sim.add_contact(EVOLUTION_INSTANCE, MARIA, "Maria Souza")
    sim.add_contact(EVOLUTION_INSTANCE, "97315264018832@lid", "Carlos", contact_type="group_member")

    by_jid = await directory.find_contact(sender, instance, MARIA)
    by_number = await directory.find_contact(sender, instance, "+55 (21) 99123-4567")

    assert by_jid == by_number
    assert (by_jid.name, by_jid.phone_number) == ("Maria Souza", "+5521991234567")
    with pytest.raises(NotFoundError) as missing:
        await directory.find_contact(sender, instance, "5511000000000@s.whatsapp.net")
    assert missing.value.reason == "CONTACT_NOT_FOUND"
    with pytest.raises(NotFoundError):
        await directory.find_contact(sender, instance, "97315264018832@lid")  # not a listed contact either
    with pytest.raises(InvalidArgumentError):
        await directory.find_contact(sender, instance, "  ")


# ---------------------------------------------------------------------------------------------- chats


async def test_chats_have_their_type_from_the_jid_and_filter_on_it(
    sim: EvolutionSimulator, instance: Instance, client: EvolutionClient
) -> None:
    sim.add_chat(EVOLUTION_INSTANCE, MARIA, "Maria Souza", unread_count=2, last_text="Oi!", last_timestamp=1764945130)
    sim.add_chat(EVOLUTION_INSTANCE, GROUP, "Equipe Vendas")
    sim.add_chat(EVOLUTION_INSTANCE, "120363999999999999@newsletter", "Novidades")
    sim.add_chat(EVOLUTION_INSTANCE, "148203657712934@lid", "Ana P.")
    sim.add_chat(EVOLUTION_INSTANCE, "status@broadcast", None, last_text="a status")
    sender = sender_of(client)

    chats, total = await directory.list_chats_page(sender, instance, page=1, page_size=50)
    groups, group_total = await directory.list_chats_page(sender, instance, page=1, page_size=50, chat_type="group")
    found, _ = await directory.list_chats_page(sender, instance, page=1, page_size=50, search="VENDAS")

    assert total == 4, "the status feed is no chat"
    assert [(c.name, c.chat_type) for c in chats] == [
        ("Maria Souza", "direct"),
        ("Equipe Vendas", "group"),
        ("Novidades", "channel"),
        ("Ana P.", "direct"),
    ]
    maria = chats[0]
    assert (maria.unread_count, maria.last_message_at, maria.last_message_text) == (2, 1764945130.0, "Oi!")
    assert ([c.id for c in groups], group_total) == ([GROUP], 1)
    assert [c.id for c in found] == [GROUP]
    with pytest.raises(InvalidArgumentError):
        await directory.list_chats_page(sender, instance, page=1, page_size=50, chat_type="private")


async def test_a_chat_is_read_fresh_and_unknown_ones_are_not_found(
    sim: EvolutionSimulator, instance: Instance, client: EvolutionClient
) -> None:
    sender = sender_of(client)
    await directory.list_chats_page(sender, instance, page=1, page_size=50)
    sim.add_chat(EVOLUTION_INSTANCE, GROUP, "Equipe Vendas", unread_count=5)

    chat = await directory.find_chat(sender, instance, GROUP)

    assert (chat.id, chat.name, chat.chat_type, chat.unread_count) == (GROUP, "Equipe Vendas", "group", 5)
    with pytest.raises(NotFoundError) as missing:
        await directory.find_chat(sender, instance, MARIA)
    assert missing.value.reason == "CHAT_NOT_FOUND"


def test_chat_types_from_jids() -> None:
    assert chat_type_of(GROUP) == "group"
    assert chat_type_of(MARIA) == "direct"
    assert chat_type_of("148203657712934@lid") == "direct"
    assert chat_type_of("120363999999999999@newsletter") == "channel"
    assert chat_type_of("1764945130@broadcast") == "channel"
    assert phone_number_of("5521991234567:12@s.whatsapp.net") == "+5521991234567"
    assert phone_number_of(GROUP) == phone_number_of("148203657712934@lid") == ""


def test_the_rest_fixtures_map_to_a_contact_and_a_chat(evolution_fixtures: Path) -> None:
    contacts = json.loads((evolution_fixtures / "rest" / "find-contacts.json").read_text())["response"]["body"]
    chats = json.loads((evolution_fixtures / "rest" / "find-chats.json").read_text())["response"]["body"]

    contact = contact_from_record(contacts[0])
    chat = chat_from_record(chats[0])

    assert contact is not None
    assert (contact.id, contact.name, contact.phone_number) == (MARIA, "Maria Souza", "+5521991234567")
    assert contact.avatar_url.startswith("https://pps.whatsapp.net/")
    assert chat is not None
    assert (chat.id, chat.name, chat.chat_type, chat.unread_count) == (MARIA, "Maria Souza", "direct", 0)
    assert chat.last_message_at == 1764945130.0
    assert chat.last_message_text == "Olá Maria! Seu pedido #4821 foi confirmado."


# ---------------------------------------------------------------------------------------------- failures


async def test_evolution_down_is_unavailable_with_a_reason(instance: Instance, client: EvolutionClient) -> None:
    config = instance.config_of(WhatsAppConfig)
    gone = Instance(  # port 9 (discard): nobody listens there
        name="gone",
        config=WhatsAppConfig(
            evolution_url="http://127.0.0.1:9", evolution_key="k", whatsapp_instance=config.whatsapp_instance
        ),
    )

    with pytest.raises(UnavailableError) as down:
        await directory.list_contacts_page(sender_of(client), gone, page=1, page_size=50)
    assert down.value.reason == "CHANNEL_UNAVAILABLE"
    assert "cannot connect to Evolution" in down.value.message
    with pytest.raises(UnavailableError):
        await directory.find_chat(sender_of(client), gone, MARIA)


async def test_a_refused_key_is_the_channels_refusal(instance: Instance, client: EvolutionClient) -> None:
    config = instance.config_of(WhatsAppConfig)
    wrong = Instance(
        name="acme",
        config=WhatsAppConfig(
            evolution_url=config.evolution_url, evolution_key="wrong", whatsapp_instance=config.whatsapp_instance
        ),
    )

    with pytest.raises(FailedPreconditionError) as refused:
        await directory.list_chats_page(sender_of(client), wrong, page=1, page_size=50)
    assert refused.value.reason == "EVOLUTION_UNAUTHORIZED"


async def test_failures_are_not_cached(sim: EvolutionSimulator, instance: Instance, client: EvolutionClient) -> None:
    sim.seed_contacts(EVOLUTION_INSTANCE, 3)
    sender = sender_of(client)
    sim.state.instances[EVOLUTION_INSTANCE].token = "rotated"

    with pytest.raises(FailedPreconditionError):
        await directory.list_contacts_page(sender, instance, page=1, page_size=50)
    sim.state.instances[EVOLUTION_INSTANCE].token = instance.config_of(WhatsAppConfig).evolution_key
    _, total = await directory.list_contacts_page(sender, instance, page=1, page_size=50)

    assert total == 3


# ---------------------------------------------------------------------------------------------- the cache


async def test_concurrent_pages_share_one_fetch(
    sim: EvolutionSimulator, instance: Instance, client: EvolutionClient
) -> None:
    sim.seed_contacts(EVOLUTION_INSTANCE, 2_000)
    sender = sender_of(client)

    pages = await asyncio.gather(
        *(directory.list_contacts_page(sender, instance, page=p, page_size=100) for p in range(1, 21))
    )

    assert len({c.id for contacts, _ in pages for c in contacts}) == 2_000
    assert finds(sim, "findContacts") == 1


async def test_the_list_is_fetched_again_after_the_cache_time() -> None:
    now = [0.0]
    cache: ExpiringCache[str, int] = ExpiringCache(60.0, clock=lambda: now[0])
    loads: list[int] = []

    async def load() -> int:
        loads.append(1)
        return len(loads)

    assert await cache.get("acme", load) == 1
    now[0] = 59.0
    assert await cache.get("acme", load) == 1
    assert await cache.get("globex", load) == 2, "one entry per instance"
    now[0] = 60.5
    assert await cache.get("acme", load) == 3


async def test_a_caller_giving_up_does_not_cancel_the_shared_fetch() -> None:
    cache: ExpiringCache[str, str] = ExpiringCache(60.0)
    release = asyncio.Event()

    async def slow() -> str:
        await release.wait()
        return "list"

    impatient = asyncio.create_task(cache.get("acme", slow))
    patient = asyncio.create_task(cache.get("acme", slow))
    await asyncio.sleep(0.01)
    impatient.cancel()
    release.set()

    assert await patient == "list"
    assert await cache.get("acme", slow) == "list"


async def test_a_sender_change_of_evolution_account_is_another_cache_entry(
    sim: EvolutionSimulator, instance: Instance, client: EvolutionClient
) -> None:
    sim.seed_contacts(EVOLUTION_INSTANCE, 2)
    other = sim.add_instance("globex-support")
    sim.seed_contacts("globex-support", 5)
    sender = sender_of(client)
    moved = Instance(
        name="acme",
        config=WhatsAppConfig(evolution_url=sim.url, evolution_key=other, whatsapp_instance="globex-support"),
    )

    _, before = await directory.list_contacts_page(sender, instance, page=1, page_size=50)
    _, after = await directory.list_contacts_page(sender, moved, page=1, page_size=50)

    assert (before, after) == (2, 5)


def test_needle_matches_digits_of_phone_searches() -> None:
    needle = Needle.of(" +55 (21) 9912 ")
    assert needle is not None
    assert needle.found_in("+5521991234567")
    assert not needle.found_in("Maria")
    assert Needle.of("   ") is None


# ---------------------------------------------------------------------------------------------- through the core


async def test_the_core_pages_whatsapp_contacts_and_chats(sim: EvolutionSimulator, make_harness: MakeHarness) -> None:
    sim.seed_contacts(EVOLUTION_INSTANCE, 120)
    sim.add_chat(EVOLUTION_INSTANCE, GROUP, "Equipe Vendas")
    core = make_harness().core

    contacts, total = await core.list_contacts("acme", page=3, page_size=50)
    chats, chat_total = await core.list_chats("acme", page=1, page_size=10, chat_type="group")
    chat = await core.get_chat("acme", GROUP)
    contact = await core.get_contact("acme", contacts[0].id)

    assert (len(contacts), total) == (20, 120)
    assert ([c.id for c in chats], chat_total) == ([GROUP], 1)
    assert chat.name == "Equipe Vendas"
    assert contact == contacts[0]
    with pytest.raises(NotFoundError):
        await core.list_chats("nope", page=1, page_size=10)


# ---------------------------------------------------------------------------------------------- growth


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    initial=st.integers(min_value=0, max_value=120),
    page_size=st.integers(min_value=1, max_value=40),
    growth=st.lists(st.integers(min_value=0, max_value=15), min_size=1, max_size=30),
)
async def test_paging_while_contacts_are_added_loses_and_repeats_nothing(
    sim: EvolutionSimulator, client: EvolutionClient, initial: int, page_size: int, growth: list[int]
) -> None:
    """Every page is a fresh fetch (no cache) and contacts are saved between page requests: each contact that
    existed when paging began is seen exactly once, and nothing is seen twice."""
    name = f"grow-{time.perf_counter_ns()}"
    token = sim.add_instance(name)
    instance = Instance(
        name=name, config=WhatsAppConfig(evolution_url=sim.url, evolution_key=token, whatsapp_instance=name)
    )
    before = {row["remoteJid"] for row in sim.seed_contacts(name, initial)}
    sender = sender_of(client, cache_seconds=0)
    seen: list[str] = []
    page = 1
    while True:
        contacts, total = await directory.list_contacts_page(sender, instance, page=page, page_size=page_size)
        seen += [c.id for c in contacts]
        if page * page_size >= total:
            break
        if page <= len(growth):  # growth stops at some point, or a small page size would never reach the end
            sim.seed_contacts(name, growth[page - 1])
        page += 1

    assert len(seen) == len(set(seen)), "a contact was repeated"
    assert before <= set(seen), "a contact was lost"


async def test_a_channel_without_chats_answers_chats_not_listed(instance: Instance) -> None:
    slack = SlackSender(api_url="http://127.0.0.1:9/api/")  # never called: the refusal comes first
    try:
        with pytest.raises(FailedPreconditionError) as refused:
            await directory.list_chats_page(slack, instance, page=1, page_size=50)
        assert refused.value.reason == "CHATS_NOT_LISTED"
        with pytest.raises(FailedPreconditionError):
            await directory.find_chat(slack, instance, "C0GENERAL")
    finally:
        await slack.aclose()
