"""The operator's trace queries against a seeded dataset with known answers, on SQLite and PostgreSQL: every list
filter, paging totals, analytics numbers (percentiles by nearest rank), cleanup, and failed attempts shown at once."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from servicekit import trace_attributes as ta
from servicekit.database import Database
from servicekit.errors import InvalidArgumentError
from services.tracing.core import SpanRecord, TraceQuery, TracingCore
from services.tracing.core.models import AnalyticsQuery, Bucket
from tests.tracing.builders import span
from tests.tracing.conftest import Clock

NOW = 1_700_000_100.0
DAY = 86_400


@dataclasses.dataclass(frozen=True)
class Row:
    """One seeded message trace."""

    tid: str
    age_s: int
    instance: str
    channel: str
    user: str
    session: str
    mtype: str
    text: str
    media: bool
    status: str
    duration_ms: int
    agent_ms: int
    stage: str = ""


ROWS = [
    Row("t1", 60, "acme", "whatsapp", "u1", "s1", "text", "Hello World", False, "sent", 100, 50),
    Row("t2", 120, "acme", "whatsapp", "u2", "s2", "image", "look at THIS photo", True, "sent", 200, 100),
    Row("t3", 180, "acme", "discord", "u3", "s3", "text", "100% sure_thing", False, "error", 300, 150, "agent"),
    Row("t4", 240, "globex", "slack", "u1", "s4", "text", "hello again", False, "sent", 400, 0),
    Row("t5", 300, "globex", "whatsapp", "u4", "s5", "audio", "", True, "error", 500, 250, "(service)"),
    Row("t6", 360, "acme", "whatsapp", "u1", "s1", "text", "processing one", False, "processing", 600, 0),
    Row("t7", 2 * DAY, "acme", "whatsapp", "u1", "s1", "text", "old hello", False, "sent", 700, 350),
    Row("t8", 3 * DAY, "globex", "discord", "u5", "s6", "text", "blocked", False, "blocked", 800, 0),
]


def _trace_id(name: str) -> str:
    return name.encode().hex().rjust(32, "0")


def _spans(row: Row) -> list[SpanRecord]:
    base_ns = int((NOW - row.age_s) * 1e9)
    tid = _trace_id(row.tid)
    attributes: dict[str, Any] = {
        ta.STATUS: row.status,
        ta.INSTANCE_NAME: row.instance,
        ta.SOURCE_CHANNEL: row.channel,
        ta.SOURCE_USER_ID: row.user,
        ta.SESSION_ID: row.session,
        ta.MESSAGE_TYPE: row.mtype,
        ta.HAS_MEDIA: row.media,
        ta.MESSAGE_TEXT: row.text,
    }
    if row.status == "error":
        attributes[ta.ERROR_MESSAGE] = f"{row.tid} failed"
    if row.stage and not row.stage.startswith("("):
        attributes[ta.ERROR_STAGE] = row.stage
    root = span(tid, "router.route", 0, row.duration_ms, base_ns=base_ns, **attributes)
    if row.stage == "(service)":
        # No explicit stage: the failing span's service names it.
        root = dataclasses.replace(root, service_name="omni-ingress")
    spans = [root]
    if row.agent_ms:
        spans.append(
            span(tid, "agent.call", 1, 1 + row.agent_ms, parent=root.span_id, base_ns=base_ns, step="agent_call")
        )
    return spans


@pytest.fixture
async def seeded(core: TracingCore) -> TracingCore:
    for row in ROWS:
        await core.ingest(_spans(row))
    return core


async def _ids(core: TracingCore, **filters: object) -> list[str]:
    page = await core.list_traces(TraceQuery(page_size=500, **filters))  # type: ignore[arg-type]
    assert page.total_count == len(page.traces)
    by_id = {_trace_id(row.tid): row.tid for row in ROWS}
    return [by_id[trace.trace_id] for trace in page.traces]


@pytest.mark.parametrize(
    ("filters", "expected"),
    [
        ({}, ["t1", "t2", "t3", "t4", "t5", "t6", "t7", "t8"]),
        ({"instance_name": "acme"}, ["t1", "t2", "t3", "t6", "t7"]),
        ({"status": "sent"}, ["t1", "t2", "t4", "t7"]),
        ({"source_channel": "whatsapp"}, ["t1", "t2", "t5", "t6", "t7"]),
        ({"source_user_id": "u1"}, ["t1", "t4", "t6", "t7"]),
        ({"session_id": "s1"}, ["t1", "t6", "t7"]),
        ({"message_type": "text"}, ["t1", "t3", "t4", "t6", "t7", "t8"]),
        ({"has_media": True}, ["t2", "t5"]),
        ({"has_media": False}, ["t1", "t3", "t4", "t6", "t7", "t8"]),
        ({"text": "HELLO"}, ["t1", "t4", "t7"]),
        ({"text": "this"}, ["t2"]),
        ({"text": "100%"}, ["t3"]),
        ({"text": "o_e"}, []),  # "_" is literal, not LIKE's any-character ("processing one" must not match)
        ({"text": "e_t"}, ["t3"]),
        ({"created_from": NOW - DAY}, ["t1", "t2", "t3", "t4", "t5", "t6"]),
        ({"created_before": NOW - DAY}, ["t7", "t8"]),
        ({"instance_name": "acme", "status": "sent", "created_from": NOW - DAY}, ["t1", "t2"]),
    ],
)
async def test_list_filters(seeded: TracingCore, filters: dict[str, object], expected: list[str]) -> None:
    assert await _ids(seeded, **filters) == expected


async def test_paging_keeps_the_total(seeded: TracingCore) -> None:
    page = await seeded.list_traces(TraceQuery(page=2, page_size=3))
    assert page.total_count == 8
    assert [t.trace_id for t in page.traces] == [_trace_id(t) for t in ("t4", "t5", "t6")]
    last = await seeded.list_traces(TraceQuery(page=3, page_size=3, instance_name="acme"))
    assert (last.total_count, last.traces) == (5, [])


async def test_listed_traces_carry_the_message_fields(seeded: TracingCore) -> None:
    (trace,) = (await seeded.list_traces(TraceQuery(has_media=True, source_channel="whatsapp", status="sent"))).traces
    assert (trace.message_type, trace.has_media, trace.message_text) == ("image", True, "look at THIS photo")


async def test_a_too_long_text_search_is_refused(core: TracingCore) -> None:
    with pytest.raises(InvalidArgumentError):
        await core.list_traces(TraceQuery(text="x" * 201))


def _bucket(key: str, count: int, errors: int, avg: float, p50: float, p95: float) -> Bucket:
    """p50/p95: the nearest-rank durations; each seeded duration (a multiple of 100 ms) is alone in its 10 ms wide
    bucket, so the breakdowns report it interpolated to the bucket's middle (+5 ms)."""
    return Bucket(
        key=key, count=count, error_count=errors, avg_duration_ms=avg, p50_duration_ms=p50 + 5, p95_duration_ms=p95 + 5
    )


