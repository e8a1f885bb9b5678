"""The outbox table: one row per message part, keyed by (idempotency_key, part_index).

The row is the memory that makes sends idempotent across retries, crashes and replicas: a part is marked
`sending` (with the time and the owning process) before its HTTP request leaves and `sent` with the channel's
message id once Evolution accepted it. State changes that start a send are compare-and-set on `attempts`, so two
workers can never both believe they own the same try.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from servicekit.database import Database, Migration, values_rows
from servicekit.retention import delete_in_batches
from services.channels.core.connections import ConnectionRecord
from services.channels.core.models import ConnectionState, OutboundPart, OutboxRow, PartState

SCHEMA = "omni_channels"
"""PostgreSQL schema of the channels tables."""
MIGRATION_LOCK = "omni_channels.migrations"

MIGRATIONS: Sequence[Migration] = [
    Migration(
        1,
        "outbox parts",
        [
            """
            CREATE TABLE outbox_parts (
                idempotency_key TEXT NOT NULL,
                part_index INTEGER NOT NULL,
                instance_name TEXT NOT NULL,
                chat_id TEXT NOT NULL,
                payload TEXT NOT NULL,
                state TEXT NOT NULL,
                channel_message_id TEXT NOT NULL DEFAULT '',
                attempts INTEGER NOT NULL DEFAULT 0,
                last_error TEXT NOT NULL DEFAULT '',
                error_reason TEXT NOT NULL DEFAULT '',
                sending_started_at DOUBLE PRECISION,
                sending_owner TEXT NOT NULL DEFAULT '',
                created_at DOUBLE PRECISION NOT NULL,
                updated_at DOUBLE PRECISION NOT NULL,
                PRIMARY KEY (idempotency_key, part_index)
            )
            """,
            "CREATE INDEX outbox_parts_by_chat ON outbox_parts (instance_name, chat_id, updated_at)",
        ],
    ),
    Migration(2, "outbox created_at", ["CREATE INDEX outbox_parts_created ON outbox_parts (created_at)"]),
    Migration(
        3,
        "outbox body hash",
        # What the key was first used for, so a reuse of the key for another message is refused instead of
        # answered with the first message's results. Rows stored before have '' and are not checked.
        ["ALTER TABLE outbox_parts ADD COLUMN body_hash TEXT NOT NULL DEFAULT ''"],
    ),
    Migration(
        4,
        "connection states",
        # The last connection state (and login QR) each instance's channel reported, so status reads need no round
        # trip to the channel gateway (services/channels/core/connections.py).
        [
            """
            CREATE TABLE connection_states (
                instance_name TEXT PRIMARY KEY,
                state TEXT NOT NULL,
                raw_state TEXT NOT NULL DEFAULT '',
                qr_code TEXT NOT NULL DEFAULT '',
                pairing_code TEXT NOT NULL DEFAULT '',
                detail TEXT NOT NULL DEFAULT '',
                account_id TEXT NOT NULL DEFAULT '',
                account_name TEXT NOT NULL DEFAULT '',
                occurred_at DOUBLE PRECISION NOT NULL,
                qr_at DOUBLE PRECISION NOT NULL DEFAULT 0
            )
            """
        ],
    ),
]


_COLUMNS = (
    "idempotency_key, part_index, instance_name, chat_id, payload, state, channel_message_id, attempts, "
    "last_error, error_reason, sending_started_at, sending_owner, body_hash"
)


class OutboxStore:
    """SQL over the outbox table; every method is one statement (atomic on both dialects)."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def insert_parts(
        self,
        key: str,
        instance_name: str,
        chat_id: str,
        parts: Sequence[OutboundPart],
        now: float,
        *,
        owner: str,
        body_hash: str = "",
    ) -> list[OutboxRow]:
        """Store the parts of `key` not stored yet, in one statement; returns the rows this call inserted.

        Part 0 is stored already claimed (`sending`, owned by `owner`, attempt 1): when the key is new, which is
        nearly always, the caller goes straight to the send, and a message costs two writes (this one and
        `mark_sent`) instead of three writes and two reads. Rows stored by an earlier call win and are not returned.
        """
        if not parts:
            return []
        args: list[object] = []
        for index, part in enumerate(parts):
            first = index == 0
            args += [
                key,
                index,
                instance_name,
                chat_id,
                json.dumps(part.to_json(), ensure_ascii=False),
                (PartState.SENDING if first else PartState.PENDING).value,
                1 if first else 0,
                now if first else None,
                owner if first else "",
                now,
                now,
                body_hash,
            ]
        rows = await self._db.fetch(
            "INSERT INTO outbox_parts (idempotency_key, part_index, instance_name, chat_id, payload, state, "
            "attempts, sending_started_at, sending_owner, created_at, updated_at, body_hash) "
            f"VALUES {values_rows(len(parts), 12)} ON CONFLICT (idempotency_key, part_index) DO NOTHING "
            f"RETURNING {_COLUMNS}",
            *args,
        )
        return sorted((OutboxRow.from_row(r) for r in rows), key=lambda row: row.part_index)

    async def parts(self, key: str) -> list[OutboxRow]:
        """Every part of `key`, in order."""
        rows = await self._db.fetch(
            f"SELECT {_COLUMNS} FROM outbox_parts WHERE idempotency_key = $1 ORDER BY part_index", key
        )
        return [OutboxRow.from_row(r) for r in rows]

    async def discard_parts(self, key: str, indexes: Sequence[int]) -> None:
        """Delete the named parts of `key` (those a refused call stored after the ones already there)."""
        for index in indexes:
            await self._db.execute(
                "DELETE FROM outbox_parts WHERE idempotency_key = $1 AND part_index = $2", key, index
            )

    async def purge_instance(self, instance_name: str) -> int:
        """Delete every part the instance sent or was sending; returns how many. Run when the instance is deleted, so
        nothing of it (its idempotency keys included) outlives it."""
        return await self._db.execute("DELETE FROM outbox_parts WHERE instance_name = $1", instance_name)

    async def part(self, key: str, index: int) -> OutboxRow:
        row = await self._db.fetchrow(
            f"SELECT {_COLUMNS} FROM outbox_parts WHERE idempotency_key = $1 AND part_index = $2", key, index
        )
        if row is None:
            raise LookupError(f"outbox part {key}/{index} vanished")
        return OutboxRow.from_row(row)

    async def claim(self, key: str, index: int, *, seen_attempts: int, owner: str, now: float) -> bool:
        """Mark the part `sending` if nobody changed it since it was read; False means someone else did."""
        count = await self._db.execute(
            "UPDATE outbox_parts SET state = $1, sending_started_at = $2, sending_owner = $3, "
            "attempts = attempts + 1, updated_at = $2 "
            "WHERE idempotency_key = $4 AND part_index = $5 AND attempts = $6 AND state IN ($7, $1)",
            PartState.SENDING.value,
            now,
            owner,
            key,
            index,
            seen_attempts,
            PartState.PENDING.value,
        )
        return count == 1

    async def mark_sent(self, key: str, index: int, channel_message_id: str, now: float) -> None:
        await self._db.execute(
            "UPDATE outbox_parts SET state = $1, channel_message_id = $2, last_error = '', updated_at = $3 "
            "WHERE idempotency_key = $4 AND part_index = $5",
            PartState.SENT.value,
            channel_message_id,
            now,
            key,
            index,
        )

    async def release(self, key: str, index: int, error: str, now: float) -> None:
        """Back to `pending`: the try failed in a way that proves nothing was sent."""
        await self._db.execute(
            "UPDATE outbox_parts SET state = $1, last_error = $2, updated_at = $3 "
            "WHERE idempotency_key = $4 AND part_index = $5 AND state = $6",
            PartState.PENDING.value,
            error,
            now,
            key,
            index,
            PartState.SENDING.value,
        )

    async def note_unknown(self, key: str, index: int, error: str, now: float) -> None:
        """Keep `sending` (outcome unknown) and remember why, for the reconciliation of the next try."""
        await self._db.execute(
            "UPDATE outbox_parts SET last_error = $1, updated_at = $2 WHERE idempotency_key = $3 AND part_index = $4",
            error,
            now,
            key,
            index,
        )

    async def mark_failed(self, key: str, index: int, *, reason: str, error: str, now: float) -> None:
        await self._db.execute(
            "UPDATE outbox_parts SET state = $1, error_reason = $2, last_error = $3, updated_at = $4 "
            "WHERE idempotency_key = $5 AND part_index = $6",
            PartState.FAILED.value,
            reason,
            error,
            now,
            key,
            index,
        )

    async def purge_finished(self, cutoff: float) -> int:
        """Delete the replies created before `cutoff` that are finished: every part sent, or a part refused for good
        (the parts after it are never sent). Returns the number of parts deleted.

        A reply still in progress (a part pending or `sending`, none failed) stays whole: deleting its sent parts
        would let a redelivery send them again."""
        return await delete_in_batches(
            self._db,
            "DELETE FROM outbox_parts WHERE idempotency_key IN (SELECT idempotency_key FROM outbox_parts "
            "WHERE created_at < $1 GROUP BY idempotency_key "
            "HAVING MIN(CASE WHEN state = 'sent' THEN 1 ELSE 0 END) = 1 "
            "OR MAX(CASE WHEN state = 'failed' THEN 1 ELSE 0 END) = 1 LIMIT $2)",
            cutoff,
        )

    async def sent_message_ids(self, instance_name: str, chat_id: str, since: float) -> set[str]:
        """Channel ids already attributed to parts in this chat, so reconciliation never claims one twice."""
        rows = await self._db.fetch(
            "SELECT channel_message_id FROM outbox_parts WHERE instance_name = $1 AND chat_id = $2 "
            "AND updated_at >= $3 AND channel_message_id <> ''",
            instance_name,
            chat_id,
            since,
        )
        return {r["channel_message_id"] for r in rows}


