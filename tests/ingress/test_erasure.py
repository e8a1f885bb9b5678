"""EraseUser in ingress: a person's inbox rows (and their files) go; in a group, the other members' stay."""

from __future__ import annotations

import pytest

from servicekit.database import Database
from servicekit.errors import InvalidArgumentError
from servicekit.messages import InboundMessage, Sender, message_to_json
from services.ingress.core.erasure import erase_user
from services.ingress.core.inbox import InboxRow
from services.ingress.storage import InboxStore

GROUP = "120363000000000001@g.us"
MARIA = "5511999990001@s.whatsapp.net"
MARIA_LID = "123456789012345@lid"
JOAO = "5511999990002@s.whatsapp.net"


def row(row_id: str, chat_id: str, sender: Sender, instance: str = "acme") -> InboxRow:
    message = InboundMessage(
        channel_message_id=f"WA-{row_id}", chat_id=chat_id, sender=sender, id=row_id, instance_name=instance
    )
    return InboxRow(
        id=row_id,
        instance_name=instance,
        channel="whatsapp",
        channel_message_id=f"WA-{row_id}",
        chat_id=chat_id,
        conversation_key=f"{instance}:{chat_id}",
        event="messages.upsert",
        message=message_to_json(message),
        traceparent="",
        sent_at=1.0,
        received_ns=1,
        state="handled",
        attempts=1,
        next_attempt_at=0.0,
        lease_owner=None,
        lease_until=None,
        last_error="",
        outcome="sent",
        dead_at=None,
        created_at=1.0,
        updated_at=1.0,
    )


async def ids(db: Database) -> list[str]:
    return sorted(r["id"] for r in await db.fetch("SELECT id FROM inbox"))


async def test_a_persons_rows_go_and_the_groups_others_stay(store: InboxStore, db: Database) -> None:
    await store.insert(row("m1", MARIA_LID, Sender(id=MARIA_LID, alt_id=MARIA)))
    await store.insert(row("m2", GROUP, Sender(id=MARIA)))
    await store.insert(row("m3", GROUP, Sender(id=JOAO)))
    await store.insert(row("m4", MARIA, Sender(id=MARIA), instance="other"))

    assert await erase_user(store, "acme", [MARIA_LID, GROUP], [MARIA, MARIA_LID]) == 2
    assert await ids(db) == ["m3", "m4"]
    assert await erase_user(store, "acme", [MARIA_LID, GROUP], [MARIA, MARIA_LID]) == 0


async def test_erasure_needs_an_instance_and_ids(store: InboxStore) -> None:
    with pytest.raises(InvalidArgumentError):
        await erase_user(store, "", [GROUP], [MARIA])
    assert await erase_user(store, "acme", [GROUP], []) == 0