async def test_analytics_over_all_time(seeded: TracingCore) -> None:
    summary = await seeded.analytics(AnalyticsQuery())
    assert summary.total == 8
    assert summary.success_rate == pytest.approx(4 / 6)
    assert (summary.duration.p50_ms, summary.duration.p95_ms, summary.duration.avg_ms) == (400.0, 800.0, 450.0)
    agent = summary.agent_duration
    assert (agent.p50_ms, agent.p95_ms, agent.avg_ms) == (150.0, 350.0, 180.0)
    assert summary.by_status == [
        _bucket("sent", 4, 0, 350.0, 200, 700),
        _bucket("error", 2, 2, 400.0, 300, 500),
        _bucket("blocked", 1, 0, 800.0, 800, 800),
        _bucket("processing", 1, 0, 600.0, 600, 600),
    ]
    assert summary.by_instance == [_bucket("acme", 5, 1, 380.0, 300, 700), _bucket("globex", 3, 1, 566.667, 500, 800)]
    assert summary.by_channel == [
        _bucket("whatsapp", 5, 1, 420.0, 500, 700),
        _bucket("discord", 2, 1, 550.0, 300, 800),
        _bucket("slack", 1, 0, 400.0, 400, 400),
    ]
    assert summary.by_message_type == [
        _bucket("text", 6, 1, 483.333, 400, 800),
        _bucket("audio", 1, 1, 500.0, 500, 500),
        _bucket("image", 1, 0, 200.0, 200, 200),
    ]
    assert summary.errors_by_stage == [
        _bucket("agent", 1, 1, 300.0, 300, 300),
        _bucket("ingress", 1, 1, 500.0, 500, 500),
    ]


async def test_breakdown_percentiles_are_exact_below_100_ms_and_within_a_bucket_above(core: TracingCore) -> None:
    fast = [10, 20, 30, 40, 95]
    slow = [1200, 1250, 1290]
    for n, duration in enumerate([*fast, *slow]):
        row = Row(
            f"p{n}",
            60,
            "fast" if duration < 100 else "slow",
            "whatsapp",
            "u",
            "s",
            "text",
            "",
            False,
            "sent",
            duration,
            0,
        )
        await core.ingest(_spans(row))
    summary = await core.analytics(AnalyticsQuery(created_from=NOW - DAY))
    by_instance = {b.key: b for b in summary.by_instance}
    # Nearest rank: 5 values, p50 is the 3rd and p95 the 5th.
    assert (by_instance["fast"].p50_duration_ms, by_instance["fast"].p95_duration_ms) == (30.0, 95.0)
    # 1200, 1250 and 1290 share the bucket [1200, 1300): ranks 2 and 3 of 3 are placed at 1/2 and 5/6 of it.
    assert (by_instance["slow"].p50_duration_ms, by_instance["slow"].p95_duration_ms) == (1250.0, 1283.333)
    # The overall percentiles stay exact (8 values: ranks 4 and 8).
    assert (summary.duration.p50_ms, summary.duration.p95_ms) == (40.0, 1290.0)


