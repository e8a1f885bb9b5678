"""The core on a real database: incremental derivation across batches, queries, retention, errors."""

from __future__ import annotations

import asyncio
import random

import pytest

from servicekit.database import Database
from servicekit.errors import InvalidArgumentError, NotFoundError
from servicekit.retention import RetentionTask
from services.tracing.core import TraceQuery, TracingCore, derive
from tests.tracing.builders import MS, T0, message_spans, span
from tests.tracing.conftest import Clock

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"


async def test_out_of_order_batches_give_the_same_trace_as_all_spans_at_once(core: TracingCore) -> None:
    accept, route, agent, send = message_spans(TRACE)
    # The router's spans come first (its exporter was quicker), the ingress span last.
    assert await core.ingest([send, agent]) == 2
    assert (await core.list_traces(TraceQuery())).total_count == 0  # no omni.status yet: not a message trace
    assert await core.ingest([route]) == 1
    trace = await core.get_trace(TRACE)
    assert trace.status == "sent"
    assert trace.instance_name == ""  # known only from ingress.accept, not arrived yet
    assert await core.ingest([accept]) == 1

    trace = await core.get_trace(TRACE)
    expected = derive(TRACE, [accept, route, agent, send])
    assert trace.status == expected.status == "sent"
    assert (trace.instance_name, trace.source_channel, trace.source_user_id) == ("acme", "whatsapp", "5511")
    assert (trace.session_id, trace.message_id, trace.channel_message_id) == ("sess-1", "m-4bf92f", "WA1")
    assert trace.start_ns == T0
    assert trace.duration_ms == 300
    assert trace.agent_duration_ms == 200
    assert trace.payloads == {
        "incoming": {"text": "hi"},
        "agent_request": {"message": "hi"},
        "agent_response": {"text": "hello"},
        "outgoing": {"text": "hello"},
    }
    assert [s.name for s in trace.spans] == ["ingress.accept", "router.route", "agent.call", "channels.send"]
    assert trace.spans[1].parent_span_id == accept.span_id


async def test_duplicate_spans_count_once(core: TracingCore) -> None:
    spans = message_spans(TRACE)
    assert await core.ingest(spans + spans[2:3]) == 4
    assert await core.ingest(spans) == 0  # an exporter retrying the batch
    trace = await core.get_trace(TRACE)
    assert trace.agent_duration_ms == 200
    assert len(trace.spans) == 4


async def test_redelivery_error_then_sent_across_batches(core: TracingCore) -> None:
    await core.ingest([span(TRACE, "ingress.accept", 0, 5, status="processing", instance_name="acme")])
    assert (await core.get_trace(TRACE)).status == "processing"
    late_sent = span(TRACE, "router.route", 400, 700, status="sent")
    await core.ingest([late_sent])
    await core.ingest([span(TRACE, "router.route", 10, 300, status="error", error_message="agent HTTP 503")])
    trace = await core.get_trace(TRACE)
    assert (trace.status, trace.error_message) == ("sent", "")


async def test_payload_kept_from_the_latest_span_across_batches(core: TracingCore) -> None:
    await core.ingest([span(TRACE, "router.route", 400, 700, status="sent", outgoing='{"n": 2}')])
    await core.ingest([span(TRACE, "router.route", 10, 300, status="error", outgoing='{"n": 1}')])
    await core.ingest([span(TRACE, "other", 800, 900, incoming="not json")])
    trace = await core.get_trace(TRACE)
    assert trace.payloads == {"outgoing": {"n": 2}, "incoming": "not json"}


async def test_concurrent_batches_of_one_trace_lose_nothing(core: TracingCore) -> None:
    spans = [span(TRACE, "agent.call", i * 10, i * 10 + 5, step="agent_call") for i in range(40)]
    spans.append(span(TRACE, "router.route", 0, 500, status="sent"))
    random.Random(7).shuffle(spans)
    await asyncio.gather(*(core.ingest(spans[i : i + 3]) for i in range(0, len(spans), 3)))
    trace = await core.get_trace(TRACE)
    assert trace.agent_duration_ms == 40 * 5
    assert len(trace.spans) == 41


