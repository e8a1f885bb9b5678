"""SQL of the tracing service: the spans it received and the message traces derived from them.

`spans` keeps every span (attributes as JSON text). `traces` keeps one row per OTel trace with the running
aggregate of `core.derivation.TraceAggregate`, so a new OTLP batch updates a trace without re-reading its older
spans; rows whose `status` is empty are traces that are not (yet) message traces and are never listed.

Bulk statements keep the number of round trips per Export batch constant: on PostgreSQL the rows travel as
arrays through `unnest` (one statement text whatever the batch size, so asyncpg's prepared statement is reused),
on SQLite as multi-row VALUES and id sets as a JSON array read with `json_each`.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from typing import Any

import orjson

from servicekit.database import Database, Executor, Migration, Row, migrate, open_database, values_rows
from services.tracing.core.derivation import IDENTITY_ATTRIBUTES, MESSAGE_ATTRIBUTES, TraceAggregate
from services.tracing.core.message_events import Link, MessageEvent, span_from_json, span_to_json
from services.tracing.core.models import (
    PAYLOAD_ATTRIBUTES,
    Analytics,
    AnalyticsQuery,
    Bucket,
    DurationStats,
    SpanRecord,
    Trace,
    TraceQuery,
)

SCHEMA = "omni_tracing"
"""PostgreSQL schema of the tracing tables."""

_PAYLOAD_KINDS = tuple(PAYLOAD_ATTRIBUTES)

MIGRATIONS = [
    Migration(
        1,
        "spans_and_traces",
        [
            "CREATE TABLE spans ("
            " trace_id TEXT NOT NULL,"
            " span_id TEXT NOT NULL,"
            " parent_span_id TEXT NOT NULL DEFAULT '',"
            " name TEXT NOT NULL,"
            " service_name TEXT NOT NULL DEFAULT '',"
            " start_ns BIGINT NOT NULL,"
            " end_ns BIGINT NOT NULL,"
            " status TEXT NOT NULL,"
            " attributes TEXT NOT NULL,"
            " received_at DOUBLE PRECISION NOT NULL,"
            " PRIMARY KEY (trace_id, span_id))",
            "CREATE TABLE traces ("
            " trace_id TEXT PRIMARY KEY,"
            " status TEXT NOT NULL DEFAULT '',"
            " status_end_ns BIGINT,"
            " error_message TEXT NOT NULL DEFAULT '',"
            + "".join(f" {name} TEXT NOT NULL DEFAULT ''," for name in IDENTITY_ATTRIBUTES)
            + " start_ns BIGINT,"
            " end_ns BIGINT,"
            " created_at DOUBLE PRECISION,"
            " agent_duration_ns BIGINT NOT NULL DEFAULT 0,"
            " updated_at DOUBLE PRECISION,"
            + "".join(f" {kind}_payload TEXT, {kind}_payload_end_ns BIGINT," for kind in _PAYLOAD_KINDS)
            + " CHECK (trace_id <> ''))",
            "CREATE INDEX traces_created_at ON traces (created_at DESC)",
            "CREATE INDEX traces_status_created_at ON traces (status, created_at DESC)",
            "CREATE INDEX traces_instance_created_at ON traces (instance_name, created_at DESC)",
            "CREATE INDEX traces_user_created_at ON traces (source_user_id, created_at DESC)",
            "CREATE INDEX traces_session_created_at ON traces (session_id, created_at DESC)",
        ],
    ),
    Migration(
        2,
        "message_links_and_events",
        [
            # (instance, channel message id) → the trace of that message (core/message_events.py).
            "CREATE TABLE message_links ("
            " instance_name TEXT NOT NULL,"
            " channel_message_id TEXT NOT NULL,"
            " trace_id TEXT NOT NULL,"
            " created_at DOUBLE PRECISION NOT NULL,"
            " PRIMARY KEY (instance_name, channel_message_id))",
            "CREATE INDEX message_links_channel_message_id ON message_links (channel_message_id)",
            "CREATE INDEX message_links_trace_id ON message_links (trace_id)",
            # Receipts, edits, deletions: one row per distinct event; `span` holds it while its trace is unknown
            # (trace_id ''), then it is a span of that trace and the row only keeps repeats out.
            "CREATE TABLE message_events ("
            " instance_name TEXT NOT NULL,"
            " event_key TEXT NOT NULL,"
            " channel_message_id TEXT NOT NULL,"
            " trace_id TEXT NOT NULL DEFAULT '',"
            " span TEXT NOT NULL DEFAULT '',"
            " received_at DOUBLE PRECISION NOT NULL,"
            " PRIMARY KEY (instance_name, event_key))",
            "CREATE INDEX message_events_message ON message_events (channel_message_id, trace_id)",
            "CREATE INDEX message_events_trace_id ON message_events (trace_id, received_at)",
        ],
    ),
    Migration(
        3,
        "trace_attempts_and_message_fields",
        [
            # Failed attempts shown while processing, the inbound message's type/text/media for the list filters, the
            # failing step and a stored duration for analytics (percentiles sort on it).
            "ALTER TABLE traces ADD COLUMN attempts INTEGER NOT NULL DEFAULT 0",
            "ALTER TABLE traces ADD COLUMN attempt_error TEXT NOT NULL DEFAULT ''",
            "ALTER TABLE traces ADD COLUMN attempt_error_end_ns BIGINT",
            "ALTER TABLE traces ADD COLUMN next_retry_at DOUBLE PRECISION",
            "ALTER TABLE traces ADD COLUMN next_retry_end_ns BIGINT",
            "ALTER TABLE traces ADD COLUMN message_type TEXT NOT NULL DEFAULT ''",
            "ALTER TABLE traces ADD COLUMN message_text TEXT NOT NULL DEFAULT ''",
            "ALTER TABLE traces ADD COLUMN has_media INTEGER NOT NULL DEFAULT 0",
            "ALTER TABLE traces ADD COLUMN error_stage TEXT NOT NULL DEFAULT ''",
            "ALTER TABLE traces ADD COLUMN duration_ms BIGINT NOT NULL DEFAULT 0",
            "UPDATE traces SET duration_ms = (end_ns - start_ns) / 1000000 WHERE end_ns > start_ns",
            "CREATE INDEX traces_channel_created_at ON traces (source_channel, created_at DESC)",
            "CREATE INDEX traces_type_created_at ON traces (message_type, created_at DESC)",
            # Covering indexes of the analytics statements: a time window or an instance reads only these.
            "CREATE INDEX traces_analytics_time ON traces (created_at, status, instance_name, source_channel,"
            " message_type, error_stage, duration_ms, agent_duration_ns)",
            "CREATE INDEX traces_analytics_instance ON traces (instance_name, created_at, status, source_channel,"
            " message_type, error_stage, duration_ms, agent_duration_ns)",
        ],
    ),
    Migration(
        4,
        "erased_traces",
        [
            # The traces a person's erasure deleted: a span of one that is still on its way (another service
            # exports it later) is dropped on arrival instead of bringing a partial trace back (core/erasure.py).
            "CREATE TABLE erased_traces (trace_id TEXT PRIMARY KEY, erased_at DOUBLE PRECISION NOT NULL)",
            "CREATE INDEX erased_traces_erased_at ON erased_traces (erased_at)",
        ],
    ),
    Migration(
        5,
        "erased_senders",
        [
            # Whose traces an erasure deleted (a sender id, or a one-to-one session id) and when: a trace of theirs
            # that tracing had not stored yet (its spans still on their way) is erased when it arrives, if it started
            # before the erasure. A later message is a new one and stays.
            "CREATE TABLE erased_senders (instance_name TEXT NOT NULL, kind TEXT NOT NULL, value TEXT NOT NULL,"
            " erased_at DOUBLE PRECISION NOT NULL, PRIMARY KEY (instance_name, kind, value))",
            "CREATE INDEX erased_senders_value ON erased_senders (value)",
            "CREATE INDEX erased_senders_erased_at ON erased_senders (erased_at)",
        ],
    ),
]

_MAX_TEXT_FILTER = 200
"""Longest text search accepted (the LIKE scan is bounded by the time window and this)."""

_ERASED_COLUMNS: tuple[tuple[str, str], ...] = (("trace_id", "text"), ("erased_at", "float8"))
_ERASED_SENDER_COLUMNS: tuple[tuple[str, str], ...] = (
    ("instance_name", "text"),
    ("kind", "text"),
    ("value", "text"),
    ("erased_at", "float8"),
)
_SENDER, _SESSION = "sender", "session"
"""The kinds of erased_senders rows: a trace matches by its source_user_id or by its session_id."""


async def _erase_traces(tx: Executor, bulk: _Bulk, trace_ids: Sequence[str], erased_at: float) -> None:
    """Delete these traces with their spans and events and remember them as erased (core/erasure.py).

    The trace rows go first: deleting one waits for a batch that holds it locked (lock_traces), so the spans that
    batch committed are seen, and deleted, by the next statement. The links stay (ids only, until retention), so a
    receipt or an edit of one of these messages that comes later is recognised and dropped instead of waiting, with
    the chat and text, for a trace that will never come; those waiting already go now."""
    param = bulk.id_param(sorted(set(trace_ids)))
    for table in ("traces", "spans", "message_events"):
        await tx.execute(f"DELETE FROM {table} WHERE trace_id IN ({bulk.id_set('$1')})", param)
    await tx.execute(
        "DELETE FROM message_events WHERE trace_id = '' AND channel_message_id IN (SELECT channel_message_id FROM"
        f" message_links WHERE trace_id IN ({bulk.id_set('$1')}) AND message_links.instance_name ="
        " message_events.instance_name)",
        param,
    )
    await bulk.insert(
        tx,
        "erased_traces",
        _ERASED_COLUMNS,
        [(trace_id, erased_at) for trace_id in sorted(set(trace_ids))],
        "ON CONFLICT (trace_id) DO NOTHING",
    )


_LINK_COLUMNS: tuple[tuple[str, str], ...] = (
    ("instance_name", "text"),
    ("channel_message_id", "text"),
    ("trace_id", "text"),
    ("created_at", "float8"),
)
_EVENT_COLUMNS: tuple[tuple[str, str], ...] = (
    ("instance_name", "text"),
    ("event_key", "text"),
    ("channel_message_id", "text"),
    ("span", "text"),
    ("received_at", "float8"),
)

_SPAN_COLUMNS: tuple[tuple[str, str], ...] = (
    ("trace_id", "text"),
    ("span_id", "text"),
    ("parent_span_id", "text"),
    ("name", "text"),
    ("service_name", "text"),
    ("start_ns", "bigint"),
    ("end_ns", "bigint"),
    ("status", "text"),
    ("attributes", "text"),
    ("received_at", "float8"),
)
_AGGREGATE_COLUMNS: tuple[tuple[str, str], ...] = (
    ("trace_id", "text"),
    ("status", "text"),
    ("status_end_ns", "bigint"),
    ("error_message", "text"),
    *((name, "text") for name in IDENTITY_ATTRIBUTES),
    ("start_ns", "bigint"),
    ("end_ns", "bigint"),
    ("agent_duration_ns", "bigint"),
    *((f"{kind}_payload_end_ns", "bigint") for kind in _PAYLOAD_KINDS),
    ("attempts", "int"),
    ("attempt_error", "text"),
    ("attempt_error_end_ns", "bigint"),
    ("next_retry_at", "float8"),
    ("next_retry_end_ns", "bigint"),
    *((name, "text") for name in MESSAGE_ATTRIBUTES),
    ("has_media", "int"),
    ("error_stage", "text"),
)
"""The columns a TraceAggregate is loaded from (payload texts stay in the table)."""
_TRACE_WRITE_COLUMNS: tuple[tuple[str, str], ...] = (
    *_AGGREGATE_COLUMNS,
    ("created_at", "float8"),
    ("updated_at", "float8"),
    ("duration_ms", "bigint"),
    *((f"{kind}_payload", "text") for kind in _PAYLOAD_KINDS),
)
_SUMMARY_COLUMNS = ", ".join(
    [
        "trace_id",
        "status",
        "error_message",
        *IDENTITY_ATTRIBUTES,
        "start_ns",
        "end_ns",
        "agent_duration_ns",
        "updated_at",
        "attempts",
        "attempt_error",
        "next_retry_at",
        *MESSAGE_ATTRIBUTES,
        "has_media",
        "error_stage",
    ]
)
_SQLITE_MAX_VARIABLES = 32_766
_SQLITE_ROWS_PER_STATEMENT = 128
"""Rows per multi-row INSERT on SQLite: far faster than one statement of 32,766 variables (SQLite compiles a huge
VALUES upsert slowly: 10,000 traces took 6.6 s in 885-row statements, 1.8 s in 100-row ones)."""


POSTGRES_SETTINGS = {"work_mem": "32MB"}
"""Settings of tracing's PostgreSQL connections. The analytics GROUP BY has tens of thousands of groups over a million
traces: with the default 4 MB PostgreSQL sorts them on disk (4 s at 1M traces) instead of hashing them in memory
(0.7 s). A bound, not an allocation: tracing's other statements are key lookups and small batches, which use what
they need."""


async def open_tracing_database(url: str) -> Database:
    """Open the tracing database at `url` and bring its schema up to date."""
    db = await open_database(url, SCHEMA, postgres_settings=POSTGRES_SETTINGS)
    try:
        await migrate(db, MIGRATIONS, lock_key=SCHEMA)
    except BaseException:
        await db.close()
        raise
    return db


def _chunks(items: Sequence[Any], size: int) -> Iterable[Sequence[Any]]:
    for index in range(0, len(items), size):
        yield items[index : index + size]


_BUCKET_STEPS = ((100, 1), (1_000, 10), (10_000, 100), (100_000, 1_000), (1_000_000, 10_000))
"""(durations below this many ms, bucket width): the value itself below 100 ms, else its first two significant
digits; 100 s wide above 1,000 s. ~200 buckets cover 0 ms to 3 hours."""
_WIDEST_BUCKET = 100_000

_DURATION_BUCKET = (
    "CASE "
    + " ".join(f"WHEN duration_ms < {below} THEN duration_ms / {width} * {width}" for below, width in _BUCKET_STEPS)
    + f" ELSE duration_ms / {_WIDEST_BUCKET} * {_WIDEST_BUCKET} END"
)
"""A duration's bucket, as its lower bound in ms (integer division truncates on both databases)."""


