"""The database interface behaves the same on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio

import pytest

from servicekit.database import Migration, migrate, open_database

MIGRATIONS = [
    Migration(1, "items", ["CREATE TABLE items (id TEXT PRIMARY KEY, n INTEGER NOT NULL, flag BOOLEAN NOT NULL)"]),
    Migration(2, "items_index", ["CREATE INDEX items_n ON items (n)"]),
]


async def test_migrations_apply_once(db_url: str) -> None:
    db = await open_database(db_url, "omni_test")
    try:
        assert await migrate(db, MIGRATIONS, lock_key="test") == [1, 2]
        assert await migrate(db, MIGRATIONS, lock_key="test") == []
    finally:
        await db.close()


async def test_placeholders_rows_and_conflicts(db_url: str) -> None:
    db = await open_database(db_url, "omni_test")
    try:
        await migrate(db, MIGRATIONS, lock_key="test")
        assert await db.execute("INSERT INTO items (id, n, flag) VALUES ($1, $2, $3)", "a", 1, True) == 1
        inserted = await db.execute(
            "INSERT INTO items (id, n, flag) VALUES ($1, $2, $3) ON CONFLICT (id) DO NOTHING", "a", 2, False
        )
        assert inserted == 0
        row = await db.fetchrow("SELECT id, n, flag FROM items WHERE id = $1", "a")
        assert row is not None
        assert (row["id"], row["n"], bool(row["flag"])) == ("a", 1, True)
        assert await db.fetchval("SELECT count(*) FROM items") == 1
        updated = await db.fetch("UPDATE items SET n = n + $1 WHERE id = $2 RETURNING n", 5, "a")
        assert updated == [{"n": 6}]
    finally:
        await db.close()


async def test_transaction_rolls_back_on_error(db_url: str) -> None:
    db = await open_database(db_url, "omni_test")
    try:
        await migrate(db, MIGRATIONS, lock_key="test")
        with pytest.raises(RuntimeError):
            async with db.transaction() as tx:
                await tx.execute("INSERT INTO items (id, n, flag) VALUES ($1, $2, $3)", "b", 1, False)
                raise RuntimeError("boom")
        assert await db.fetchval("SELECT count(*) FROM items") == 0
    finally:
        await db.close()


async def test_row_locking_select_runs_on_both(db_url: str) -> None:
    db = await open_database(db_url, "omni_test")
    try:
        await migrate(db, MIGRATIONS, lock_key="test")
        await asyncio.gather(
            *(db.execute("INSERT INTO items (id, n, flag) VALUES ($1, $2, $3)", f"i{i}", i, False) for i in range(5))
        )
        async with db.transaction() as tx:
            rows = await tx.fetch("SELECT id FROM items WHERE n < $1 ORDER BY n LIMIT 2 FOR UPDATE SKIP LOCKED", 10)
        assert [r["id"] for r in rows] == ["i0", "i1"]
    finally:
        await db.close()
