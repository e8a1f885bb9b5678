"""Per-instance data in each service, written through the services' own code, for the purge-on-delete tests: an
instance gets inbox messages (one of them dead-lettered), a bot lease with cursors, outbox parts and traces."""

from __future__ import annotations

import time

from servicekit.messages import InboundMessage, Sender
from services.channels.core.models import OutboundPart
from services.channels.storage import OutboxStore
from services.ingress.core.accept import IngressCore
from services.ingress.storage import BotLeaseStore, InboxStore
from services.tracing.core import TracingCore
from tests.tracing.builders import message_spans

OUTBOX_KEY = "api:reused-key"
"""The idempotency key every instance's outbox rows use (the same key in two tenants must not collide)."""


def trace_id_of(instance_name: str, n: int) -> str:
    """A 32-hex trace id distinct per instance and number."""
    return f"{abs(hash(instance_name)) % 10**12:012x}{n:020x}"[:32]


def inbound(instance_name: str, channel_message_id: str) -> InboundMessage:
    return InboundMessage(
        channel_message_id=channel_message_id,
        chat_id="5511999990001@s.whatsapp.net",
        sender=Sender(id="5511999990001@s.whatsapp.net"),
        instance_name=instance_name,
        text="hello",
    )


async def fill_ingress(core: IngressCore, store: InboxStore, leases: BotLeaseStore, instance_name: str) -> None:
    """Two messages (the first dead-lettered) and a bot lease with cursors."""
    for n in (1, 2):
        result = await core.ingest_message(inbound(instance_name, f"WA-{n}"))
        assert not result.duplicate
    now = time.time()
    for row in await store.claim(f"replica-{instance_name}", 100, now, lease_seconds=60):
        if row.instance_name == instance_name and row.channel_message_id == "WA-1":
            assert await store.mark_dead(row.id, f"replica-{instance_name}", "agent down", now)
        else:
            await store.mark_retry(row.id, f"replica-{instance_name}", now + 3600, "later", now)
    assert await leases.acquire(instance_name, "discord", "replica-x", now, 60)
    await leases.save_cursors(instance_name, "replica-x", '{"C1": {"id": "99"}}')


async def fill_channels(store: OutboxStore, instance_name: str) -> None:
    """One sent reply stored under the shared key, as the outbox keeps it."""
    rows = await store.insert_parts(
        f"{OUTBOX_KEY}:{instance_name}",
        instance_name,
        "5511999990001",
        [OutboundPart(text="hi")],
        time.time(),
        owner="w",
    )
    await store.mark_sent(rows[0].idempotency_key, 0, f"wamid-{instance_name}", time.time())
    await store.insert_parts(
        "agent-reply-1" if instance_name == "acme" else "agent-reply-2",
        instance_name,
        "5511999990001",
        [OutboundPart(text="a"), OutboundPart(text="b")],
        time.time(),
        owner="w",
    )


async def fill_tracing(core: TracingCore, instance_name: str) -> list[str]:
    """Two message traces of the instance; returns their ids."""
    ids = [trace_id_of(instance_name, n) for n in (1, 2)]
    for trace_id in ids:
        assert await core.ingest(message_spans(trace_id, instance=instance_name)) == 4
    return ids