def _bucket_width(lower_ms: int) -> int:
    """The width of the bucket starting at `lower_ms` (_BUCKET_STEPS)."""
    return next((width for below, width in _BUCKET_STEPS if lower_ms < below), _WIDEST_BUCKET)


_BREAKDOWNS = ("instance_name", "source_channel", "status", "message_type")
"""The analytics breakdowns every trace counts in; errors also count by `error_stage`."""


class _Tally:
    """One breakdown value's traces: count, errors, summed duration and duration histogram (bucket → count)."""

    __slots__ = ("count", "errors", "histogram", "total_ms")

    def __init__(self) -> None:
        self.count = 0
        self.errors = 0
        self.total_ms = 0.0
        self.histogram: dict[int, int] = {}

    def add(self, count: int, errors: int, total_ms: float, bucket_ms: int) -> None:
        self.count += count
        self.errors += errors
        self.total_ms += total_ms
        self.histogram[bucket_ms] = self.histogram.get(bucket_ms, 0) + count

    def bucket(self, key: str) -> Bucket:
        return Bucket(
            key=key,
            count=self.count,
            error_count=self.errors,
            avg_duration_ms=round(self.total_ms / self.count, 3),
            p50_duration_ms=_percentile(self.histogram, self.count, 0.5),
            p95_duration_ms=_percentile(self.histogram, self.count, 0.95),
        )


