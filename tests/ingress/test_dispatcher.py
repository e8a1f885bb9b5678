"""Delivery from the inbox to the router on SQLite and PostgreSQL: order, retries, dead letters, leases, replicas."""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from dataclasses import replace

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

from servicekit import errors
from servicekit import trace_attributes as attrs
from servicekit.database import open_database
from servicekit.instances import Instance
from servicekit.messages import InboundMessage
from services.ingress.core.accept import ACCEPTED, IngressCore
from services.ingress.core.dispatcher import Dispatcher, RouteOutcome
from services.ingress.storage import SCHEMA, InboxStore
from tests.helpers.instances import DictDirectory
from tests.ingress.support import FAST, FakeRouter, body, eventually, upsert

ACME = Instance(name="acme", webhook_auth="none")  # authentication is tested in test_webhook_auth.py


def make_core(store: InboxStore, dispatcher: Dispatcher | None = None, **kwargs: object) -> IngressCore:
    wake = dispatcher.wake if dispatcher is not None else None
    return IngressCore(store, DictDirectory(ACME), on_accept=wake, **kwargs)  # type: ignore[arg-type]


async def accept(core: IngressCore, key_id: str, **kwargs: object) -> str:
    result = await core.receive_webhook("acme", "whatsapp", body(upsert(key_id, **kwargs)), {})  # type: ignore[arg-type]
    assert result.disposition == ACCEPTED
    return result.message_id


async def states(store: InboxStore) -> dict[str, int]:
    return await store.count_by_state()


async def all_in(store: InboxStore, state: str, count: int) -> bool:
    return (await states(store)).get(state, 0) == count


async def test_conversations_keep_order_and_run_in_parallel(store: InboxStore) -> None:
    chats, per_chat = 20, 10
    rng = random.Random(7)

    async def slow(message: InboundMessage, attempt: int) -> RouteOutcome:
        await asyncio.sleep(rng.uniform(0.0, 0.01))
        return RouteOutcome(outcome="sent")

    router = FakeRouter(behaviour=slow)
    dispatcher = Dispatcher(store, router, replica_id="r1", policy=FAST)
    core = make_core(store, dispatcher)
    arrivals = [(c, n) for c in range(chats) for n in range(per_chat)]
    rng.shuffle(arrivals)  # Evolution gives no ordering guarantee: sent_at decides
    for chat, n in arrivals:
        await accept(core, f"C{chat}-M{n}", chat=f"55119000{chat:05d}@s.whatsapp.net", ts=1764945000 + n, text=str(n))
    await dispatcher.start()
    try:
        await eventually(lambda: all_in(store, "handled", chats * per_chat), timeout=60)
    finally:
        await dispatcher.stop(1.0)
    order: dict[str, list[int]] = {}
    for call in router.calls:
        order.setdefault(call.message.chat_id, []).append(int(call.message.text))
    assert len(order) == chats
    assert all(seq == list(range(per_chat)) for seq in order.values()), order
    assert router.max_active_per_chat == 1
    assert router.max_active_total > 1, "different conversations must run in parallel"
    assert len(router.calls) == chats * per_chat


async def test_next_message_of_a_conversation_waits_for_the_previous(store: InboxStore) -> None:
    release = asyncio.Event()

    async def blocking(message: InboundMessage, attempt: int) -> RouteOutcome:
        if message.text == "first":
            await release.wait()
        return RouteOutcome(outcome="sent")

    router = FakeRouter(behaviour=blocking)
    dispatcher = Dispatcher(store, router, replica_id="r1", policy=FAST)
    core = make_core(store, dispatcher)
    await dispatcher.start()
    try:
        await accept(core, "A1", text="first", ts=100)
        await eventually(lambda: _calls(router, 1))
        await accept(core, "A2", text="second", ts=101)
        await accept(core, "B1", text="other chat", chat="5531988776655@s.whatsapp.net", ts=102)
        await eventually(lambda: _calls(router, 2))
        await asyncio.sleep(0.2)
        assert [c.message.text for c in router.calls] == ["first", "other chat"]
        release.set()
        await eventually(lambda: all_in(store, "handled", 3))
        assert [c.message.text for c in router.calls] == ["first", "other chat", "second"]
    finally:
        await dispatcher.stop(1.0)


