"""The inbox table, the bot leases and every SQL statement ingress runs (schema "omni_ingress" on PostgreSQL).

One row per channel message, unique on (instance_name, channel, channel_message_id), so a repeated webhook is
recognised by the database itself, even across replicas. Rows move received → dispatched → handled, or to
dead after the last failed attempt; own sends and ignored messages are stored as terminal "ignored" rows so
their echoes are de-duplicated too.

The claim is one statement: on PostgreSQL the candidate rows are locked with FOR UPDATE SKIP LOCKED inside a
CTE and updated in the same statement, so two replicas never claim the same row; SQLite has one writer, so the
same statement is atomic there as well.
"""

from __future__ import annotations

from collections.abc import Sequence

from servicekit.database import Database, Executor, Migration
from servicekit.retention import delete_in_batches
from services.ingress.core.inbox import (
    BotLeaseRow,
    InboxRow,
    MediaBlob,
)

SCHEMA = "omni_ingress"
MIGRATION_LOCK = "omni_ingress_migrations"


# Migration 3: every secondary index holds only the rows its reader looks at. A row changes state three times
# (received, dispatched, handled), and on PostgreSQL each change of an indexed column adds an entry to every index
# and leaves the old one dead until VACUUM; a bitmap scan never prunes dead entries, so the old claim over
# (state, next_attempt_at) visited every message updated since the last vacuum (3,350 heap blocks for 0 rows after
# a 3,000-message run). Partial indexes are written only when a row enters their predicate.
_PARTIAL_INDEXES = [
    # the claim, in channel order, and its "earlier message of this conversation still open?" probe
    "CREATE INDEX inbox_unfinished ON inbox (sent_at, received_ns) WHERE state IN ('received', 'dispatched')",
    "CREATE INDEX inbox_unfinished_conversation ON inbox (conversation_key, sent_at, received_ns, id) "
    "WHERE state IN ('received', 'dispatched')",
    # the dead-letter list
    "CREATE INDEX inbox_dead_letters ON inbox (dead_at) WHERE state = 'dead'",
    # the retention sweep, oldest first
    "CREATE INDEX inbox_finished ON inbox (created_at) WHERE state IN ('handled', 'ignored')",
    "DROP INDEX inbox_due",
    "DROP INDEX inbox_conversation",
    "DROP INDEX inbox_lease",  # release_own_leases and renew_leases find their rows through the above and the key
    "DROP INDEX inbox_dead",
]


def _media_blobs_table(binary_type: str) -> list[str]:
    return [
        f"""
        CREATE TABLE media_blobs (
            id TEXT PRIMARY KEY,
            instance_name TEXT NOT NULL,
            message_id TEXT NOT NULL,
            channel_message_id TEXT NOT NULL,
            mime_type TEXT NOT NULL DEFAULT '',
            size BIGINT NOT NULL,
            data {binary_type} NOT NULL,
            created_at DOUBLE PRECISION NOT NULL
        )
        """,
        "CREATE INDEX media_blobs_instance ON media_blobs (instance_name)",
        "CREATE INDEX media_blobs_created ON media_blobs (created_at)",
    ]


