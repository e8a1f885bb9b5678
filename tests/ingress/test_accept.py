"""The accept path on SQLite and PostgreSQL: de-duplication before the answer, echoes, auth, traces."""

from __future__ import annotations

import asyncio
from pathlib import Path

import orjson
import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from servicekit import errors
from servicekit import trace_attributes as attrs
from servicekit.channels import Channel
from servicekit.database import Database
from servicekit.instances import DiscordConfig, Instance
from servicekit.messages import InboundMessage, Sender, message_from_json
from services.ingress.core.accept import ACCEPTED, DUPLICATE, IGNORED_DISPOSITION, IngressCore
from services.ingress.core.dispatcher import Dispatcher
from services.ingress.storage import InboxStore
from tests.helpers.instances import DictDirectory
from tests.ingress.support import FAST, FakeRouter, body, eventually, upsert

ACME = Instance(name="acme", webhook_auth="none")  # authentication is tested in test_webhook_auth.py
LOCKED = Instance(name="locked", webhook_secret="s3cret-value-0123456789")
DISCO = Instance(name="disco", config=DiscordConfig(bot_token="token"))


def make_core(store: InboxStore, **kwargs: object) -> IngressCore:
    return IngressCore(store, DictDirectory(ACME, LOCKED, DISCO), **kwargs)  # type: ignore[arg-type]


async def test_accepted_message_is_stored_before_the_answer(store: InboxStore) -> None:
    core = make_core(store)
    result = await core.receive_webhook("acme", "whatsapp", body(upsert("M1", text="oi")), {})
    assert (result.disposition, result.event) == (ACCEPTED, "messages.upsert")
    row = await store.get(result.message_id)
    assert row is not None
    assert (row.state, row.channel_message_id, row.instance_name, row.attempts) == ("received", "M1", "acme", 0)
    message = message_from_json(row.message)
    assert (message.id, message.text, message.instance_name) == (result.message_id, "oi", "acme")
    assert message.received_at > 0


async def test_duplicate_webhook_three_times_routes_once(store: InboxStore) -> None:
    router = FakeRouter()
    dispatcher = Dispatcher(store, router, replica_id="r1", policy=FAST)
    core = make_core(store, on_accept=dispatcher.wake)
    await dispatcher.start()
    try:
        payload = body(upsert("DUP"))
        results = [await core.receive_webhook("acme", "whatsapp", payload, {}) for _ in range(3)]
        assert [r.disposition for r in results] == [ACCEPTED, DUPLICATE, DUPLICATE]
        assert {r.message_id for r in results} == {results[0].message_id}
        await eventually(lambda: _state_is(store, results[0].message_id, "handled"))
        await asyncio.sleep(0.2)
        assert router.ids() == [results[0].message_id]
        assert await store.count_by_state() == {"handled": 1}
    finally:
        await dispatcher.stop(1.0)


async def test_concurrent_duplicates_store_one_row(store: InboxStore) -> None:
    router = FakeRouter()
    dispatcher = Dispatcher(store, router, replica_id="r1", policy=FAST)
    core = make_core(store, on_accept=dispatcher.wake)
    await dispatcher.start()
    try:
        payload = body(upsert("CONC"))
        results = await asyncio.gather(*(core.receive_webhook("acme", "whatsapp", payload, {}) for _ in range(3)))
        assert sorted(r.disposition for r in results) == sorted([ACCEPTED, DUPLICATE, DUPLICATE])
        accepted = next(r for r in results if r.disposition == ACCEPTED)
        await eventually(lambda: _state_is(store, accepted.message_id, "handled"))
        await asyncio.sleep(0.2)
        assert router.ids() == [accepted.message_id]
        assert await store.count_by_state() == {"handled": 1}
    finally:
        await dispatcher.stop(1.0)