async def test_transient_failures_are_retried_with_backoff(store: InboxStore) -> None:
    async def flaky(message: InboundMessage, attempt: int) -> RouteOutcome:
        if attempt == 1:
            raise errors.UnavailableError("agent down")
        if attempt == 2:
            raise errors.DeadlineExceededError("too slow")
        return RouteOutcome(outcome="sent")

    router = FakeRouter(behaviour=flaky)
    dispatcher = Dispatcher(store, router, replica_id="r1", policy=FAST)
    core = make_core(store, dispatcher)
    await dispatcher.start()
    try:
        message_id = await accept(core, "FLAKY")
        await eventually(lambda: all_in(store, "handled", 1))
    finally:
        await dispatcher.stop(1.0)
    assert [(c.attempt, c.final_attempt) for c in router.calls] == [(1, False), (2, False), (3, False)]
    row = await store.get(message_id)
    assert row is not None
    assert (row.attempts, row.outcome, row.lease_owner) == (3, "sent", None)
    assert "too slow" in row.last_error
    assert {c.message.id for c in router.calls} == {message_id}


async def test_retry_after_is_a_minimum_delay(store: InboxStore) -> None:
    async def throttled(message: InboundMessage, attempt: int) -> RouteOutcome:
        if attempt == 1:
            raise errors.UnavailableError("slow down", retry_after=0.5)
        return RouteOutcome(outcome="sent")

    router = FakeRouter(behaviour=throttled)
    dispatcher = Dispatcher(store, router, replica_id="r1", policy=FAST)
    await dispatcher.start()
    try:
        await accept(make_core(store, dispatcher), "RA")
        await eventually(lambda: all_in(store, "handled", 1))
    finally:
        await dispatcher.stop(1.0)
    assert router.calls[1].started - router.calls[0].ended >= 0.45


def test_backoff_is_full_jitter_exponential_and_capped(store: InboxStore) -> None:
    policy = replace(FAST, retry_base_seconds=0.5, retry_max_seconds=30.0)
    top = Dispatcher(store, FakeRouter(), replica_id="r", policy=policy, jitter=lambda: 1.0)
    assert [top.backoff(n) for n in range(1, 9)] == [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0]
    bottom = Dispatcher(store, FakeRouter(), replica_id="r", policy=policy, jitter=lambda: 0.0)
    assert bottom.backoff(5) == 0.0


async def test_max_attempts_dead_letter_then_redeliver(
    store: InboxStore, spans: tuple[TracerProvider, InMemorySpanExporter]
) -> None:
    provider, exporter = spans
    tracer = provider.get_tracer("test")
    healthy = False

    async def down(message: InboundMessage, attempt: int) -> RouteOutcome:
        if not healthy:
            raise errors.UnavailableError("agent unreachable")
        return RouteOutcome(outcome="sent")

    router = FakeRouter(behaviour=down)
    dispatcher = Dispatcher(store, router, replica_id="r1", policy=replace(FAST, max_attempts=3), tracer=tracer)
    core = make_core(store, dispatcher, tracer=tracer)
    await dispatcher.start()
    try:
        message_id = await accept(core, "DOOMED")
        await accept(core, "OTHER", chat="5531988776655@s.whatsapp.net")
        await eventually(lambda: all_in(store, "dead", 2))
        assert [(c.attempt, c.final_attempt) for c in router.calls if c.message.id == message_id] == [
            (1, False),
            (2, False),
            (3, True),
        ]
        letters, total = await core.list_dead_letters("acme", 1, 1)
        assert total == 2
        assert len(letters) == 1
        all_letters, _ = await core.list_dead_letters("", 0, 0)
        # Both died after their own jittered retries, so which is newest is not fixed; the page is one of the two.
        assert len(all_letters) == 2
        assert message_id in {letter.id for letter in all_letters}
        assert letters[0].id in {letter.id for letter in all_letters}
        assert [letter.dead_at for letter in all_letters] == sorted((x.dead_at for x in all_letters), reverse=True)
        assert (await core.list_dead_letters("nobody", 1, 10)) == ([], 0)
        letter = next(letter for letter in all_letters if letter.id == message_id)
        assert (letter.attempts, letter.message.channel_message_id) == (3, "DOOMED")
        assert "agent unreachable" in letter.last_error
        assert letter.trace_id
        assert letter.dead_at > 0

        dead_spans = [s for s in exporter.get_finished_spans() if s.name == "ingress.dead_letter"]
        span = next(s for s in dead_spans if s.attributes and s.attributes[attrs.MESSAGE_ID] == message_id)
        assert span.attributes is not None
        assert span.attributes[attrs.STATUS] == "error"
        assert span.attributes[attrs.ERROR_MESSAGE] == (
            "dead-lettered after 3 attempts: UNAVAILABLE: agent unreachable"
        )
        assert format(span.context.trace_id, "032x") == letter.trace_id
        assert span.status.status_code is StatusCode.ERROR

        healthy = True
        before = len(router.calls)
        assert await core.redeliver_dead_letter(message_id) == message_id
        await eventually(lambda: _state_is(store, message_id, "handled"))
        await asyncio.sleep(0.2)
        redelivered = [c for c in router.calls[before:] if c.message.id == message_id]
        assert [(c.attempt, c.final_attempt) for c in redelivered] == [(1, False)]
        with pytest.raises(errors.FailedPreconditionError):
            await core.redeliver_dead_letter(message_id)
        with pytest.raises(errors.NotFoundError):
            await core.redeliver_dead_letter("no-such-id")
        assert (await core.list_dead_letters("acme", 1, 50))[1] == 1
    finally:
        await dispatcher.stop(1.0)


