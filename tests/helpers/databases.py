"""Per-test databases: a fresh SQLite file, or a fresh PostgreSQL database created and dropped around the test.

PostgreSQL is the machine's local server (`OMNI_TEST_POSTGRES_URL`, default postgresql://postgres@127.0.0.1:5432/test).
Where it is unreachable the PostgreSQL variants are skipped, except on CI (CI=true), where that is a failure.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

ADMIN_URL = os.environ.get("OMNI_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")


def _with_database(url: str, database: str) -> str:
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, f"/{database}", parts.query, parts.fragment))


@asynccontextmanager
async def postgres_database() -> AsyncIterator[str]:
    """Create an empty database, yield its URL, drop it afterwards."""
    try:
        admin = await asyncpg.connect(ADMIN_URL, timeout=3)
    except (OSError, asyncpg.PostgresError) as exc:
        if os.environ.get("CI") == "true":
            raise
        pytest.skip(f"PostgreSQL unreachable: {exc}")
    name = f"omni_t_{uuid.uuid4().hex[:16]}"
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    try:
        yield _with_database(ADMIN_URL, name)
    finally:
        admin = await asyncpg.connect(ADMIN_URL, timeout=3)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()


@asynccontextmanager
async def database_url(kind: str, tmp_path: Path) -> AsyncIterator[str]:
    """A fresh database URL of `kind` ("sqlite" or "postgres")."""
    if kind == "sqlite":
        yield f"sqlite:///{tmp_path / 'test.db'}"
    else:
        async with postgres_database() as url:
            yield url
