"""PurgeInstance in ingress: a deleted instance's inbox rows, dead letters and bot lease go, and nothing else."""

from __future__ import annotations

import pytest

from servicekit import errors
from servicekit.database import Database
from servicekit.instances import Instance
from services.ingress.core.accept import IngressCore
from services.ingress.storage import BotLeaseStore, InboxStore
from tests.helpers.instances import DictDirectory
from tests.helpers.tenant_data import fill_ingress, inbound

ACME = Instance(name="acme", webhook_auth="none")
OTHER = Instance(name="other", webhook_auth="none")


async def test_purge_removes_every_row_of_the_instance_and_only_those(store: InboxStore, db: Database) -> None:
    leases = BotLeaseStore(db)
    core = IngressCore(store, DictDirectory(ACME, OTHER), also_purged=(leases,))
    await fill_ingress(core, store, leases, "acme")
    await fill_ingress(core, store, leases, "other")
    assert (await core.list_dead_letters("acme", 1, 50))[1] == 1

    assert await core.purge_instance("acme") == 3  # two inbox rows and the bot lease
    assert await core.purge_instance("acme") == 0  # idempotent

    assert await core.list_dead_letters("acme", 1, 50) == ([], 0)
    assert await leases.get("acme") is None
    # The recreated instance's first message is new, not a duplicate of the old instance's.
    again = await core.ingest_message(inbound("acme", "WA-1"))
    assert not again.duplicate
    # The other tenant kept everything.
    assert (await core.list_dead_letters("other", 1, 50))[1] == 1
    other_lease = await leases.get("other")
    assert other_lease is not None
    assert "99" in other_lease.cursors
    assert (await core.ingest_message(inbound("other", "WA-2"))).duplicate


async def test_purge_needs_a_name(store: InboxStore) -> None:
    with pytest.raises(errors.InvalidArgumentError):
        await IngressCore(store, DictDirectory()).purge_instance("")