async def test_list_filters_pages_and_orders_newest_first(core: TracingCore) -> None:
    batch = []
    for i in range(7):
        trace_id = f"{i + 1:032x}"
        batch += message_spans(trace_id, base_ns=T0 + i * 1_000 * MS, instance="acme" if i % 2 else "beta")
    batch.append(span(f"{99:032x}", "ingress.accept", 0, 1, base_ns=T0, status="ignored", instance_name="acme"))
    batch.append(span(f"{98:032x}", "router.ListInstances", 0, 1, base_ns=T0))  # not a message trace
    await core.ingest(batch)

    everything = await core.list_traces(TraceQuery())
    assert everything.total_count == 8
    assert [t.trace_id for t in everything.traces][:3] == [f"{7:032x}", f"{6:032x}", f"{5:032x}"]
    assert everything.traces[0].payloads == {}
    assert everything.traces[0].spans == []

    acme = await core.list_traces(TraceQuery(instance_name="acme", page=1, page_size=2))
    assert acme.total_count == 4
    assert [t.trace_id for t in acme.traces] == [f"{6:032x}", f"{4:032x}"]
    page2 = await core.list_traces(TraceQuery(instance_name="acme", page=2, page_size=2))
    assert [t.trace_id for t in page2.traces] == [f"{2:032x}", f"{99:032x}"]

    ignored = await core.list_traces(TraceQuery(status="ignored"))
    assert [t.trace_id for t in ignored.traces] == [f"{99:032x}"]
    assert (await core.list_traces(TraceQuery(session_id="sess-1"))).total_count == 7
    assert (await core.list_traces(TraceQuery(source_user_id="nobody"))).total_count == 0
    window = await core.list_traces(TraceQuery(created_from=T0 / 1e9 + 2, created_before=T0 / 1e9 + 4))
    assert [t.trace_id for t in window.traces] == [f"{4:032x}", f"{3:032x}"]
    capped = await core.list_traces(TraceQuery(page_size=10_000))
    assert capped.page_size == 500


async def test_invalid_queries_and_unknown_traces(core: TracingCore) -> None:
    with pytest.raises(InvalidArgumentError):
        await core.list_traces(TraceQuery(page=-1))
    with pytest.raises(InvalidArgumentError):
        await core.list_traces(TraceQuery(status="exploded"))
    with pytest.raises(NotFoundError):
        await core.get_trace("f" * 32)
    await core.ingest([span(TRACE, "router.ListInstances", 0, 1)])
    with pytest.raises(NotFoundError):  # spans exist, but nothing made it a message trace
        await core.get_trace(TRACE)


async def test_retention_deletes_old_traces_and_their_spans(
    core: TracingCore, clock: Clock, tracing_db: Database
) -> None:
    day_ns = 86_400 * 10**9
    now_ns = int(clock.now * 1e9)
    old, recent = f"{1:032x}", f"{2:032x}"
    await core.ingest(message_spans(old, base_ns=now_ns - 31 * day_ns) + message_spans(recent, base_ns=now_ns - day_ns))
    retention = RetentionTask("traces", lambda: core.purge(30), interval_seconds=3600)
    assert await retention.run_once() == 1
    with pytest.raises(NotFoundError):
        await core.get_trace(old)
    assert await tracing_db.fetchval("SELECT COUNT(*) FROM spans WHERE trace_id = $1", old) == 0
    assert len((await core.get_trace(recent)).spans) == 4
    assert await core.purge(0) == 0  # 0 days keeps everything


async def test_retention_task_sweeps_at_start(core: TracingCore, clock: Clock) -> None:
    await core.ingest(message_spans(TRACE, base_ns=int((clock.now - 40 * 86_400) * 1e9)))
    retention = RetentionTask("traces", lambda: core.purge(30), interval_seconds=3600)
    retention.start()
    try:
        for _ in range(100):
            if (await core.list_traces(TraceQuery())).total_count == 0:
                break
            await asyncio.sleep(0.02)
        assert (await core.list_traces(TraceQuery())).total_count == 0
    finally:
        await retention.stop()


async def test_many_spans_in_one_batch(core: TracingCore) -> None:
    batch = [s for i in range(600) for s in message_spans(f"{i + 1:032x}", base_ns=T0 + i * MS)]
    assert await core.ingest(batch) == 2400
    assert (await core.list_traces(TraceQuery(status="sent"))).total_count == 600
