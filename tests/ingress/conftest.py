"""Fixtures of the ingress suite: a migrated inbox on SQLite and PostgreSQL, and a private span recorder."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from servicekit.database import Database, migrate, open_database
from services.ingress.storage import MIGRATION_LOCK, MIGRATIONS, SCHEMA, InboxStore


@pytest.fixture
async def db(db_url: str) -> AsyncIterator[Database]:
    database = await open_database(db_url, SCHEMA)
    try:
        await migrate(database, MIGRATIONS, lock_key=MIGRATION_LOCK)
        yield database
    finally:
        await database.close()


@pytest.fixture
def store(db: Database) -> InboxStore:
    return InboxStore(db)


@pytest.fixture
def spans() -> Iterator[tuple[TracerProvider, InMemorySpanExporter]]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    yield provider, exporter
    provider.shutdown()
