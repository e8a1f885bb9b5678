"""The inbox backlog gauge counts accepted messages that are not handled yet, from the inbox rows every replica
shares (SQLite and PostgreSQL)."""

from __future__ import annotations

from servicekit.instances import Instance
from services.ingress.core.accept import ACCEPTED, DUPLICATE, IngressCore
from services.ingress.storage import InboxStore
from tests.helpers.instances import DictDirectory
from tests.ingress.support import body, upsert

ACME = Instance(name="acme", id="id-acme", webhook_auth="none")


async def test_the_backlog_counts_unhandled_messages_once(store: InboxStore) -> None:
    ingress = IngressCore(store, DictDirectory(ACME))
    assert await store.count_backlog() == 0
    for key_id in ("B1", "B2", "B1"):  # the repeat is a duplicate, not more backlog
        result = await ingress.receive_webhook("acme", None, body(upsert(key_id)), {})
        assert result.disposition in (ACCEPTED, DUPLICATE)
    assert await store.count_backlog() == 2