MIGRATIONS = [
    Migration(
        1,
        "inbox",
        [
            """
            CREATE TABLE inbox (
                id TEXT PRIMARY KEY,
                instance_name TEXT NOT NULL,
                channel TEXT NOT NULL,
                channel_message_id TEXT NOT NULL,
                chat_id TEXT NOT NULL,
                conversation_key TEXT NOT NULL,
                event TEXT NOT NULL DEFAULT '',
                message TEXT NOT NULL,
                traceparent TEXT NOT NULL DEFAULT '',
                sent_at DOUBLE PRECISION NOT NULL,
                received_ns BIGINT NOT NULL,
                state TEXT NOT NULL,
                attempts INTEGER NOT NULL DEFAULT 0,
                next_attempt_at DOUBLE PRECISION NOT NULL,
                lease_owner TEXT,
                lease_until DOUBLE PRECISION,
                last_error TEXT NOT NULL DEFAULT '',
                outcome TEXT NOT NULL DEFAULT '',
                dead_at DOUBLE PRECISION,
                created_at DOUBLE PRECISION NOT NULL,
                updated_at DOUBLE PRECISION NOT NULL,
                UNIQUE (instance_name, channel, channel_message_id)
            )
            """,
            "CREATE INDEX inbox_due ON inbox (state, next_attempt_at)",
            "CREATE INDEX inbox_conversation ON inbox (conversation_key, state, sent_at, received_ns)",
            "CREATE INDEX inbox_lease ON inbox (lease_owner, state)",
            "CREATE INDEX inbox_dead ON inbox (state, dead_at)",
        ],
    ),
    Migration(
        2,
        "inbox_handled_by",
        # Which replica finished a message: operators (and the two-replica test) can see how work was shared.
        ["ALTER TABLE inbox ADD COLUMN handled_by TEXT"],
    ),
    Migration(
        3,
        "inbox_partial_indexes",
        [
            *_PARTIAL_INDEXES,
            # A queue table wants vacuuming far more often than PostgreSQL's default of 20 % dead rows.
            "ALTER TABLE inbox SET (autovacuum_vacuum_scale_factor = 0.01, autovacuum_vacuum_threshold = 1000, "
            "autovacuum_analyze_scale_factor = 0.02)",
        ],
        sqlite=_PARTIAL_INDEXES,
    ),
    Migration(
        4,
        "bot_leases",
        # One row per hosted bot (a Discord instance): which replica runs it until when, and what it last reported,
        # so every replica can answer for it and a dead owner's bots are taken over once its lease runs out.
        [
            """
            CREATE TABLE bot_leases (
                instance_name TEXT PRIMARY KEY,
                channel TEXT NOT NULL,
                owner TEXT NOT NULL DEFAULT '',
                lease_until DOUBLE PRECISION NOT NULL DEFAULT 0,
                state TEXT NOT NULL DEFAULT 'disconnected',
                detail TEXT NOT NULL DEFAULT '',
                report TEXT NOT NULL DEFAULT '{}',
                cursors TEXT NOT NULL DEFAULT '{}',
                updated_at DOUBLE PRECISION NOT NULL
            )
            """
        ],
    ),
    Migration(
        5,
        "media_blobs",
        # Received files, kept apart from the inbox rows the dispatcher rewrites (see core.media_store).
        _media_blobs_table("BYTEA"),
        sqlite=_media_blobs_table("BLOB"),
    ),
]


POSTGRES_SETTINGS = {"enable_bitmapscan": "off"}
"""Planner settings of ingress's PostgreSQL connections. Between two autovacuum runs (a minute apart at best)
the inbox's partial indexes fill with dead entries, two per message. A bitmap scan visits the heap for each of
them on every claim (1.5 ms for 10 live rows after a burst); a plain index scan marks them dead in the index
the first time and skips them afterwards (0.16 ms). Every ingress query is a key lookup or a scan of a small
partial index, so none of them needs bitmap scans."""

_COLUMNS = (
    "id, instance_name, channel, channel_message_id, chat_id, conversation_key, event, message, traceparent, "
    "sent_at, received_ns, state, attempts, next_attempt_at, lease_owner, lease_until, last_error, outcome, "
    "dead_at, created_at, updated_at"
)
_RETURNING = ", ".join(f"inbox.{c.strip()}" for c in _COLUMNS.split(","))

# A row is due when it waits for its retry time, or when the replica that held it stopped renewing its lease.
# It is claimable only when no earlier unfinished message of its conversation exists, so a conversation is
# handled one message at a time, in channel order (ties broken by arrival, then id).
_CLAIM = f"""
WITH due AS (
    SELECT m.id FROM inbox m
    WHERE m.state IN ('received', 'dispatched')
      AND ((m.state = 'received' AND m.next_attempt_at <= $1)
           OR (m.state = 'dispatched' AND m.lease_until < $1))
      AND NOT EXISTS (
          SELECT 1 FROM inbox p
          WHERE p.conversation_key = m.conversation_key
            AND p.state IN ('received', 'dispatched')
            AND (p.sent_at < m.sent_at
                 OR (p.sent_at = m.sent_at AND p.received_ns < m.received_ns)
                 OR (p.sent_at = m.sent_at AND p.received_ns = m.received_ns AND p.id < m.id))
      )
    ORDER BY m.sent_at, m.received_ns
    LIMIT $2
    FOR UPDATE SKIP LOCKED
)
UPDATE inbox
SET state = 'dispatched', lease_owner = $3, lease_until = $4, attempts = inbox.attempts + 1, updated_at = $1
FROM due
WHERE inbox.id = due.id
RETURNING {_RETURNING}
"""