async def test_analytics_window_and_instance(seeded: TracingCore) -> None:
    recent = await seeded.analytics(AnalyticsQuery(created_from=NOW - DAY))
    assert recent.total == 6
    assert (recent.duration.p50_ms, recent.duration.p95_ms) == (300.0, 600.0)
    acme = await seeded.analytics(AnalyticsQuery(instance_name="acme"))
    assert acme.total == 5
    assert (acme.duration.p50_ms, acme.duration.p95_ms) == (300.0, 700.0)
    assert acme.success_rate == pytest.approx(3 / 4)
    empty = await seeded.analytics(AnalyticsQuery(instance_name="nobody"))
    assert (empty.total, empty.success_rate, empty.duration.p95_ms, empty.by_status) == (0, 0.0, 0.0, [])


async def test_analytics_refuses_an_inverted_window(core: TracingCore) -> None:
    with pytest.raises(InvalidArgumentError):
        await core.analytics(AnalyticsQuery(created_from=NOW, created_before=NOW - 1))


async def test_cleanup_dry_run_then_real(seeded: TracingCore, tracing_db: Database, clock: Clock) -> None:
    clock.now = NOW
    count, cutoff = await seeded.cleanup(1, dry_run=True)
    assert (count, cutoff) == (2, NOW - DAY)
    assert (await seeded.list_traces(TraceQuery())).total_count == 8
    count, _ = await seeded.cleanup(1, dry_run=False)
    assert count == 2
    assert await _ids(seeded) == ["t1", "t2", "t3", "t4", "t5", "t6"]
    old = [_trace_id("t7"), _trace_id("t8")]
    assert await tracing_db.fetchval("SELECT count(*) FROM spans WHERE trace_id IN ($1, $2)", *old) == 0
    assert (await seeded.cleanup(1, dry_run=True))[0] == 0
    with pytest.raises(InvalidArgumentError):
        await seeded.cleanup(-1, dry_run=True)


def _attrs(values: dict[str, Any]) -> dict[str, Any]:
    return values


def _attempt_spans(tid: str, attempt: int, base_ms: int, *, final: bool) -> list[SpanRecord]:
    """What one delivery attempt leaves: the router's span, then ingress's dispatch span (retry time, or final)."""
    router = span(
        tid,
        "router.route",
        base_ms,
        base_ms + 100,
        instance_name="acme",
        **_attrs({ta.ATTEMPT: attempt, ta.ATTEMPT_ERROR: f"agent unreachable: HTTP 500 (attempt {attempt})"}),
    )
    if final:
        router = dataclasses.replace(
            router,
            attributes={
                **router.attributes,
                ta.STATUS: "error",
                ta.ERROR_MESSAGE: "agent failed after 2 attempts: HTTP 500",
                ta.ERROR_STAGE: "agent",
            },
        )
        return [router]
    dispatch = span(
        tid,
        "ingress.dispatch",
        base_ms,
        base_ms + 120,
        **_attrs({ta.ATTEMPT: attempt, ta.ATTEMPT_ERROR: "agent unreachable: HTTP 500", ta.NEXT_RETRY_AT: NOW + 5}),
    )
    return [router, dispatch]


@pytest.mark.parametrize("reverse", [False, True])
async def test_a_failed_attempt_shows_at_once_then_the_final_error(core: TracingCore, reverse: bool) -> None:
    tid = _trace_id("retry" + str(reverse))
    accept = span(tid, "ingress.accept", 0, 5, status="processing", instance_name="acme", source_channel="whatsapp")
    await core.ingest([accept, *_attempt_spans(tid, 1, 10, final=False)])
    trace = await core.get_trace(tid)
    assert (trace.status, trace.attempts) == ("processing", 1)
    assert trace.error_message == "agent unreachable: HTTP 500"
    assert trace.next_retry_at == NOW + 5

    later = _attempt_spans(tid, 2, 500, final=True)
    await core.ingest(list(reversed(later)) if reverse else later)
    trace = await core.get_trace(tid)
    assert (trace.status, trace.attempts, trace.error_stage) == ("error", 2, "agent")
    assert trace.error_message == "agent failed after 2 attempts: HTTP 500"
    assert trace.last_attempt_error == "agent unreachable: HTTP 500 (attempt 2)"
    assert trace.next_retry_at is None
