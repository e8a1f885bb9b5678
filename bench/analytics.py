"""`python -m bench.analytics --rows 1000000`: the trace analytics and list queries on a large trace table.

Seeds N message traces directly through the tracing service's storage (`SqlIngestBatch.save_traces`, the write path
the OTLP receiver uses, without spans: the queries read only the `traces` table) on SQLite and, when reachable, on
PostgreSQL (OMNI_BENCH_POSTGRES_URL, default postgresql://postgres@127.0.0.1:5432/test: a scratch database is created
and dropped). The traces spread over 30 days, 5 instances, 3 channels, 4 message types and the 5 statuses. It then
times the analytics summary (the last 24 hours, one instance over all time, everything) and a few list queries, each
the best of three runs, and prints a table.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from servicekit.database import Database
from services.tracing.core.derivation import TraceAggregate
from services.tracing.core.models import AnalyticsQuery, TraceQuery
from services.tracing.storage import SqlIngestBatch, TraceStore, _Bulk, open_tracing_database

NOW = time.time()
DAY = 86_400.0
INSTANCES = [f"tenant-{i}" for i in range(5)]
CHANNELS = ["whatsapp", "discord", "slack"]
TYPES = ["text", "image", "audio", "document"]
STATUSES = ["sent"] * 85 + ["error"] * 8 + ["processing"] * 2 + ["blocked"] * 3 + ["ignored"] * 2
WORDS = ["hello", "order", "status", "price", "thanks", "refund", "delivery", "help", "menu", "hours"]
POSTGRES_URL = os.environ.get("OMNI_BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
BATCH = 5_000


def _aggregate(index: int, rng: random.Random) -> TraceAggregate:
    created = NOW - rng.random() * 30 * DAY
    start_ns = int(created * 1e9)
    duration_ms = int(rng.lognormvariate(6.5, 0.6))
    status = rng.choice(STATUSES)
    agent_ms = int(duration_ms * rng.uniform(0.5, 0.9)) if status in ("sent", "error") else 0
    return TraceAggregate(
        trace_id=f"{index:032x}",
        status=status,
        status_end_ns=None if status == "processing" else start_ns + duration_ms * 1_000_000,
        error_message="agent returned HTTP 500" if status == "error" else "",
        instance_name=rng.choice(INSTANCES),
        source_channel=rng.choice(CHANNELS),
        source_user_id=f"user-{rng.randrange(50_000)}",
        session_id=f"session-{rng.randrange(80_000)}",
        message_id=uuid.UUID(int=index).hex,
        start_ns=start_ns,
        end_ns=start_ns + duration_ms * 1_000_000,
        agent_duration_ns=agent_ms * 1_000_000,
        attempts=1,
        message_type=rng.choice(TYPES),
        message_text=" ".join(rng.choices(WORDS, k=6)),
        has_media=rng.random() < 0.2,
        error_stage=rng.choice(["agent", "channel"]) if status == "error" else "",
    )


async def seed(db: Database, rows: int) -> float:
    """Insert `rows` traces in transactions of BATCH; returns the seconds it took."""
    rng = random.Random(11)
    bulk = _Bulk(db.dialect)
    started = time.perf_counter()
    for first in range(0, rows, BATCH):
        aggregates = [_aggregate(i, rng) for i in range(first, min(rows, first + BATCH))]
        async with db.transaction() as tx:
            await SqlIngestBatch(tx, bulk).save_traces(aggregates, updated_at=NOW)
    if db.dialect == "postgresql":
        # What autovacuum does to a table at rest: statistics, and the visibility map index-only scans need.
        await db.execute("VACUUM ANALYZE traces")
    else:
        await db.execute("ANALYZE")
    return time.perf_counter() - started


async def best_of(run: Callable[[], Awaitable[Any]], repeat: int = 3) -> float:
    """The fastest of `repeat` runs, in milliseconds."""
    best = float("inf")
    for _ in range(repeat):
        started = time.perf_counter()
        await run()
        best = min(best, (time.perf_counter() - started) * 1000)
    return best


async def measure(db: Database) -> list[tuple[str, float]]:
    """The timed queries and their best times (ms)."""
    store = TraceStore(db)
    queries: list[tuple[str, Callable[[], Awaitable[Any]]]] = [
        ("analytics, last 24 h", lambda: store.analytics(AnalyticsQuery(created_from=NOW - DAY))),
        ("analytics, 1 instance, last 24 h", lambda: store.analytics(AnalyticsQuery("tenant-1", NOW - DAY))),
        ("analytics, 1 instance, all time", lambda: store.analytics(AnalyticsQuery("tenant-1"))),
        ("analytics, everything", lambda: store.analytics(AnalyticsQuery())),
        ("list page 1, last 24 h", lambda: store.list_traces(TraceQuery(created_from=NOW - DAY))),
        (
            "list, status=error + channel, 24 h",
            lambda: store.list_traces(TraceQuery(status="error", source_channel="slack", created_from=NOW - DAY)),
        ),
        ("list, text search, 24 h", lambda: store.list_traces(TraceQuery(text="refund", created_from=NOW - DAY))),
    ]
    return [(name, await best_of(run)) for name, run in queries]


@asynccontextmanager
async def scratch_postgres() -> AsyncIterator[str | None]:
    """A fresh PostgreSQL database URL (None when the server is unreachable), dropped afterwards."""
    try:
        admin = await asyncpg.connect(POSTGRES_URL, timeout=3)
    except (OSError, asyncpg.PostgresError) as exc:
        print(f"PostgreSQL unreachable ({exc}): skipped")
        yield None
        return
    name = f"omni_bench_{uuid.uuid4().hex[:12]}"
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    parts = urlsplit(POSTGRES_URL)
    try:
        yield urlunsplit((parts.scheme, parts.netloc, f"/{name}", parts.query, parts.fragment))
    finally:
        admin = await asyncpg.connect(POSTGRES_URL, timeout=3)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()


async def run_one(label: str, url: str, rows: int) -> None:
    db = await open_tracing_database(url)
    try:
        seconds = await seed(db, rows)
        print(f"\n{label}: seeded {rows:,} traces in {seconds:.1f}s ({rows / seconds:,.0f}/s)")
        for name, ms in await measure(db):
            print(f"  {name:<40} {ms:>10.1f} ms")
    finally:
        await db.close()


async def main(rows: int, skip_postgres: bool) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        await run_one("SQLite", f"sqlite:///{Path(tmp) / 'traces.db'}", rows)
    if skip_postgres:
        return
    async with scratch_postgres() as url:
        if url is not None:
            await run_one("PostgreSQL", url, rows)


def cli() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.analytics", description=__doc__)
    parser.add_argument("--rows", type=int, default=200_000, help="traces to seed (default 200,000)")
    parser.add_argument("--skip-postgres", action="store_true")
    args = parser.parse_args()
    asyncio.run(main(args.rows, args.skip_postgres))


if __name__ == "__main__":
    cli()