def _breakdowns_sql(clause: str) -> str:
    """One statement: the traces `clause` selects grouped by all five dimensions and the duration bucket (`g`), then
    those groups added up per breakdown value and bucket, so the database does the adding and only a few thousand
    rows (breakdown values by buckets) come back, whatever the number of traces."""
    per_value = [
        f"SELECT '{name}' AS breakdown, {name} AS value, bucket_ms, SUM(n) AS n,"
        " SUM(CASE WHEN status = 'error' THEN n ELSE 0 END) AS errors, SUM(total_ms) AS total_ms,"
        f" SUM(agent_n) AS agent_n FROM g GROUP BY {name}, bucket_ms"
        for name in _BREAKDOWNS
    ]
    per_value.append(
        "SELECT 'error_stage' AS breakdown, error_stage AS value, bucket_ms, SUM(n) AS n, SUM(n) AS errors,"
        " SUM(total_ms) AS total_ms, SUM(agent_n) AS agent_n FROM g WHERE status = 'error'"
        " GROUP BY error_stage, bucket_ms"
    )
    return (
        "WITH g AS (SELECT instance_name, source_channel, status, message_type, error_stage, "
        f"{_DURATION_BUCKET} AS bucket_ms, COUNT(*) AS n, SUM(duration_ms) AS total_ms, "
        "SUM(CASE WHEN agent_duration_ns > 0 THEN 1 ELSE 0 END) AS agent_n "
        f"FROM traces WHERE {clause} "
        "GROUP BY instance_name, source_channel, status, message_type, error_stage, bucket_ms) "
        + " UNION ALL ".join(per_value)
    )


