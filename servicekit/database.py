"""One small async database interface over SQLite (sqlite3) and PostgreSQL (asyncpg).

Services write PostgreSQL-flavoured SQL with `$1` placeholders; on SQLite the placeholders become `?1` and
`FOR UPDATE [SKIP LOCKED]` is dropped (SQLite has one writer, so row locks are implicit). Rows come back as plain
dicts. Each service keeps its tables in its own PostgreSQL schema (or its own SQLite file), so no service can read
another's tables by accident.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import re
import sqlite3
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import asyncpg

Row = dict[str, Any]

_ROW_LOCK = re.compile(r"\s+FOR\s+UPDATE(\s+SKIP\s+LOCKED)?", re.IGNORECASE)


class Executor(Protocol):
    """What both a database and an open transaction can do."""

    async def execute(self, sql: str, *args: Any) -> int: ...
    async def fetch(self, sql: str, *args: Any) -> list[Row]: ...
    async def fetchrow(self, sql: str, *args: Any) -> Row | None: ...
    async def fetchval(self, sql: str, *args: Any) -> Any: ...


class Database(Executor, Protocol):
    """A connection pool with transactions."""

    dialect: str

    def transaction(self) -> contextlib.AbstractAsyncContextManager[Executor]: ...
    async def close(self) -> None: ...


@functools.lru_cache(maxsize=1024)
def _sqlite_sql(sql: str) -> str:
    """The SQLite spelling of a statement: `$N` becomes SQLite's numbered `?N` (a plain character swap, as the
    services' SQL has no other `$`), and row locks go. Cached: services repeat a few dozen statements."""
    sqlite = sql.replace("$", "?")
    return _ROW_LOCK.sub("", sqlite) if "FOR" in sqlite.upper() else sqlite


def values_rows(rows: int, width: int) -> str:
    """The placeholders of a multi-row VALUES list: `($1, $2), ($3, $4)` for 2 rows of width 2."""
    return ", ".join(
        "(" + ", ".join(f"${row * width + column + 1}" for column in range(width)) + ")" for row in range(rows)
    )


class _SqliteExecutor:
    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    async def execute(self, sql: str, *args: Any) -> int:
        return self._conn.execute(_sqlite_sql(sql), args).rowcount

    async def fetch(self, sql: str, *args: Any) -> list[Row]:
        return [dict(row) for row in self._conn.execute(_sqlite_sql(sql), args).fetchall()]

    async def fetchrow(self, sql: str, *args: Any) -> Row | None:
        row = self._conn.execute(_sqlite_sql(sql), args).fetchone()
        return dict(row) if row is not None else None

    async def fetchval(self, sql: str, *args: Any) -> Any:
        row = self._conn.execute(_sqlite_sql(sql), args).fetchone()
        return row[0] if row is not None else None


class SqliteDatabase:
    """One sqlite3 connection in WAL mode, used directly on the event loop thread.

    Why not a worker thread (aiosqlite): a statement on a local WAL database takes tens of microseconds, while the
    hop to a worker thread and back costs ~150 us of CPU per statement (measured: 181 us vs 27 us per INSERT), which
    made the database the largest CPU cost of a message. Each service owns its file alone (one process), so no
    statement waits on another process's lock. A lock keeps a transaction's statements together across awaits.
    """

    dialect = "sqlite"

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn
        self._lock = asyncio.Lock()
        self._executor = _SqliteExecutor(conn)

    @classmethod
    async def open(cls, path: str) -> SqliteDatabase:
        """Open (and create) the file at `path`; ':memory:' gives a private in-memory database."""
        if path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(path, isolation_level=None)
        conn.row_factory = sqlite3.Row
        for pragma in ("journal_mode=WAL", "synchronous=NORMAL", "busy_timeout=10000", "foreign_keys=ON"):
            conn.execute(f"PRAGMA {pragma}")
        return cls(conn)

    async def execute(self, sql: str, *args: Any) -> int:
        async with self._lock:
            return await self._executor.execute(sql, *args)

    async def fetch(self, sql: str, *args: Any) -> list[Row]:
        async with self._lock:
            return await self._executor.fetch(sql, *args)

    async def fetchrow(self, sql: str, *args: Any) -> Row | None:
        async with self._lock:
            return await self._executor.fetchrow(sql, *args)

    async def fetchval(self, sql: str, *args: Any) -> Any:
        async with self._lock:
            return await self._executor.fetchval(sql, *args)

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[Executor]:
        """BEGIN IMMEDIATE ... COMMIT, rolled back on any exception."""
        async with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield self._executor
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")

    async def close(self) -> None:
        self._conn.close()


