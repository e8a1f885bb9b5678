"""EraseSender in tracing: a person's traces go with their spans; other senders' and other instances' stay."""

from __future__ import annotations

import asyncio

import pytest

from servicekit import trace_attributes as ta
from servicekit.database import Database
from servicekit.errors import InvalidArgumentError, NotFoundError
from services.tracing.core import TracingCore
from services.tracing.core.erasure import erase_sender
from services.tracing.storage import TraceStore
from tests.tracing.builders import message_spans
from tests.tracing.conftest import Clock
from tests.tracing.test_receipts import event_span, message_with_send


def _id(n: int) -> str:
    return f"{n:032x}"


async def test_a_senders_traces_go_and_nobody_elses(core: TracingCore, tracing_db: Database) -> None:
    maria, joao, elsewhere = _id(1), _id(2), _id(3)
    await core.ingest(message_spans(maria, user="maria@s.whatsapp.net"))
    await core.ingest(message_spans(joao, user="joao@s.whatsapp.net"))  # same session id ("sess-1"): a group
    await core.ingest(message_spans(elsewhere, instance="other", user="maria@s.whatsapp.net"))
    store = TraceStore(tracing_db)

    assert await erase_sender(store, "acme", ["maria@s.whatsapp.net", ""], []) == 1
    with pytest.raises(NotFoundError):
        await core.get_trace(maria)
    assert await tracing_db.fetchval("SELECT count(*) FROM spans WHERE trace_id = $1", maria) == 0
    assert (await core.get_trace(joao)).payloads
    assert (await core.get_trace(elsewhere)).payloads
    assert await erase_sender(store, "acme", ["maria@s.whatsapp.net"], []) == 0  # idempotent


async def test_a_one_to_one_session_goes_whole(core: TracingCore, tracing_db: Database) -> None:
    await core.ingest(message_spans(_id(4), user="someone"))
    assert await erase_sender(TraceStore(tracing_db), "acme", [], ["sess-1"]) == 1
    assert await erase_sender(TraceStore(tracing_db), "acme", [], []) == 0


async def test_erasure_needs_an_instance(tracing_db: Database) -> None:
    with pytest.raises(InvalidArgumentError):
        await erase_sender(TraceStore(tracing_db), "", ["x"], [])


async def test_a_span_arriving_after_the_erasure_does_not_bring_the_trace_back(
    core: TracingCore, tracing_db: Database
) -> None:
    maria = _id(5)
    accept, *rest = message_spans(maria, user="maria@s.whatsapp.net")
    await core.ingest([accept])
    assert await core.erase_sender("acme", ["maria@s.whatsapp.net"], []) == 1

    # The router and channels export their spans later (or an exporter retries a batch): they are dropped.
    assert await core.ingest(rest) == len(rest)
    with pytest.raises(NotFoundError):
        await core.get_trace(maria)
    for table in ("spans", "traces"):
        assert await tracing_db.fetchval(f"SELECT count(*) FROM {table} WHERE trace_id = $1", maria) == 0
    # Another sender's trace in the same batch is kept.
    other = _id(6)
    await core.ingest([*message_spans(other, user="joao@s.whatsapp.net"), *rest])
    assert (await core.get_trace(other)).payloads


async def test_erasure_marks_expire_with_retention(core: TracingCore, tracing_db: Database, clock: Clock) -> None:
    await core.ingest(message_spans(_id(7), user="maria@s.whatsapp.net"))
    await core.erase_sender("acme", ["maria@s.whatsapp.net"], [])
    assert await tracing_db.fetchval("SELECT count(*) FROM erased_traces") == 1
    assert await tracing_db.fetchval("SELECT count(*) FROM message_links WHERE trace_id = $1", _id(7)) == 1
    clock.now += 31 * 86_400
    await core.purge(retention_days=30)
    assert await tracing_db.fetchval("SELECT count(*) FROM erased_traces") == 0
    assert await tracing_db.fetchval("SELECT count(*) FROM message_links WHERE trace_id = $1", _id(7)) == 0