def _tally(rows: Iterable[Row]) -> tuple[dict[str, dict[str, _Tally]], int]:
    """The rows of `_breakdowns_sql` as tallies per breakdown and value, and how many traces had an agent call."""
    tallies: dict[str, dict[str, _Tally]] = {name: {} for name in (*_BREAKDOWNS, "error_stage")}
    agent_total = 0
    for row in rows:
        breakdown = row["breakdown"]
        if breakdown == "status":
            agent_total += int(row["agent_n"] or 0)
        values = tallies[breakdown]
        tally = values.get(row["value"])
        if tally is None:
            tally = values[row["value"]] = _Tally()
        tally.add(int(row["n"]), int(row["errors"] or 0), float(row["total_ms"] or 0), int(row["bucket_ms"] or 0))
    return tallies, agent_total


def _buckets(tallies: dict[str, _Tally]) -> list[Bucket]:
    """One breakdown's buckets, largest first (ties by key)."""
    return sorted((tally.bucket(key) for key, tally in tallies.items()), key=lambda b: (-b.count, b.key))


def _percentile(histogram: dict[int, int], count: int, fraction: float) -> float:
    """The nearest-rank percentile (rank ceil(fraction·count)) of a bucketed histogram: the value itself in a bucket
    of width 1, else interpolated by the rank's position inside its bucket."""
    rank = max(1, math.ceil(fraction * count - 1e-9))
    seen = 0
    for lower in sorted(histogram):
        n = histogram[lower]
        if seen + n >= rank:
            width = _bucket_width(lower)
            if width == 1:
                return float(lower)
            return round(lower + width * (rank - seen - 0.5) / n, 3)
        seen += n
    return 0.0


def _like_pattern(text: str) -> str:
    """A LIKE pattern matching `text` anywhere, its wildcards taken literally, lower-cased (the column is too)."""
    escaped = text[:_MAX_TEXT_FILTER].lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def _parse_payload(text: str) -> Any:
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        # A payload attribute that is not JSON is still worth showing, as the string it is.
        return text


def _span_from_row(row: Row) -> SpanRecord:
    attributes = orjson.loads(row["attributes"])
    return SpanRecord(
        trace_id=row["trace_id"],
        span_id=row["span_id"],
        parent_span_id=row["parent_span_id"],
        name=row["name"],
        start_ns=int(row["start_ns"]),
        end_ns=int(row["end_ns"]),
        status=row["status"],
        service_name=row["service_name"],
        attributes=attributes if isinstance(attributes, dict) else {},
    )


def _trace_from_row(
    row: Row, *, payloads: dict[str, Any] | None = None, spans: list[SpanRecord] | None = None
) -> Trace:
    start_ns = int(row["start_ns"] or 0)
    processing = row["status"] == "processing"
    return Trace(
        trace_id=row["trace_id"],
        status=row["status"],
        instance_name=row["instance_name"],
        source_channel=row["source_channel"],
        source_user_id=row["source_user_id"],
        session_id=row["session_id"],
        message_id=row["message_id"],
        channel_message_id=row["channel_message_id"],
        # While the message is retried, its error is the latest failed attempt's.
        error_message=row["attempt_error"] if processing else row["error_message"],
        start_ns=start_ns,
        end_ns=int(row["end_ns"] or start_ns),
        agent_duration_ns=int(row["agent_duration_ns"]),
        updated_at=float(row["updated_at"] or 0.0),
        payloads=payloads or {},
        spans=spans or [],
        attempts=int(row["attempts"] or 0),
        next_retry_at=float(row["next_retry_at"]) if processing and row["next_retry_at"] is not None else None,
        last_attempt_error=row["attempt_error"],
        message_type=row["message_type"],
        has_media=bool(row["has_media"]),
        message_text=row["message_text"],
        error_stage=row["error_stage"],
    )


def _aggregate_from_row(row: Row) -> TraceAggregate:
    aggregate = TraceAggregate(
        trace_id=row["trace_id"],
        status=row["status"],
        status_end_ns=row["status_end_ns"],
        error_message=row["error_message"],
        start_ns=row["start_ns"],
        end_ns=row["end_ns"],
        agent_duration_ns=int(row["agent_duration_ns"]),
        attempts=int(row["attempts"] or 0),
        attempt_error=row["attempt_error"],
        attempt_error_end_ns=row["attempt_error_end_ns"],
        next_retry_at=row["next_retry_at"],
        next_retry_end_ns=row["next_retry_end_ns"],
        has_media=bool(row["has_media"]),
        error_stage=row["error_stage"],
    )
    for name in (*IDENTITY_ATTRIBUTES, *MESSAGE_ATTRIBUTES):
        setattr(aggregate, name, row[name])
    for kind in _PAYLOAD_KINDS:
        end_ns = row[f"{kind}_payload_end_ns"]
        if end_ns is not None:
            aggregate.payload_end_ns[kind] = int(end_ns)
    return aggregate


