"""Fixtures of the tracing suite: a migrated tracing database and its core, on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from servicekit.database import Database
from services.tracing.core import TracingCore
from services.tracing.storage import TraceStore, open_tracing_database


class Clock:
    """A settable clock (epoch seconds)."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def tracing_db(db_url: str) -> AsyncIterator[Database]:
    db = await open_tracing_database(db_url)
    try:
        yield db
    finally:
        await db.close()


@pytest.fixture
def clock() -> Clock:
    return Clock(1_700_000_100.0)


@pytest.fixture
def core(tracing_db: Database, clock: Clock) -> TracingCore:
    return TracingCore(TraceStore(tracing_db), clock=clock)