class InboxStore:
    """The inbox table over a `Database` (SQLite or PostgreSQL)."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def insert(self, row: InboxRow, blobs: Sequence[MediaBlob] = ()) -> str | None:
        """Store a new row; returns None when it was new, else the id of the row already stored for that message.

        The files its message names are stored in the same transaction, and only when the row is new; a message
        without files (the common case) stays one statement."""
        if not blobs:
            return await self._insert(self._db, row)
        async with self._db.transaction() as tx:
            existing = await self._insert(tx, row)
            if existing is None:
                for blob in blobs:
                    await insert_media_blob(tx, blob)
            return existing

    async def _insert(self, db: Executor, row: InboxRow) -> str | None:
        inserted = await db.execute(
            f"INSERT INTO inbox ({_COLUMNS}) VALUES "
            "($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21) "
            "ON CONFLICT (instance_name, channel, channel_message_id) DO NOTHING",
            row.id,
            row.instance_name,
            row.channel,
            row.channel_message_id,
            row.chat_id,
            row.conversation_key,
            row.event,
            row.message,
            row.traceparent,
            row.sent_at,
            row.received_ns,
            row.state,
            row.attempts,
            row.next_attempt_at,
            row.lease_owner,
            row.lease_until,
            row.last_error,
            row.outcome,
            row.dead_at,
            row.created_at,
            row.updated_at,
        )
        if inserted:
            return None
        existing = await db.fetchval(
            "SELECT id FROM inbox WHERE instance_name = $1 AND channel = $2 AND channel_message_id = $3",
            row.instance_name,
            row.channel,
            row.channel_message_id,
        )
        return str(existing) if existing is not None else ""

    async def holds_any(self, instance_name: str, channel: str, channel_message_ids: Sequence[str]) -> bool:
        """True when a row exists for one of the ids: one lookup on the unique key per id (a handful at most)."""
        for channel_message_id in channel_message_ids:
            found = await self._db.fetchval(
                "SELECT 1 FROM inbox WHERE instance_name = $1 AND channel = $2 AND channel_message_id = $3",
                instance_name,
                channel,
                channel_message_id,
            )
            if found is not None:
                return True
        return False

    async def get(self, message_id: str) -> InboxRow | None:
        row = await self._db.fetchrow(f"SELECT {_COLUMNS} FROM inbox WHERE id = $1", message_id)
        return InboxRow.from_row(row) if row else None

    async def claim(self, replica_id: str, limit: int, now: float, lease_seconds: float) -> list[InboxRow]:
        """Lease up to `limit` due rows to `replica_id` (state dispatched, attempts + 1)."""
        if limit <= 0:
            return []
        rows = await self._db.fetch(_CLAIM, now, limit, replica_id, now + lease_seconds)
        return sorted((InboxRow.from_row(r) for r in rows), key=lambda r: (r.sent_at, r.received_ns))

    async def release_own_leases(self, replica_id: str, now: float) -> int:
        """Put back the rows this replica held when it last stopped, so a restart does not wait for the lease."""
        return await self._db.execute(
            "UPDATE inbox SET state = 'received', lease_owner = NULL, lease_until = NULL, next_attempt_at = $2, "
            "updated_at = $2 WHERE state = 'dispatched' AND lease_owner = $1",
            replica_id,
            now,
        )

    async def purge_finished(self, cutoff: float) -> int:
        """Delete handled and ignored rows created before `cutoff`; dead and unfinished rows stay. Returns the count.

        A repeated webhook of a purged message is accepted again, so the retention must outlast the channel's
        retries (Evolution's are minutes; the default retention is 30 days)."""
        return await delete_in_batches(
            self._db,
            "DELETE FROM inbox WHERE id IN (SELECT id FROM inbox WHERE created_at < $1 "
            "AND state IN ('handled', 'ignored') ORDER BY created_at LIMIT $2)",
            cutoff,
        )

    async def renew_leases(self, replica_id: str, ids: Sequence[str], now: float, lease_seconds: float) -> int:
        """Extend the lease of the rows this replica is dispatching right now (a heartbeat while the router works)."""
        if not ids:
            return 0
        placeholders = ", ".join(f"${i}" for i in range(3, len(ids) + 3))
        return await self._db.execute(
            "UPDATE inbox SET lease_until = $2 WHERE state = 'dispatched' AND lease_owner = $1 "
            f"AND id IN ({placeholders})",
            replica_id,
            now + lease_seconds,
            *ids,
        )

    async def mark_handled(self, message_id: str, replica_id: str, outcome: str, now: float) -> bool:
        return (
            await self._db.execute(
                "UPDATE inbox SET state = 'handled', outcome = $3, lease_owner = NULL, lease_until = NULL, "
                "handled_by = $2, updated_at = $4 WHERE id = $1 AND state = 'dispatched' AND lease_owner = $2",
                message_id,
                replica_id,
                outcome,
                now,
            )
            > 0
        )

    async def mark_retry(
        self, message_id: str, replica_id: str, next_attempt_at: float, error: str, now: float
    ) -> bool:
        return (
            await self._db.execute(
                "UPDATE inbox SET state = 'received', next_attempt_at = $3, last_error = $4, lease_owner = NULL, "
                "lease_until = NULL, updated_at = $5 WHERE id = $1 AND state = 'dispatched' AND lease_owner = $2",
                message_id,
                replica_id,
                next_attempt_at,
                error,
                now,
            )
            > 0
        )

    async def mark_dead(self, message_id: str, replica_id: str, error: str, now: float) -> bool:
        return (
            await self._db.execute(
                "UPDATE inbox SET state = 'dead', last_error = $3, dead_at = $4, lease_owner = NULL, "
                "lease_until = NULL, updated_at = $4 WHERE id = $1 AND state = 'dispatched' AND lease_owner = $2",
                message_id,
                replica_id,
                error,
                now,
            )
            > 0
        )

    async def list_dead(self, instance_name: str, limit: int, offset: int) -> tuple[list[InboxRow], int]:
        """One page of dead rows, newest first, and how many there are."""
        if instance_name:
            where, args = "state = 'dead' AND instance_name = $1", [instance_name]
        else:
            where, args = "state = 'dead' AND $1 = ''", [""]
        total = await self._db.fetchval(f"SELECT count(*) FROM inbox WHERE {where}", *args)
        rows = await self._db.fetch(
            f"SELECT {_COLUMNS} FROM inbox WHERE {where} ORDER BY dead_at DESC, id DESC LIMIT $2 OFFSET $3",
            *args,
            limit,
            offset,
        )
        return [InboxRow.from_row(r) for r in rows], int(total or 0)

    async def redeliver(self, message_id: str, now: float, instance_name: str = "") -> str | None:
        """Dead → received with a fresh attempt budget. Returns None on success, else the row's state ("" if none,
        or when `instance_name` is given and the row belongs to another instance)."""
        updated = await self._db.execute(
            "UPDATE inbox SET state = 'received', attempts = 0, next_attempt_at = $2, dead_at = NULL, "
            "lease_owner = NULL, lease_until = NULL, updated_at = $2 WHERE id = $1 AND state = 'dead' "
            "AND ($3 = '' OR instance_name = $3)",
            message_id,
            now,
            instance_name,
        )
        if updated:
            return None
        state = await self._db.fetchval(
            "SELECT state FROM inbox WHERE id = $1 AND ($2 = '' OR instance_name = $2)", message_id, instance_name
        )
        return str(state) if state is not None else ""

    async def purge_instance(self, instance_name: str) -> int:
        """Delete every row of the instance, dead letters and unfinished work included; returns how many.

        Run when the instance is deleted: its (instance, channel message id) keys would otherwise make a new instance
        of the same name treat its first messages as duplicates, and its dead letters would show under the new one.
        A row a dispatcher holds right now is gone when it reports back; its mark_* update then matches nothing."""
        return await self._db.execute("DELETE FROM inbox WHERE instance_name = $1", instance_name)

    async def rows_in_chats(self, instance_name: str, chat_ids: Sequence[str]) -> list[tuple[str, str]]:
        """(id, message JSON) of the instance's rows in `chat_ids` (core/erasure.py picks one sender's)."""
        rows: list[tuple[str, str]] = []
        for chat_id in dict.fromkeys(chat_ids):
            found = await self._db.fetch(
                "SELECT id, message FROM inbox WHERE instance_name = $1 AND chat_id = $2", instance_name, chat_id
            )
            rows.extend((str(r["id"]), str(r["message"])) for r in found)
        return rows

    async def erase_rows(self, instance_name: str, ids: Sequence[str]) -> int:
        """Delete the instance's rows `ids` with the files stored for them; returns how many rows went."""
        deleted = 0
        async with self._db.transaction() as tx:
            for row_id in ids:
                await tx.execute(
                    "DELETE FROM media_blobs WHERE instance_name = $1 AND message_id = $2", instance_name, row_id
                )
                deleted += await tx.execute(
                    "DELETE FROM inbox WHERE instance_name = $1 AND id = $2", instance_name, row_id
                )
        return deleted

    async def count_backlog(self) -> int:
        """How many accepted messages are not handled yet (received or out for delivery): the inbox backlog gauge,
        read from the partial index of unfinished rows."""
        row = await self._db.fetchrow("SELECT count(*) AS n FROM inbox WHERE state IN ('received', 'dispatched')")
        return int(row["n"]) if row else 0

    async def count_by_state(self) -> dict[str, int]:
        """How many rows are in each state (for tests and diagnostics)."""
        rows = await self._db.fetch("SELECT state, count(*) AS n FROM inbox GROUP BY state")
        return {str(r["state"]): int(r["n"]) for r in rows}


_BLOB_COLUMNS = "id, instance_name, message_id, channel_message_id, mime_type, size, data, created_at"


async def insert_media_blob(db: Executor, blob: MediaBlob) -> None:
    """Store one file (inside the transaction of its inbox row)."""
    await db.execute(
        f"INSERT INTO media_blobs ({_BLOB_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        blob.id,
        blob.instance_name,
        blob.message_id,
        blob.channel_message_id,
        blob.mime_type,
        blob.size,
        blob.data,
        blob.created_at,
    )


class MediaBlobStore:
    """The `media_blobs` table: received files kept apart from the inbox rows."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def get(self, instance_name: str, blob_id: str) -> MediaBlob | None:
        row = await self._db.fetchrow(
            f"SELECT {_BLOB_COLUMNS} FROM media_blobs WHERE id = $1 AND instance_name = $2", blob_id, instance_name
        )
        return MediaBlob.from_row(row) if row else None

    async def purge_older_than(self, cutoff: float) -> int:
        """Delete the files stored before `cutoff`, in batches; returns how many."""
        return await delete_in_batches(
            self._db,
            "DELETE FROM media_blobs WHERE id IN (SELECT id FROM media_blobs WHERE created_at < $1 "
            "ORDER BY created_at LIMIT $2)",
            cutoff,
        )

    async def purge_instance(self, instance_name: str) -> int:
        """Delete every file of a deleted instance; returns how many."""
        return await self._db.execute("DELETE FROM media_blobs WHERE instance_name = $1", instance_name)

    async def count(self, instance_name: str = "") -> int:
        """How many files are kept (of one instance, or all): for tests and diagnostics."""
        total = await self._db.fetchval(
            "SELECT count(*) FROM media_blobs WHERE $1 = '' OR instance_name = $1", instance_name
        )
        return int(total or 0)


_BOT_COLUMNS = "instance_name, channel, owner, lease_until, state, detail, report, cursors, updated_at"


class BotLeaseStore:
    """Who runs each bot. A lease is taken with one conditional upsert, so two replicas never both win it."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def acquire(self, instance_name: str, channel: str, owner: str, now: float, lease_seconds: float) -> bool:
        """Take (or keep) the bot's lease unless another owner's lease is still running."""
        row = await self._db.fetchrow(
            "INSERT INTO bot_leases (instance_name, channel, owner, lease_until, state, updated_at) "
            "VALUES ($1, $2, $3, $4, 'connecting', $5) "
            "ON CONFLICT (instance_name) DO UPDATE SET owner = excluded.owner, lease_until = excluded.lease_until, "
            "channel = excluded.channel, updated_at = excluded.updated_at, "
            # A new owner starts from `connecting`, not from what the previous owner last reported.
            "state = CASE WHEN bot_leases.owner = excluded.owner THEN bot_leases.state ELSE 'connecting' END, "
            "detail = CASE WHEN bot_leases.owner = excluded.owner THEN bot_leases.detail ELSE '' END "
            "WHERE bot_leases.owner = excluded.owner OR bot_leases.owner = '' OR bot_leases.lease_until < $5 "
            "RETURNING owner",
            instance_name,
            channel,
            owner,
            now + lease_seconds,
            now,
        )
        return row is not None

    async def renew(
        self, instance_name: str, owner: str, now: float, lease_seconds: float, state: str, detail: str, report: str
    ) -> bool:
        """Extend our lease and store the bot's report; False when the lease is no longer ours."""
        updated = await self._db.execute(
            "UPDATE bot_leases SET lease_until = $3, state = $4, detail = $5, report = $6, updated_at = $7 "
            "WHERE instance_name = $1 AND owner = $2",
            instance_name,
            owner,
            now + lease_seconds,
            state,
            detail,
            report,
            now,
        )
        return updated > 0

    async def save_cursors(self, instance_name: str, owner: str, cursors: str) -> None:
        """Remember the newest message seen per chat, so a bot that restarts catches up from there."""
        await self._db.execute(
            "UPDATE bot_leases SET cursors = $3 WHERE instance_name = $1 AND owner = $2", instance_name, owner, cursors
        )

    async def release(self, instance_name: str, owner: str, now: float, state: str, detail: str) -> None:
        """Give the lease up (the bot stopped here); another replica may take it at once."""
        await self._db.execute(
            "UPDATE bot_leases SET owner = '', lease_until = 0, state = $3, detail = $4, updated_at = $5 "
            "WHERE instance_name = $1 AND owner = $2",
            instance_name,
            owner,
            state,
            detail,
            now,
        )

    async def forget(self, keep: Sequence[str], now: float) -> int:
        """Delete the rows of bots whose instance is gone (not in `keep`) and that nobody runs any more (a replica
        whose instance cache is behind never removes a bot another replica has just started)."""
        rows = await self._db.fetch("SELECT instance_name FROM bot_leases WHERE owner = '' OR lease_until < $1", now)
        kept = set(keep)
        gone = [str(r["instance_name"]) for r in rows if r["instance_name"] not in kept]
        for name in gone:
            await self._db.execute("DELETE FROM bot_leases WHERE instance_name = $1", name)
        return len(gone)

    async def purge_instance(self, instance_name: str) -> int:
        """Delete the instance's bot lease with its saved cursors, so a new instance of the same name starts its bot
        from now instead of catching up from the old one's position. A bot still running here loses its lease at the
        next renewal and stops, which is what a deleted instance wants."""
        return await self._db.execute("DELETE FROM bot_leases WHERE instance_name = $1", instance_name)

    async def get(self, instance_name: str) -> BotLeaseRow | None:
        row = await self._db.fetchrow(f"SELECT {_BOT_COLUMNS} FROM bot_leases WHERE instance_name = $1", instance_name)
        return BotLeaseRow.from_row(row) if row else None

    async def list(self, instance_name: str = "") -> list[BotLeaseRow]:
        if instance_name:
            row = await self.get(instance_name)
            return [row] if row else []
        rows = await self._db.fetch(f"SELECT {_BOT_COLUMNS} FROM bot_leases ORDER BY instance_name")
        return [BotLeaseRow.from_row(r) for r in rows]