@pytest.mark.parametrize(
    ("error", "reason"),
    [
        (errors.NotFoundError("instance 'acme' not found"), "not found"),
        (errors.InvalidArgumentError("missing ids"), "INVALID_ARGUMENT"),
        (errors.FailedPreconditionError("refused"), "FAILED_PRECONDITION"),
        (errors.InternalError("bug"), "INTERNAL"),
    ],
)
async def test_final_errors_dead_letter_at_once(store: InboxStore, error: errors.OmniError, reason: str) -> None:
    async def failing(message: InboundMessage, attempt: int) -> RouteOutcome:
        raise error

    router = FakeRouter(behaviour=failing)
    dispatcher = Dispatcher(store, router, replica_id="r1", policy=FAST)
    await dispatcher.start()
    try:
        message_id = await accept(make_core(store, dispatcher), "FINAL")
        await eventually(lambda: all_in(store, "dead", 1))
    finally:
        await dispatcher.stop(1.0)
    assert len(router.calls) == 1
    row = await store.get(message_id)
    assert row is not None
    assert row.attempts == 1
    assert reason in row.last_error


async def test_router_outcomes_are_recorded(store: InboxStore) -> None:
    async def blocked(message: InboundMessage, attempt: int) -> RouteOutcome:
        return RouteOutcome(outcome="blocked", error_message="not allowed")

    dispatcher = Dispatcher(store, FakeRouter(behaviour=blocked), replica_id="r1", policy=FAST)
    await dispatcher.start()
    try:
        message_id = await accept(make_core(store, dispatcher), "BLK")
        await eventually(lambda: all_in(store, "handled", 1))
    finally:
        await dispatcher.stop(1.0)
    row = await store.get(message_id)
    assert row is not None
    assert row.outcome == "blocked"


async def test_expired_lease_of_a_dead_replica_is_taken_over(store: InboxStore) -> None:
    message_id = await accept(make_core(store), "GHOST")
    claimed = await store.claim("ghost", 10, time.time(), lease_seconds=0.3)
    assert [r.id for r in claimed] == [message_id]
    router = FakeRouter()
    dispatcher = Dispatcher(store, router, replica_id="r1", policy=FAST)
    await dispatcher.start()
    try:
        await asyncio.sleep(0.1)
        assert router.calls == [], "the lease is still valid"
        await eventually(lambda: all_in(store, "handled", 1))
    finally:
        await dispatcher.stop(1.0)
    assert [(c.message.id, c.attempt) for c in router.calls] == [(message_id, 2)]