def _aggregate_row(aggregate: TraceAggregate, updated_at: float) -> list[Any]:
    """Values in _TRACE_WRITE_COLUMNS order; a payload is None unless it changed (the upsert keeps the old one)."""
    values: list[Any] = [
        aggregate.trace_id,
        aggregate.status,
        aggregate.status_end_ns,
        aggregate.error_message,
        *(getattr(aggregate, name) for name in IDENTITY_ATTRIBUTES),
        aggregate.start_ns,
        aggregate.end_ns,
        aggregate.agent_duration_ns,
        *(aggregate.payload_end_ns.get(kind) for kind in _PAYLOAD_KINDS),
        aggregate.attempts,
        aggregate.attempt_error,
        aggregate.attempt_error_end_ns,
        aggregate.next_retry_at,
        aggregate.next_retry_end_ns,
        *(getattr(aggregate, name) for name in MESSAGE_ATTRIBUTES),
        int(aggregate.has_media),
        aggregate.error_stage,
        aggregate.start_ns / 1e9 if aggregate.start_ns is not None else None,
        updated_at,
        max(0, (aggregate.end_ns or 0) - (aggregate.start_ns or 0)) // 1_000_000,
        *(aggregate.new_payloads.get(kind) for kind in _PAYLOAD_KINDS),
    ]
    return values