async def test_same_id_on_other_instance_is_not_a_duplicate(store: InboxStore) -> None:
    core = make_core(store)
    first = await core.receive_webhook("acme", "whatsapp", body(upsert("SHARED")), {})
    second = await core.receive_webhook(
        "locked", "whatsapp", body(upsert("SHARED")), {"x-omni-webhook-secret": "s3cret-value-0123456789"}
    )
    assert (first.disposition, second.disposition) == (ACCEPTED, ACCEPTED)


async def test_own_send_makes_the_later_upsert_echo_a_duplicate(store: InboxStore, evolution_fixtures: Path) -> None:
    router = FakeRouter()
    core = make_core(store)
    send = (evolution_fixtures / "send-message-text.json").read_bytes()
    own = await core.receive_webhook("acme", "whatsapp", send, {})
    assert (own.disposition, own.reason, own.event) == (IGNORED_DISPOSITION, "own_send", "send.message")
    echo = await core.receive_webhook("acme", "whatsapp", body(upsert("3EB0C1A2B3D4E5F6071829")), {})
    assert (echo.disposition, echo.message_id) == (DUPLICATE, own.message_id)
    dispatcher = Dispatcher(store, router, replica_id="r1", policy=FAST)
    await dispatcher.start()
    await asyncio.sleep(0.2)
    await dispatcher.stop(1.0)
    assert router.calls == []
    assert await store.count_by_state() == {"ignored": 1}


async def test_from_me_is_recorded_as_ignored_and_deduplicated(store: InboxStore, evolution_fixtures: Path) -> None:
    core = make_core(store)
    payload = (evolution_fixtures / "messages-upsert-fromme.json").read_bytes()
    first = await core.receive_webhook("acme", "whatsapp", payload, {})
    assert (first.disposition, first.reason) == (IGNORED_DISPOSITION, "from_me")
    row = await store.get(first.message_id)
    assert row is not None
    assert row.state == "ignored"
    again = await core.receive_webhook("acme", "whatsapp", payload, {})
    assert again.disposition == DUPLICATE


async def test_non_message_events_are_ignored_without_a_row(store: InboxStore, evolution_fixtures: Path) -> None:
    core = make_core(store)
    for name in ("contacts-update.json", "presence-update.json", "connection-update-open.json", "call.json"):
        result = await core.receive_webhook("acme", "whatsapp", (evolution_fixtures / name).read_bytes(), {})
        assert (result.disposition, result.reason, result.message_id) == (IGNORED_DISPOSITION, "not_a_message", "")
    assert await store.count_by_state() == {}


@pytest.mark.parametrize("raw", [b"not json", b"[1, 2]", b'"text"', b""])
async def test_body_that_is_not_a_json_object_is_invalid(store: InboxStore, raw: bytes) -> None:
    with pytest.raises(errors.InvalidArgumentError):
        await make_core(store).receive_webhook("acme", "whatsapp", raw, {})


async def test_storage_failure_is_unavailable(db: Database, store: InboxStore) -> None:
    await db.close()
    with pytest.raises(errors.UnavailableError):
        await make_core(store).receive_webhook("acme", "whatsapp", body(upsert("DOWN")), {})


async def test_ingest_message(store: InboxStore) -> None:
    core = make_core(store)
    message = InboundMessage(
        channel_message_id="1234567890",
        chat_id="C42",
        sender=Sender(id="U7", display_name="Ana"),
        instance_name="disco",
        channel=Channel.DISCORD,
        message_type="text",
        text="hi",
        sent_at=1764945130.5,
    )
    first = await core.ingest_message(message)
    second = await core.ingest_message(message)
    assert not first.duplicate
    assert (second.duplicate, second.message_id) == (True, first.message_id)
    row = await store.get(first.message_id)
    assert row is not None
    assert (row.channel, row.state, row.sent_at) == ("discord", "received", 1764945130.5)
    with pytest.raises(errors.InvalidArgumentError) as invalid:
        await core.ingest_message(InboundMessage(channel_message_id="", chat_id="", sender=Sender(id="")))
    assert {v.field for v in invalid.value.violations} == {
        "message.instance_name",
        "message.channel_message_id",
        "message.chat_id",
    }
    with pytest.raises(errors.NotFoundError):
        await core.ingest_message(
            InboundMessage(channel_message_id="1", chat_id="c", sender=Sender(id="u"), instance_name="x")
        )


