"""The outbox per tenant, on SQLite and PostgreSQL against the Evolution simulator: a key reused for another
message is refused (IDEMPOTENCY_KEY_REUSED), and PurgeInstance removes a deleted instance's parts and keys."""

from __future__ import annotations

import dataclasses

import pytest

from servicekit.database import Database
from servicekit.errors import AlreadyExistsError, InvalidArgumentError
from servicekit.instances import Instance
from services.channels.core.models import OutboundPart, PartState, SendRequest
from services.channels.core.outbox import REASON_KEY_REUSED
from simulators.evolution import EvolutionSimulator
from tests.channels.conftest import CHAT, MakeHarness


def request(key: str, *texts: str, instance: str = "acme", chat_id: str = CHAT) -> SendRequest:
    return SendRequest(
        instance_name=instance, chat_id=chat_id, idempotency_key=key, parts=[OutboundPart(text=t) for t in texts]
    )


async def parts_of(db: Database, instance_name: str) -> int:
    return int(await db.fetchval("SELECT count(*) FROM outbox_parts WHERE instance_name = $1", instance_name))


async def test_same_key_same_message_sends_once_and_answers_the_same(
    make_harness: MakeHarness, sim: EvolutionSimulator
) -> None:
    core = make_harness().core
    first = await core.send_message(request("k-1", "hello", "again"))
    second = await core.send_message(request("k-1", "hello", "again"))
    assert first == second
    assert [m.text for m in sim.sent] == ["hello", "again"]


@pytest.mark.parametrize(
    "changed",
    [
        request("k-2", "something else"),
        request("k-2", "hello", chat_id="5521990000000"),
        request("k-2", "hello", "and more"),  # a longer message: its extra part must not stay behind
        dataclasses.replace(request("k-2", "hello"), thread_id="T"),
    ],
    ids=["text", "recipient", "more-parts", "thread"],
)
async def test_same_key_different_message_is_refused(
    make_harness: MakeHarness, sim: EvolutionSimulator, db: Database, changed: SendRequest
) -> None:
    core = make_harness().core
    await core.send_message(request("k-2", "hello"))
    with pytest.raises(AlreadyExistsError) as refused:
        await core.send_message(changed)
    assert refused.value.reason == REASON_KEY_REUSED
    assert [m.text for m in sim.sent] == ["hello"]
    assert await parts_of(db, "acme") == 1
    assert [r.state for r in await core.send_message(request("k-2", "hello"))] == [PartState.SENT]


async def test_a_key_of_another_instance_is_refused(make_harness: MakeHarness, instance: Instance) -> None:
    harness = make_harness()
    harness.directory.instances["beta"] = dataclasses.replace(instance, name="beta")
    await harness.core.send_message(request("shared", "hello"))
    with pytest.raises(AlreadyExistsError):
        await harness.core.send_message(request("shared", "hello", instance="beta"))


async def test_purge_removes_the_instance_parts_and_frees_its_keys(
    make_harness: MakeHarness, sim: EvolutionSimulator, db: Database, instance: Instance
) -> None:
    harness = make_harness()
    harness.directory.instances["beta"] = dataclasses.replace(instance, name="beta")
    await harness.core.send_message(request("acme-key", "one", "two"))
    await harness.core.send_message(request("beta-key", "three", instance="beta"))

    assert await harness.core.purge_instance("acme") == 2
    assert await harness.core.purge_instance("acme") == 0
    assert await parts_of(db, "acme") == 0
    assert await harness.outbox.results("acme-key") == []
    assert await parts_of(db, "beta") == 1

    # A new instance of the same name may use the key again, for another message: it is sent, not refused.
    await harness.core.send_message(request("acme-key", "fresh"))
    assert [m.text for m in sim.sent] == ["one", "two", "three", "fresh"]


async def test_purge_needs_a_name(make_harness: MakeHarness) -> None:
    with pytest.raises(InvalidArgumentError):
        await make_harness().core.purge_instance("")