_CONNECTION_COLUMNS = (
    "instance_name, state, raw_state, qr_code, pairing_code, detail, account_id, account_name, occurred_at, qr_at"
)


class ConnectionStateStore:
    """`connections.ConnectionRecords` over the connection_states table (one row per instance)."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def get(self, instance_name: str) -> ConnectionRecord | None:
        row = await self._db.fetchrow(
            f"SELECT {_CONNECTION_COLUMNS} FROM connection_states WHERE instance_name = $1", instance_name
        )
        if row is None:
            return None
        return ConnectionRecord(
            instance_name=row["instance_name"],
            state=ConnectionState(row["state"]),
            raw_state=row["raw_state"],
            qr_code=row["qr_code"],
            pairing_code=row["pairing_code"],
            detail=row["detail"],
            account_id=row["account_id"],
            account_name=row["account_name"],
            occurred_at=float(row["occurred_at"]),
            qr_at=float(row["qr_at"]),
        )

    async def save(self, record: ConnectionRecord) -> bool:
        """Upsert unless the stored row is newer: one statement, so two replicas recording events of the same
        instance at once keep the later event whatever order their writes land in."""
        count = await self._db.execute(
            f"INSERT INTO connection_states ({_CONNECTION_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) "
            "ON CONFLICT (instance_name) DO UPDATE SET state = excluded.state, raw_state = excluded.raw_state, "
            "qr_code = excluded.qr_code, pairing_code = excluded.pairing_code, detail = excluded.detail, "
            "account_id = excluded.account_id, account_name = excluded.account_name, "
            "occurred_at = excluded.occurred_at, qr_at = excluded.qr_at "
            "WHERE connection_states.occurred_at <= excluded.occurred_at",
            record.instance_name,
            record.state.value,
            record.raw_state,
            record.qr_code,
            record.pairing_code,
            record.detail,
            record.account_id,
            record.account_name,
            record.occurred_at,
            record.qr_at,
        )
        return count == 1

    async def delete(self, instance_name: str) -> int:
        return await self._db.execute("DELETE FROM connection_states WHERE instance_name = $1", instance_name)

    async def count_by_state(self) -> dict[str, int]:
        rows = await self._db.fetch("SELECT state, COUNT(*) AS n FROM connection_states GROUP BY state")
        return {row["state"]: int(row["n"]) for row in rows}