async def test_restart_takes_own_leases_back_at_once(store: InboxStore) -> None:
    message_id = await accept(make_core(store), "KILLED")
    await store.claim("r1", 10, time.time(), lease_seconds=3600)  # then the process was SIGKILLed
    router = FakeRouter()
    dispatcher = Dispatcher(store, router, replica_id="r1", policy=FAST)
    await dispatcher.start()
    try:
        await eventually(lambda: all_in(store, "handled", 1), timeout=5)
    finally:
        await dispatcher.stop(1.0)
    assert router.ids() == [message_id]


async def test_graceful_stop_leaves_unfinished_work_leased_for_the_restart(store: InboxStore) -> None:
    forever = asyncio.Event()

    async def stuck(message: InboundMessage, attempt: int) -> RouteOutcome:
        await forever.wait()
        return RouteOutcome(outcome="sent")

    first = Dispatcher(store, FakeRouter(behaviour=stuck), replica_id="r1", policy=FAST)
    await first.start()
    message_id = await accept(make_core(store, first), "INFLIGHT")
    await eventually(lambda: _state_is(store, message_id, "dispatched"))
    started = time.monotonic()
    await first.stop(0.2)
    assert time.monotonic() - started < 2
    row = await store.get(message_id)
    assert row is not None
    assert (row.state, row.lease_owner) == ("dispatched", "r1")

    router = FakeRouter()
    second = Dispatcher(store, router, replica_id="r1", policy=FAST)
    await second.start()
    try:
        await eventually(lambda: all_in(store, "handled", 1), timeout=5)
    finally:
        await second.stop(1.0)
    assert router.ids() == [message_id]


async def test_heartbeat_keeps_the_lease_of_a_long_dispatch(store: InboxStore) -> None:
    async def long(message: InboundMessage, attempt: int) -> RouteOutcome:
        await asyncio.sleep(0.8)
        return RouteOutcome(outcome="sent")

    short_lease = replace(FAST, lease_seconds=0.3)
    router_a, router_b = FakeRouter(behaviour=long), FakeRouter()
    a = Dispatcher(store, router_a, replica_id="a", policy=short_lease)
    b = Dispatcher(store, router_b, replica_id="b", policy=short_lease)
    await a.start()
    await accept(make_core(store, a), "LONG")
    await eventually(lambda: _calls(router_a, 1))
    await b.start()
    try:
        await eventually(lambda: all_in(store, "handled", 1))
    finally:
        await a.stop(1.0)
        await b.stop(1.0)
    assert router_b.calls == [], "a renewed lease must not be taken over"


async def test_two_replicas_route_each_message_exactly_once(db_url: str, store: InboxStore) -> None:
    core = make_core(store)
    ids = [await accept(core, f"R{i}", chat=f"55119{i % 40:08d}@s.whatsapp.net", ts=1764945000 + i) for i in range(200)]

    async def jittery(message: InboundMessage, attempt: int) -> RouteOutcome:
        await asyncio.sleep(random.uniform(0, 0.005))
        return RouteOutcome(outcome="sent")

    other_db = await open_database(db_url, SCHEMA)
    routers = [FakeRouter(behaviour=jittery), FakeRouter(behaviour=jittery)]
    replicas = [
        Dispatcher(store, routers[0], replica_id="replica-a", policy=replace(FAST, concurrency=8)),
        Dispatcher(InboxStore(other_db), routers[1], replica_id="replica-b", policy=replace(FAST, concurrency=8)),
    ]
    try:
        await asyncio.gather(*(r.start() for r in replicas))
        await eventually(lambda: all_in(store, "handled", 200), timeout=60)
        await asyncio.gather(*(r.stop(1.0) for r in replicas))
    finally:
        await other_db.close()
    counts = Counter(routers[0].ids() + routers[1].ids())
    assert set(counts) == set(ids)
    assert set(counts.values()) == {1}
    assert routers[0].calls, "both replicas must have shared the work"
    assert routers[1].calls, "both replicas must have shared the work"


async def _state_is(store: InboxStore, message_id: str, state: str) -> bool:
    row = await store.get(message_id)
    return row is not None and row.state == state


async def _calls(router: FakeRouter, count: int) -> bool:
    return len(router.calls) >= count