async def test_traces(
    store: InboxStore, spans: tuple[TracerProvider, InMemorySpanExporter], evolution_fixtures: Path
) -> None:
    provider, exporter = spans
    tracer = provider.get_tracer("test")
    router = FakeRouter()
    dispatcher = Dispatcher(store, router, replica_id="r1", policy=FAST, tracer=tracer)
    core = make_core(store, on_accept=dispatcher.wake, tracer=tracer)
    text = (evolution_fixtures / "messages-upsert-text.json").read_bytes()
    accepted = await core.receive_webhook("acme", "whatsapp", text, {})
    fromme = (evolution_fixtures / "messages-upsert-fromme.json").read_bytes()
    ignored = await core.receive_webhook("acme", "whatsapp", fromme, {})
    contacts = (evolution_fixtures / "contacts-update.json").read_bytes()
    await core.receive_webhook("acme", "whatsapp", contacts, {})
    duplicate = await core.receive_webhook("acme", "whatsapp", text, {})
    await dispatcher.start()
    try:
        await eventually(lambda: _state_is(store, accepted.message_id, "handled"))
    finally:
        await dispatcher.stop(1.0)

    finished = exporter.get_finished_spans()
    accepts = [s for s in finished if s.name == "ingress.accept"]
    assert len(accepts) == 4
    accept = accepts[0]
    assert accept.attributes is not None
    assert format(accept.context.trace_id, "032x") == accepted.trace_id
    assert accept.attributes[attrs.STATUS] == "processing"
    assert accept.attributes[attrs.INSTANCE_NAME] == "acme"
    assert accept.attributes[attrs.MESSAGE_ID] == accepted.message_id
    assert accept.attributes[attrs.CHANNEL_MESSAGE_ID] == "A3F1C0D9E8B7A6954321FEDCBA098765"
    assert accept.attributes[attrs.SOURCE_CHANNEL] == "whatsapp"
    assert accept.attributes[attrs.SOURCE_USER_ID] == "5521991234567@s.whatsapp.net"
    incoming = orjson.loads(str(accept.attributes[attrs.PAYLOAD_INCOMING]))
    assert incoming["data"]["key"]["id"] == "A3F1C0D9E8B7A6954321FEDCBA098765"

    ignored_span = accepts[1].attributes
    assert ignored_span is not None
    assert (ignored_span[attrs.STATUS], ignored_span[attrs.ERROR_MESSAGE]) == ("ignored", "from_me")
    assert format(accepts[1].context.trace_id, "032x") == ignored.trace_id
    assert accepts[2].attributes is not None
    assert attrs.STATUS not in accepts[2].attributes, "a contacts.update is not a message trace"
    assert accepts[3].attributes is not None
    assert attrs.STATUS not in accepts[3].attributes, "a duplicate does not start a second message trace"
    assert duplicate.trace_id == ""

    row = await store.get(accepted.message_id)
    assert row is not None
    assert row.traceparent.split("-")[1] == accepted.trace_id
    (dispatch,) = [s for s in finished if s.name == "ingress.dispatch"]
    assert dispatch.context.trace_id == accept.context.trace_id
    assert dispatch.parent is not None
    assert dispatch.parent.span_id == accept.context.span_id
    assert dispatch.attributes is not None
    assert dispatch.attributes[attrs.ATTEMPT] == 1


async def _state_is(store: InboxStore, message_id: str, state: str) -> bool:
    row = await store.get(message_id)
    return row is not None and row.state == state