class _PostgresExecutor:
    def __init__(self, conn: Any) -> None:
        self._conn = conn

    async def execute(self, sql: str, *args: Any) -> int:
        status: str = await self._conn.execute(sql, *args)
        tail = status.rsplit(" ", 1)[-1]
        return int(tail) if tail.isdigit() else 0

    async def fetch(self, sql: str, *args: Any) -> list[Row]:
        return [dict(r) for r in await self._conn.fetch(sql, *args)]

    async def fetchrow(self, sql: str, *args: Any) -> Row | None:
        row = await self._conn.fetchrow(sql, *args)
        return dict(row) if row is not None else None

    async def fetchval(self, sql: str, *args: Any) -> Any:
        return await self._conn.fetchval(sql, *args)


async def _keep_session(conn: Any) -> None:
    """Return a connection to the pool as it is: the services keep no session state to clear.

    asyncpg's default reset sends `SELECT pg_advisory_unlock_all(); CLOSE ALL; UNLISTEN *; RESET ALL` on every
    release, one more round trip per statement: measured at 11 per message, about half of PostgreSQL's CPU. Our
    statements take only transaction-scoped locks, open no cursors outside a transaction, never LISTEN and never
    SET; asyncpg itself still rolls back a transaction left open before calling this.
    """


class PostgresDatabase:
    """An asyncpg pool whose connections use one schema (the service's own)."""

    dialect = "postgresql"

    def __init__(self, pool: Any) -> None:
        self._pool = pool

    @classmethod
    async def open(
        cls,
        url: str,
        schema: str,
        *,
        min_size: int = 2,
        max_size: int = 10,
        settings: Mapping[str, str] | None = None,
    ) -> PostgresDatabase:
        """Create the schema if needed and open a pool whose search_path is that schema."""
        conn = await asyncpg.connect(url)
        try:
            await conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{schema}"')
        except asyncpg.UniqueViolationError:  # two replicas creating it at once
            pass
        finally:
            await conn.close()
        pool = await asyncpg.create_pool(
            url,
            min_size=min_size,
            max_size=max_size,
            server_settings={**(settings or {}), "search_path": schema},
            reset=_keep_session,
        )
        return cls(pool)

    async def execute(self, sql: str, *args: Any) -> int:
        async with self._pool.acquire() as conn:
            return await _PostgresExecutor(conn).execute(sql, *args)

    async def fetch(self, sql: str, *args: Any) -> list[Row]:
        async with self._pool.acquire() as conn:
            return await _PostgresExecutor(conn).fetch(sql, *args)

    async def fetchrow(self, sql: str, *args: Any) -> Row | None:
        async with self._pool.acquire() as conn:
            return await _PostgresExecutor(conn).fetchrow(sql, *args)

    async def fetchval(self, sql: str, *args: Any) -> Any:
        async with self._pool.acquire() as conn:
            return await _PostgresExecutor(conn).fetchval(sql, *args)

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[Executor]:
        async with self._pool.acquire() as conn, conn.transaction():
            yield _PostgresExecutor(conn)

    async def close(self) -> None:
        await self._pool.close()


async def open_database(url: str, schema: str, *, postgres_settings: Mapping[str, str] | None = None) -> Database:
    """Open the database at `url` (sqlite:///path, sqlite:///:memory: or postgresql://...); `postgres_settings`
    are server settings for every PostgreSQL connection of the pool (planner settings a service needs)."""
    if url.startswith("sqlite:///"):
        return await SqliteDatabase.open(url.removeprefix("sqlite:///"))
    if url.startswith(("postgresql://", "postgres://")):
        return await PostgresDatabase.open(url, schema, settings=postgres_settings)
    raise ValueError(f"unsupported database URL scheme: {url.split(':', 1)[0]}")


@dataclass(frozen=True)
class Migration:
    """One schema change. `sqlite` replaces `statements` on SQLite when the dialects need different DDL."""

    version: int
    name: str
    statements: Sequence[str]
    sqlite: Sequence[str] | None = field(default=None)

    def for_dialect(self, dialect: str) -> Sequence[str]:
        return self.sqlite if dialect == "sqlite" and self.sqlite is not None else self.statements


async def migrate(db: Database, migrations: Sequence[Migration], *, lock_key: str) -> list[int]:
    """Apply the migrations not yet recorded in schema_migrations, in order; returns the versions applied.

    On PostgreSQL an advisory lock keyed on `lock_key` lets several replicas start at once safely.
    """
    applied: list[int] = []
    async with db.transaction() as tx:
        if db.dialect == "postgresql":
            await tx.execute("SELECT pg_advisory_xact_lock(hashtext($1))", lock_key)
        await tx.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations "
            "(version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at DOUBLE PRECISION NOT NULL)"
        )
        done = {row["version"] for row in await tx.fetch("SELECT version FROM schema_migrations")}
        for migration in sorted(migrations, key=lambda m: m.version):
            if migration.version in done:
                continue
            for statement in migration.for_dialect(db.dialect):
                await tx.execute(statement)
            await tx.execute(
                "INSERT INTO schema_migrations (version, name, applied_at) VALUES ($1, $2, $3)",
                migration.version,
                migration.name,
                time.time(),
            )
            applied.append(migration.version)
    return applied
