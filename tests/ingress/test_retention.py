"""Retention of the inbox on SQLite and PostgreSQL: finished rows go, dead letters and unfinished work stay."""

from __future__ import annotations

import time

from servicekit import errors
from servicekit.instances import Instance
from servicekit.messages import InboundMessage
from servicekit.retention import delivery_retention
from servicekit.settings import MeshSettings
from services.ingress.core.accept import IngressCore
from services.ingress.core.dispatcher import Dispatcher, RouteOutcome
from services.ingress.storage import InboxStore
from tests.helpers.instances import DictDirectory
from tests.ingress.support import FAST, FakeRouter, body, eventually, upsert

ACME = Instance(name="acme", webhook_auth="none")  # authentication is tested in test_webhook_auth.py
DAY = 86_400.0


async def accept(store: InboxStore, key_id: str, *, age_days: float, **kwargs: object) -> str:
    received_at = time.time() - age_days * DAY
    core = IngressCore(store, DictDirectory(ACME), clock=lambda: received_at)
    result = await core.receive_webhook("acme", "whatsapp", body(upsert(key_id, **kwargs)), {})  # type: ignore[arg-type]
    return result.message_id


async def test_the_sweep_deletes_only_old_finished_rows(store: InboxStore) -> None:
    async def route(message: InboundMessage, attempt: int) -> RouteOutcome:
        if message.text == "refused":
            raise errors.InvalidArgumentError("the router refuses this one")
        return RouteOutcome(outcome="sent")

    old_handled = await accept(store, "OLD-1", age_days=40, chat="551100000001@s.whatsapp.net")
    old_dead = await accept(store, "OLD-2", age_days=40, chat="551100000002@s.whatsapp.net", text="refused")
    recent_handled = await accept(store, "NEW-1", age_days=1, chat="551100000003@s.whatsapp.net")
    old_own_send = await accept(store, "OLD-3", age_days=40, from_me=True)
    dispatcher = Dispatcher(store, FakeRouter(behaviour=route), replica_id="r1", policy=FAST)
    await dispatcher.start()
    try:
        await eventually(lambda: _states_are(store, {"handled": 2, "dead": 1, "ignored": 1}))
    finally:
        await dispatcher.stop(1.0)
    old_waiting = await accept(store, "OLD-4", age_days=40, chat="551100000004@s.whatsapp.net")

    sweep = delivery_retention("inbox rows", store.purge_finished, MeshSettings(delivery_retention_days=30))
    assert await sweep.run_once() == 2
    assert await store.get(old_handled) is None
    assert await store.get(old_own_send) is None
    for kept in (old_dead, recent_handled, old_waiting):
        assert await store.get(kept) is not None
    assert await store.count_by_state() == {"handled": 1, "dead": 1, "received": 1}

    keep_all = delivery_retention("inbox rows", store.purge_finished, MeshSettings(delivery_retention_days=0))
    assert await keep_all.run_once() == 0


async def test_a_large_backlog_is_deleted_in_batches(store: InboxStore) -> None:
    for n in range(1203):
        await accept(store, f"OLD-{n}", age_days=40, from_me=True)  # own sends: stored as finished ("ignored")
    assert await store.purge_finished(time.time() - 30 * DAY) == 1203
    assert await store.count_by_state() == {}


async def _states_are(store: InboxStore, expected: dict[str, int]) -> bool:
    return await store.count_by_state() == expected