class _Bulk:
    """Dialect-specific spelling of the bulk statements."""

    def __init__(self, dialect: str) -> None:
        self.postgres = dialect == "postgresql"

    def id_set(self, placeholder: str) -> str:
        """A sub-select yielding the ids passed (as `id_param`) in `placeholder`."""
        if self.postgres:
            return f"SELECT unnest({placeholder}::text[])"
        return f"SELECT value FROM json_each({placeholder})"

    def id_param(self, ids: Sequence[str]) -> Any:
        return list(ids) if self.postgres else orjson.dumps(list(ids)).decode()

    async def insert(
        self, tx: Executor, table: str, columns: Sequence[tuple[str, str]], rows: Sequence[Sequence[Any]], tail: str
    ) -> list[Row]:
        """INSERT all `rows` followed by `tail` (ON CONFLICT ..., RETURNING ...); returns the rows RETURNING gave."""
        names = ", ".join(name for name, _ in columns)
        if self.postgres:
            arrays = ", ".join(f"${i}::{kind}[]" for i, (_, kind) in enumerate(columns, start=1))
            sql = f"INSERT INTO {table} ({names}) SELECT * FROM unnest({arrays}) {tail}"
            return await tx.fetch(sql, *(list(column) for column in zip(*rows, strict=True)))
        returned: list[Row] = []
        width = len(columns)
        for chunk in _chunks(rows, min(_SQLITE_MAX_VARIABLES // width, _SQLITE_ROWS_PER_STATEMENT)):
            groups = values_rows(len(chunk), width)
            args = [value for row in chunk for value in row]
            returned.extend(await tx.fetch(f"INSERT INTO {table} ({names}) VALUES {groups} {tail}", *args))
        return returned


class SqlIngestBatch:
    """The statements of one Export batch, all inside one transaction (see TraceStore.ingest_batch)."""

    def __init__(self, tx: Executor, bulk: _Bulk) -> None:
        self._tx = tx
        self._bulk = bulk

    async def insert_spans(self, spans: Sequence[SpanRecord], received_at: float) -> list[SpanRecord]:
        """Insert the spans, skipping ones already stored; returns those actually inserted."""
        if not spans:
            return []
        ordered = sorted(spans, key=lambda s: (s.trace_id, s.span_id))  # one lock order for concurrent batches
        rows = [
            (
                s.trace_id,
                s.span_id,
                s.parent_span_id,
                s.name,
                s.service_name,
                s.start_ns,
                s.end_ns,
                s.status,
                orjson.dumps(s.attributes, default=str).decode(),
                received_at,
            )
            for s in ordered
        ]
        returned = await self._bulk.insert(
            self._tx,
            "spans",
            _SPAN_COLUMNS,
            rows,
            "ON CONFLICT (trace_id, span_id) DO NOTHING RETURNING trace_id, span_id",
        )
        inserted = {(row["trace_id"], row["span_id"]) for row in returned}
        return [s for s in ordered if (s.trace_id, s.span_id) in inserted]

    async def lock_traces(self, trace_ids: Sequence[str]) -> dict[str, TraceAggregate]:
        """The aggregates of these traces (empty ones for new traces), locked until the transaction ends.

        Creating the missing rows first gives concurrent batches of the same new trace a row to queue on, so two
        replicas or two overlapping Export calls cannot both start from an empty aggregate.
        """
        if not trace_ids:
            return {}
        ordered = sorted(set(trace_ids))
        param = self._bulk.id_param(ordered)
        await self._tx.execute(
            f"INSERT INTO traces (trace_id) {self._bulk.id_set('$1')} WHERE true ON CONFLICT (trace_id) DO NOTHING",
            param,
        )
        names = ", ".join(name for name, _ in _AGGREGATE_COLUMNS)
        rows = await self._tx.fetch(
            f"SELECT {names} FROM traces WHERE trace_id IN ({self._bulk.id_set('$1')}) ORDER BY trace_id FOR UPDATE",
            param,
        )
        return {row["trace_id"]: _aggregate_from_row(row) for row in rows}

    async def erased_among(self, trace_ids: Sequence[str], aggregates: Iterable[TraceAggregate] = ()) -> set[str]:
        """Which of these traces an erasure deleted, or (given their `aggregates`) would have deleted had they been
        stored when it ran: their sender or one-to-one session was erased after they started. One statement."""
        ids = sorted(set(trace_ids))
        candidates = [a for a in aggregates if a.instance_name and (a.source_user_id or a.session_id)]
        values = sorted({v for a in candidates for v in (a.source_user_id, a.session_id) if v})
        if not ids and not values:
            return set()
        rows = await self._tx.fetch(
            "SELECT '' AS instance_name, 'trace' AS kind, trace_id AS value, erased_at FROM erased_traces "
            f"WHERE trace_id IN ({self._bulk.id_set('$1')}) UNION ALL "
            "SELECT instance_name, kind, value, erased_at FROM erased_senders "
            f"WHERE value IN ({self._bulk.id_set('$2')})",
            self._bulk.id_param(ids),
            self._bulk.id_param(values),
        )
        erased = {row["value"] for row in rows if row["kind"] == "trace"}
        marks = {(row["instance_name"], row["kind"], row["value"]): float(row["erased_at"]) for row in rows}
        for a in candidates:
            erased_at = max(
                marks.get((a.instance_name, _SENDER, a.source_user_id), -1.0),
                marks.get((a.instance_name, _SESSION, a.session_id), -1.0),
            )
            if erased_at >= 0 and a.start_ns is not None and a.start_ns / 1e9 <= erased_at:
                erased.add(a.trace_id)
        return erased

    async def erase(self, trace_ids: Sequence[str], erased_at: float) -> None:
        """Erase these traces as an erasure does (an erased trace keeps its first erasure time)."""
        if trace_ids:
            await _erase_traces(self._tx, self._bulk, trace_ids, erased_at)

    async def discard(self, trace_ids: Sequence[str]) -> None:
        """Remove what this batch wrote for these traces (spans, trace rows, links)."""
        if trace_ids:
            param = self._bulk.id_param(sorted(set(trace_ids)))
            for table in ("spans", "traces", "message_links"):
                await self._tx.execute(f"DELETE FROM {table} WHERE trace_id IN ({self._bulk.id_set('$1')})", param)

    async def save_traces(self, aggregates: Iterable[TraceAggregate], updated_at: float) -> None:
        """Write the aggregates back; payload texts are only written where they changed."""
        rows = [_aggregate_row(a, updated_at) for a in sorted(aggregates, key=lambda a: a.trace_id)]
        if not rows:
            return
        assignments = ", ".join(
            f"{name} = COALESCE(excluded.{name}, traces.{name})"
            if name.endswith("_payload")
            else f"{name} = excluded.{name}"
            for name, _ in _TRACE_WRITE_COLUMNS
            if name != "trace_id"
        )
        await self._bulk.insert(
            self._tx, "traces", _TRACE_WRITE_COLUMNS, rows, f"ON CONFLICT (trace_id) DO UPDATE SET {assignments}"
        )

    async def save_links(self, links: Mapping[Link, str], created_at: float) -> None:
        """Remember each message's trace; the first trace to name a message keeps it."""
        rows = [
            (instance, message_id, trace_id, created_at) for (instance, message_id), trace_id in sorted(links.items())
        ]
        await self._bulk.insert(
            self._tx,
            "message_links",
            _LINK_COLUMNS,
            rows,
            "ON CONFLICT (instance_name, channel_message_id) DO NOTHING",
        )

    async def traces_of(self, links: Sequence[Link]) -> dict[Link, str]:
        """The known traces of these messages."""
        wanted = set(links)
        ids = sorted({message_id for _, message_id in wanted})
        rows = await self._tx.fetch(
            "SELECT instance_name, channel_message_id, trace_id FROM message_links "
            f"WHERE channel_message_id IN ({self._bulk.id_set('$1')})",
            self._bulk.id_param(ids),
        )
        found = {(row["instance_name"], row["channel_message_id"]): row["trace_id"] for row in rows}
        return {link: trace_id for link, trace_id in found.items() if link in wanted}

    async def record_events(self, events: Sequence[MessageEvent], received_at: float) -> list[MessageEvent]:
        """Keep new events as pending (an event key the instance has seen is a repeat); returns the new ones."""
        unique = {(e.link[0], e.key): e for e in events}
        rows = [
            (instance, key, event.link[1], span_to_json(event.span), received_at)
            for (instance, key), event in sorted(unique.items())
        ]
        returned = await self._bulk.insert(
            self._tx,
            "message_events",
            _EVENT_COLUMNS,
            rows,
            "ON CONFLICT (instance_name, event_key) DO NOTHING RETURNING instance_name, event_key",
        )
        new = {(row["instance_name"], row["event_key"]) for row in returned}
        return [event for ident, event in sorted(unique.items()) if ident in new]

    async def pending_events(self, links: Sequence[Link]) -> list[MessageEvent]:
        """The events about these messages still waiting for their trace."""
        wanted = set(links)
        ids = sorted({message_id for _, message_id in wanted})
        rows = await self._tx.fetch(
            "SELECT instance_name, event_key, channel_message_id, span FROM message_events "
            f"WHERE trace_id = '' AND channel_message_id IN ({self._bulk.id_set('$1')}) "
            "ORDER BY instance_name, event_key",
            self._bulk.id_param(ids),
        )
        pending: list[MessageEvent] = []
        for row in rows:
            link = (row["instance_name"], row["channel_message_id"])
            span = span_from_json(row["span"])
            if link in wanted and span is not None:
                pending.append(MessageEvent(link, row["event_key"], span))
        return pending

    async def mark_filed(self, filed: Sequence[tuple[MessageEvent, str]]) -> None:
        """The events are spans of their traces now: keep only the row that keeps repeats out."""
        for event, trace_id in filed:
            await self._tx.execute(
                "UPDATE message_events SET trace_id = $1, span = '' WHERE instance_name = $2 AND event_key = $3",
                trace_id,
                event.link[0],
                event.key,
            )


class TraceStore:
    """Reads and writes spans and traces in one service-owned database."""

    def __init__(self, db: Database) -> None:
        self._db = db
        self._bulk = _Bulk(db.dialect)

    @contextlib.asynccontextmanager
    async def ingest_batch(self) -> AsyncIterator[SqlIngestBatch]:
        """One transaction for a whole Export batch: committed on exit, rolled back on error."""
        async with self._db.transaction() as tx:
            yield SqlIngestBatch(tx, self._bulk)

    async def list_traces(self, query: TraceQuery) -> tuple[list[Trace], int]:
        """The message traces matching `query`, newest first, without payloads or spans; plus the match count."""
        conditions = ["status <> ''"]
        args: list[Any] = []

        def where(template: str, value: Any) -> None:
            args.append(value)
            conditions.append(template.format(f"${len(args)}"))

        if query.instance_name:
            where("instance_name = {}", query.instance_name)
        if query.status:
            where("status = {}", query.status)
        if query.source_user_id:
            where("source_user_id = {}", query.source_user_id)
        if query.session_id:
            where("session_id = {}", query.session_id)
        if query.created_from is not None:
            where("created_at >= {}", query.created_from)
        if query.created_before is not None:
            where("created_at < {}", query.created_before)
        if query.source_channel:
            where("source_channel = {}", query.source_channel)
        if query.message_type:
            where("message_type = {}", query.message_type)
        if query.has_media is not None:
            where("has_media = {}", int(query.has_media))
        if query.text:
            where("LOWER(message_text) LIKE {} ESCAPE '\\'", _like_pattern(query.text))
        clause = " AND ".join(conditions)
        total = int(await self._db.fetchval(f"SELECT COUNT(*) FROM traces WHERE {clause}", *args) or 0)
        limit, offset = len(args) + 1, len(args) + 2
        rows = await self._db.fetch(
            f"SELECT {_SUMMARY_COLUMNS} FROM traces WHERE {clause} "
            f"ORDER BY created_at DESC, trace_id DESC LIMIT ${limit} OFFSET ${offset}",
            *args,
            query.page_size,
            (query.page - 1) * query.page_size,
        )
        return [_trace_from_row(row) for row in rows], total

    async def get_trace(self, trace_id: str) -> Trace | None:
        """One message trace with its payloads and spans (ordered by start), or None."""
        payload_columns = ", ".join(f"{kind}_payload" for kind in _PAYLOAD_KINDS)
        row = await self._db.fetchrow(
            f"SELECT {_SUMMARY_COLUMNS}, {payload_columns} FROM traces WHERE trace_id = $1 AND status <> ''",
            trace_id,
        )
        if row is None:
            return None
        span_rows = await self._db.fetch(
            "SELECT trace_id, span_id, parent_span_id, name, service_name, start_ns, end_ns, status, attributes "
            "FROM spans WHERE trace_id = $1 ORDER BY start_ns, span_id",
            trace_id,
        )
        payloads = {
            kind: _parse_payload(row[f"{kind}_payload"])
            for kind in _PAYLOAD_KINDS
            if row[f"{kind}_payload"] is not None
        }
        return _trace_from_row(row, payloads=payloads, spans=[_span_from_row(r) for r in span_rows])

    async def analytics(self, query: AnalyticsQuery) -> Analytics:
        """The summary of the message traces `query` selects: one GROUP BY pass over the (instance, channel, status,
        message type, error stage, duration bucket) combinations, added up per breakdown in the same statement
        (counts, means, and each breakdown value's duration histogram for its percentiles), and the exact overall
        percentiles. All read only the covering analytics indexes (migration 3)."""
        conditions = ["status <> ''"]
        args: list[Any] = []
        if query.instance_name:
            args.append(query.instance_name)
            conditions.append(f"instance_name = ${len(args)}")
        if query.created_from is not None:
            args.append(query.created_from)
            conditions.append(f"created_at >= ${len(args)}")
        if query.created_before is not None:
            args.append(query.created_before)
            conditions.append(f"created_at < ${len(args)}")
        clause = " AND ".join(conditions)
        rows = await self._db.fetch(_breakdowns_sql(clause), *args)
        tallies, agent_total = _tally(rows)
        by_status = tallies["status"]
        sent = by_status["sent"].count if "sent" in by_status else 0
        finished = sent + (by_status["error"].count if "error" in by_status else 0)
        total = sum(tally.count for tally in by_status.values())
        return Analytics(
            total=total,
            success_rate=sent / finished if finished else 0.0,
            duration=await self._duration_stats("duration_ms", clause, args, total),
            agent_duration=await self._duration_stats(
                "agent_duration_ns / 1000000.0", f"{clause} AND agent_duration_ns > 0", args, agent_total
            ),
            by_instance=_buckets(tallies["instance_name"]),
            by_channel=_buckets(tallies["source_channel"]),
            by_status=_buckets(by_status),
            by_message_type=_buckets(tallies["message_type"]),
            errors_by_stage=_buckets(tallies["error_stage"]),
        )

    async def _duration_stats(self, expression: str, clause: str, args: Sequence[Any], count: int) -> DurationStats:
        """Nearest-rank p50/p95 (the value at rank ceil(p·n)) and the mean of `count` values: PostgreSQL's
        percentile_disc, SQLite's ROW_NUMBER over one sort, so both databases give the same answer."""
        if count == 0:
            return DurationStats()
        if self._bulk.postgres:
            row = await self._db.fetchrow(
                f"SELECT percentile_disc(ARRAY[0.5, 0.95]) WITHIN GROUP (ORDER BY {expression}) AS p, "
                f"AVG({expression}) AS avg_ms FROM traces WHERE {clause}",
                *args,
            )
            if row is None or row["p"] is None:
                return DurationStats()
            p50, p95 = (float(value) for value in row["p"])
            return DurationStats(p50, p95, round(float(row["avg_ms"]), 3))
        ranks = [max(1, math.ceil(fraction * count - 1e-9)) for fraction in (0.5, 0.95)]
        first = len(args) + 1
        rows = await self._db.fetch(
            f"SELECT rn, v, (SELECT AVG({expression}) FROM traces WHERE {clause}) AS avg_ms FROM ("
            f"SELECT {expression} AS v, ROW_NUMBER() OVER (ORDER BY {expression}) AS rn FROM traces WHERE {clause}"
            f") WHERE rn IN (${first}, ${first + 1}) ORDER BY rn",
            *args,
            *ranks,
        )
        found = {int(row["rn"]): float(row["v"]) for row in rows}
        average = float(rows[0]["avg_ms"]) if rows else 0.0
        return DurationStats(found.get(ranks[0], 0.0), found.get(ranks[1], 0.0), round(average, 3))

    async def count_older_than(self, cutoff: float) -> int:
        """How many traces `delete_older_than(cutoff)` would delete."""
        return int(await self._db.fetchval("SELECT COUNT(*) FROM traces WHERE created_at < $1", cutoff) or 0)

    async def delete_instance(self, instance_name: str, chunk: int = 1000) -> int:
        """Delete the traces of an instance with their spans (payloads live in both), `chunk` traces per transaction;
        returns the number of traces deleted."""
        deleted = await self._delete_traces("WHERE instance_name = $1", instance_name, chunk)
        async with self._db.transaction() as tx:
            # Links and events of messages whose traces were never stored (pending receipts) go too.
            await tx.execute("DELETE FROM message_events WHERE instance_name = $1", instance_name)
            await tx.execute("DELETE FROM message_links WHERE instance_name = $1", instance_name)
        return deleted

    async def erase_sender(
        self, instance_name: str, sender_ids: Sequence[str], session_ids: Sequence[str], erased_at: float
    ) -> int:
        """Delete the instance's traces sent under one of `sender_ids` or in one of `session_ids`, with their spans and
        events, and remember the traces and the senders so what arrives later is dropped (core/erasure.py); returns
        how many traces went."""
        async with self._db.transaction() as tx:
            marks = [(instance_name, _SENDER, v, erased_at) for v in sender_ids]
            marks += [(instance_name, _SESSION, v, erased_at) for v in session_ids]
            await self._bulk.insert(
                tx,
                "erased_senders",
                _ERASED_SENDER_COLUMNS,
                sorted(marks),
                "ON CONFLICT (instance_name, kind, value) DO UPDATE SET erased_at = excluded.erased_at",
            )
            rows = await tx.fetch(
                "SELECT trace_id FROM traces WHERE instance_name = $1 AND "
                f"(source_user_id IN ({self._bulk.id_set('$2')}) OR session_id IN ({self._bulk.id_set('$3')}))",
                instance_name,
                self._bulk.id_param(sender_ids),
                self._bulk.id_param(session_ids),
            )
            ids = [row["trace_id"] for row in rows]
            if ids:
                await _erase_traces(tx, self._bulk, ids, erased_at)
        return len(ids)

    async def delete_older_than(self, cutoff: float, chunk: int = 1000) -> int:
        """Delete traces created before `cutoff` (epoch seconds) and their spans, `chunk` traces per transaction
        so a large backlog never holds one huge transaction; returns the number of traces deleted."""
        deleted = await self._delete_traces("WHERE created_at < $1 ORDER BY created_at", cutoff, chunk)
        # Events about messages whose trace never came (a receipt of a message sent outside the hub) expire too, and
        # so do erasure marks: no span of a trace that old is still on its way.
        await self._db.execute("DELETE FROM message_events WHERE trace_id = '' AND received_at < $1", cutoff)
        async with self._db.transaction() as tx:
            expired = "SELECT trace_id FROM erased_traces WHERE erased_at < $1"
            for table in ("message_links", "message_events"):
                await tx.execute(f"DELETE FROM {table} WHERE trace_id IN ({expired})", cutoff)
            await tx.execute("DELETE FROM erased_traces WHERE erased_at < $1", cutoff)
            await tx.execute("DELETE FROM erased_senders WHERE erased_at < $1", cutoff)
        return deleted

    async def _delete_traces(self, where: str, arg: object, chunk: int) -> int:
        """Delete the traces `where` selects (one `$1` argument) and their spans, `chunk` traces per transaction."""
        deleted = 0
        while True:
            async with self._db.transaction() as tx:
                rows = await tx.fetch(f"SELECT trace_id FROM traces {where} LIMIT $2", arg, chunk)
                ids = [row["trace_id"] for row in rows]
                if ids:
                    param = self._bulk.id_param(ids)
                    await tx.execute(f"DELETE FROM spans WHERE trace_id IN ({self._bulk.id_set('$1')})", param)
                    await tx.execute(f"DELETE FROM traces WHERE trace_id IN ({self._bulk.id_set('$1')})", param)
                    for table in ("message_links", "message_events"):
                        await tx.execute(f"DELETE FROM {table} WHERE trace_id IN ({self._bulk.id_set('$1')})", param)
            deleted += len(ids)
            if len(ids) < chunk:
                return deleted
