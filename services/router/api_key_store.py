"""The `api_keys` table (created by the router's migration 4): scoped keys by the SHA-256 of the key.

The clear key never reaches SQL; `InstanceRepository` deletes an instance's rows with the instance.
"""

from __future__ import annotations

from servicekit.database import Database, Row
from servicekit.errors import AlreadyExistsError
from services.router.core.models import ApiKey

_COLUMNS = "id, instance_name, instance_id, prefix, created_at, last_used_at"


def _from_row(row: Row) -> ApiKey:
    return ApiKey(
        id=row["id"],
        instance_name=row["instance_name"],
        instance_id=row["instance_id"],
        prefix=row["prefix"],
        created_at=float(row["created_at"]),
        last_used_at=float(row["last_used_at"] or 0),
    )


class ApiKeyRepository:
    """Implements `core.ports.ApiKeyStore` on the router's database."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def insert(self, key: ApiKey, key_hash: str) -> None:
        """Store a new key; `AlreadyExistsError` on the (astronomically unlikely) collision of id or hash."""
        inserted = await self._db.execute(
            f"INSERT INTO api_keys ({_COLUMNS}, key_hash) VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT DO NOTHING",
            key.id,
            key.instance_name,
            key.instance_id,
            key.prefix,
            key.created_at,
            key.last_used_at,
            key_hash,
        )
        if inserted == 0:
            raise AlreadyExistsError("API key already exists", reason="API_KEY_EXISTS")

    async def by_hash(self, key_hash: str) -> ApiKey | None:
        row = await self._db.fetchrow(f"SELECT {_COLUMNS} FROM api_keys WHERE key_hash = $1", key_hash)
        return _from_row(row) if row is not None else None

    async def list_for(self, instance_name: str) -> list[ApiKey]:
        rows = await self._db.fetch(
            f"SELECT {_COLUMNS} FROM api_keys WHERE instance_name = $1 ORDER BY created_at, id", instance_name
        )
        return [_from_row(row) for row in rows]

    async def delete(self, instance_name: str, key_id: str) -> bool:
        deleted = await self._db.execute(
            "DELETE FROM api_keys WHERE instance_name = $1 AND id = $2", instance_name, key_id
        )
        return deleted > 0

    async def touch(self, key_id: str, now: float, *, older_than: float) -> None:
        await self._db.execute(
            "UPDATE api_keys SET last_used_at = $2 WHERE id = $1 AND last_used_at < $3", key_id, now, older_than
        )
