"""Message events (receipts, edits, deletions) filed under the trace of the message they are about, on SQLite and
PostgreSQL: whichever arrives first, repeats kept once, the message's status and timings untouched."""

from __future__ import annotations

import pytest

from servicekit import trace_attributes as ta
from servicekit.database import Database
from services.tracing.core import SpanRecord, TraceQuery, TracingCore
from tests.tracing.builders import message_spans, span
from tests.tracing.conftest import Clock

MESSAGE_TRACE = "a" * 32
INSTANCE = "acme"
SENT_ID = "3EB0SENT0001"
INBOUND_ID = "WA1"  # the channel message id `message_spans` gives the inbound message


def message_with_send(trace_id: str = MESSAGE_TRACE, *, sent: tuple[str, ...] = (SENT_ID,)) -> list[SpanRecord]:
    """A handled message whose channel send produced `sent` (the send span lists them, as channels does)."""
    spans = [s for s in message_spans(trace_id, instance=INSTANCE) if s.name != "channels.send"]
    route = next(s for s in spans if s.name == "router.route")
    send = span(trace_id, "channels.send", 230, 290, parent=route.span_id, step="channel_send", instance_name=INSTANCE)
    send.attributes[ta.SENT_CHANNEL_MESSAGE_IDS] = list(sent)
    return [*spans, send]


def event_span(
    kind: str,
    refers_to: str,
    *,
    status: str = "",
    key: str = "",
    at_ms: int = 60_000,
    trace_id: str = "e" * 32,
    instance: str = INSTANCE,
    from_me: bool = True,
) -> SpanRecord:
    """What ingress records for one receipt/edit/deletion webhook: a span in a trace of its own."""
    attributes: dict[str, object] = {
        ta.INSTANCE_NAME: instance,
        ta.REFERS_TO_CHANNEL_MESSAGE_ID: refers_to,
        ta.MESSAGE_EVENT_KEY: key or f"{kind}:{refers_to}:{status}",
        ta.MESSAGE_EVENT_FROM_ME: from_me,
    }
    if status:
        attributes[ta.RECEIPT_STATUS] = status
    event = span(trace_id, f"whatsapp.{kind}", at_ms, at_ms + 1, parent="f" * 16)
    event.attributes.update(attributes)
    return event


def names(trace_spans: list[SpanRecord]) -> list[str]:
    return [s.name for s in trace_spans]


async def test_receipts_after_the_send_join_the_message_trace(core: TracingCore) -> None:
    await core.ingest(message_with_send())
    before = await core.get_trace(MESSAGE_TRACE)
    delivered = event_span("receipt", SENT_ID, status="delivered", trace_id="1" * 32)
    read = event_span("receipt", SENT_ID, status="read", at_ms=90_000, trace_id="2" * 32)
    assert await core.ingest([delivered]) == 1
    assert await core.ingest([read]) == 1

    after = await core.get_trace(MESSAGE_TRACE)
    receipts = [s for s in after.spans if s.name == "whatsapp.receipt"]
    assert [s.attributes[ta.RECEIPT_STATUS] for s in receipts] == ["delivered", "read"]
    assert all(s.trace_id == MESSAGE_TRACE and s.parent_span_id == "" for s in receipts)
    assert [s.span_id for s in receipts] == [delivered.span_id, read.span_id]
    # The message's handling is what it was: a read receipt a minute later changes no status or duration.
    assert (after.status, after.duration_ms, after.agent_duration_ms) == (
        before.status,
        before.duration_ms,
        before.agent_duration_ms,
    )
    assert after.payloads == before.payloads
    # The receipts' own traces are not message traces.
    page = await core.list_traces(TraceQuery())
    assert [t.trace_id for t in page.traces] == [MESSAGE_TRACE]


async def test_a_receipt_that_beats_the_send_waits_for_it(core: TracingCore) -> None:
    early = event_span("receipt", SENT_ID, status="delivered")
    assert await core.ingest([early]) == 0  # pending: stored nowhere visible yet
    accept_and_route = [s for s in message_with_send() if s.name != "channels.send"]
    await core.ingest(accept_and_route)
    assert "whatsapp.receipt" not in names((await core.get_trace(MESSAGE_TRACE)).spans)

    send = next(s for s in message_with_send() if s.name == "channels.send")
    assert await core.ingest([send]) == 2  # the send span and the receipt it releases
    trace = await core.get_trace(MESSAGE_TRACE)
    assert names(trace.spans).count("whatsapp.receipt") == 1
    assert trace.status == "sent"


async def test_a_repeated_event_shows_once(core: TracingCore) -> None:
    await core.ingest(message_with_send())
    first = event_span("receipt", SENT_ID, status="read", trace_id="1" * 32)
    repeat = event_span("receipt", SENT_ID, status="read", trace_id="2" * 32)  # the webhook posted twice
    await core.ingest([first])
    assert await core.ingest([repeat]) == 0
    assert await core.ingest([first]) == 0  # an exporter retrying its batch
    trace = await core.get_trace(MESSAGE_TRACE)
    assert [s.span_id for s in trace.spans if s.name == "whatsapp.receipt"] == [first.span_id]