async def test_concurrent_batches_and_an_erasure_leave_no_partial_trace(
    core: TracingCore, tracing_db: Database
) -> None:
    traces = [_id(100 + n) for n in range(20)]
    first = [message_spans(t, user="maria@s.whatsapp.net")[:1] for t in traces]
    later = [message_spans(t, user="maria@s.whatsapp.net")[1:] for t in traces]
    for spans in first:
        await core.ingest(spans)
    await asyncio.gather(
        *(core.ingest(spans) for spans in later), core.erase_sender("acme", ["maria@s.whatsapp.net"], [])
    )
    # Whatever the interleaving, each trace is either erased whole or (a batch that committed first) still
    # complete enough to be found by the next erasure: nothing of Maria's survives a second pass.
    await core.erase_sender("acme", ["maria@s.whatsapp.net"], [])
    assert (
        await tracing_db.fetchval("SELECT count(*) FROM traces WHERE source_user_id = $1", "maria@s.whatsapp.net") == 0
    )
    for trace_id in traces:
        assert await tracing_db.fetchval("SELECT count(*) FROM spans WHERE trace_id = $1", trace_id) == 0


async def test_receipts_and_edits_of_an_erased_message_are_dropped_whenever_they_come(
    core: TracingCore, tracing_db: Database
) -> None:
    maria, reply_id = _id(8), "3EB0REPLYTOMARIA"
    spans = message_with_send(maria, sent=(reply_id,))
    for s in spans:
        s.attributes[ta.SOURCE_USER_ID] = "maria@s.whatsapp.net"
    send = next(s for s in spans if s.name == "channels.send")
    early = event_span("receipt", "WA1", status="read", trace_id=_id(9))  # her message read before the erasure
    await core.ingest([s for s in spans if s is not send])
    await core.ingest([event_span("message_edited", "3EB0UNKNOWNYET", trace_id=_id(10))])  # waits for its message
    assert await tracing_db.fetchval("SELECT count(*) FROM message_events WHERE trace_id = ''") == 1
    await core.ingest([early])

    assert await core.erase_sender("acme", ["maria@s.whatsapp.net"], []) == 1
    # Later: the reply's send span (late export), then its receipts and an edit of her message.
    await core.ingest([send])
    await core.ingest([event_span("receipt", reply_id, status="delivered", trace_id=_id(11))])
    await core.ingest([event_span("message_edited", "WA1", trace_id=_id(12))])

    with pytest.raises(NotFoundError):
        await core.get_trace(maria)
    assert await tracing_db.fetchval("SELECT count(*) FROM spans WHERE trace_id = $1", maria) == 0
    # Nothing about her waits with its chat or text: the only event still waiting is the unrelated one.
    waiting = await tracing_db.fetch("SELECT channel_message_id FROM message_events WHERE span <> ''")
    assert [row["channel_message_id"] for row in waiting] == ["3EB0UNKNOWNYET"]


async def test_a_message_whose_spans_had_not_arrived_yet_is_erased_when_they_do(
    core: TracingCore, tracing_db: Database, clock: Clock
) -> None:
    in_flight, later = _id(20), _id(21)
    # Maria's message was being handled (started at T0, before the erasure) but tracing had none of its spans yet.
    assert await core.erase_sender("acme", ["maria@s.whatsapp.net"], []) == 0
    await core.ingest(message_spans(in_flight, user="maria@s.whatsapp.net"))
    with pytest.raises(NotFoundError):
        await core.get_trace(in_flight)
    assert await tracing_db.fetchval("SELECT count(*) FROM spans WHERE trace_id = $1", in_flight) == 0
    # She writes again after the erasure: a new message, kept.
    after_erasure = int((clock.now + 10) * 1e9)
    await core.ingest(message_spans(later, base_ns=after_erasure, user="maria@s.whatsapp.net"))
    assert (await core.get_trace(later)).payloads
    # Someone else's message in the same instance is untouched; the marks expire with retention.
    await core.ingest(message_spans(_id(22), user="joao@s.whatsapp.net"))
    assert (await core.get_trace(_id(22))).payloads
    clock.now += 31 * 86_400
    await core.purge(retention_days=30)
    assert await tracing_db.fetchval("SELECT count(*) FROM erased_senders") == 0


async def test_a_one_to_one_session_erased_before_its_spans_arrive(core: TracingCore) -> None:
    assert await core.erase_sender("acme", [], ["sess-1"]) == 0
    await core.ingest(message_spans(_id(23), user="someone"))  # session "sess-1"
    with pytest.raises(NotFoundError):
        await core.get_trace(_id(23))