async def test_repeats_inside_one_batch_and_pending_repeats(core: TracingCore) -> None:
    one = event_span("receipt", SENT_ID, status="delivered", trace_id="1" * 32)
    two = event_span("receipt", SENT_ID, status="delivered", trace_id="2" * 32)
    await core.ingest([one, two])
    await core.ingest([two])
    await core.ingest(message_with_send())
    trace = await core.get_trace(MESSAGE_TRACE)
    assert names(trace.spans).count("whatsapp.receipt") == 1


async def test_edits_and_deletions_join_the_inbound_message_trace(core: TracingCore) -> None:
    await core.ingest(message_with_send())
    edit = event_span("message_edited", INBOUND_ID, key="message_edited:WA1:1764945200000", from_me=False)
    edit.attributes[ta.MESSAGE_EVENT_TEXT] = '{"text": "corrigido"}'
    deletion = event_span("message_deleted", INBOUND_ID, key="message_deleted:WA1", at_ms=70_000, from_me=False)
    await core.ingest([edit, deletion])
    trace = await core.get_trace(MESSAGE_TRACE)
    filed = {s.name: s for s in trace.spans if s.name.startswith("whatsapp.message_")}
    assert set(filed) == {"whatsapp.message_edited", "whatsapp.message_deleted"}
    assert filed["whatsapp.message_edited"].attributes[ta.MESSAGE_EVENT_TEXT] == '{"text": "corrigido"}'


async def test_an_event_is_filed_in_its_own_instance_only(core: TracingCore) -> None:
    await core.ingest(message_with_send())
    stranger = event_span("receipt", SENT_ID, status="read", instance="someone-else")
    assert await core.ingest([stranger]) == 0
    assert "whatsapp.receipt" not in names((await core.get_trace(MESSAGE_TRACE)).spans)


async def test_a_repeated_webhook_does_not_steal_the_message(core: TracingCore) -> None:
    """A duplicate delivery's accept span names the same inbound id in a trace of its own, without a status."""
    duplicate = span("d" * 32, "ingress.accept", 0, 1, instance_name=INSTANCE, channel_message_id=INBOUND_ID)
    await core.ingest([duplicate])
    await core.ingest(message_with_send())
    await core.ingest([event_span("message_deleted", INBOUND_ID, key="message_deleted:WA1")])
    assert "whatsapp.message_deleted" in names((await core.get_trace(MESSAGE_TRACE)).spans)


async def test_a_reply_in_several_parts_gets_each_parts_receipts(core: TracingCore) -> None:
    await core.ingest(message_with_send(sent=("P1", "P2")))
    await core.ingest([event_span("receipt", "P1", status="read"), event_span("receipt", "P2", status="delivered")])
    trace = await core.get_trace(MESSAGE_TRACE)
    receipts = sorted(
        s.attributes[ta.REFERS_TO_CHANNEL_MESSAGE_ID] for s in trace.spans if s.name == "whatsapp.receipt"
    )
    assert receipts == ["P1", "P2"]


async def test_retention_and_purge_take_links_and_pending_events(
    core: TracingCore, tracing_db: Database, clock: Clock
) -> None:
    await core.ingest(message_with_send())
    await core.ingest([event_span("receipt", SENT_ID, status="read")])
    await core.ingest([event_span("receipt", "NEVER-SENT-BY-US", status="read")])
    assert await tracing_db.fetchval("SELECT COUNT(*) FROM message_events") == 2
    assert await tracing_db.fetchval("SELECT COUNT(*) FROM message_links") == 2

    clock.now += 30 * 86_400
    assert await core.purge(retention_days=7) == 1
    assert await tracing_db.fetchval("SELECT COUNT(*) FROM message_events") == 0
    assert await tracing_db.fetchval("SELECT COUNT(*) FROM message_links") == 0


async def test_purging_an_instance_forgets_its_messages(core: TracingCore, tracing_db: Database) -> None:
    await core.ingest(message_with_send())
    await core.ingest([event_span("receipt", "UNKNOWN", status="read")])
    await core.purge_instance(INSTANCE)
    assert await tracing_db.fetchval("SELECT COUNT(*) FROM message_events") == 0
    assert await tracing_db.fetchval("SELECT COUNT(*) FROM message_links") == 0
    # A new instance of the same name does not inherit the old message's link.
    await core.ingest([event_span("receipt", SENT_ID, status="read", trace_id="3" * 32)])
    assert await tracing_db.fetchval("SELECT COUNT(*) FROM spans WHERE name = 'whatsapp.receipt'") == 0


@pytest.mark.parametrize("value", [None, "", 7])
async def test_a_span_without_a_usable_reference_is_an_ordinary_span(core: TracingCore, value: object) -> None:
    odd = span("c" * 32, "whatsapp.receipt", 0, 1, instance_name=INSTANCE)
    odd.attributes[ta.REFERS_TO_CHANNEL_MESSAGE_ID] = value
    assert await core.ingest([odd]) == 1


def test_most_advanced_delivery() -> None:
    assert ta.most_advanced_delivery(["read", "delivered"]) == "read"
    assert ta.most_advanced_delivery(["delivered", "played", "read"]) == "played"
    assert ta.most_advanced_delivery(["failed", "sent"]) == "sent"
    assert ta.most_advanced_delivery(["failed"]) == "failed"
    assert ta.most_advanced_delivery([]) == ""
