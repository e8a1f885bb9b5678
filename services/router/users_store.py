"""The SQL of the users API over the router's users, user_identities, sessions and routes tables.

Merges and erasures run in one transaction each, so a failure never leaves identities pointing at a deleted user
(an orphan) or a user without its identities. The identity resolver keeps user and session ids in memory
(`IdentityRepository`); every change here that retires an id tells it through `forget_ids`, or this replica would
keep routing messages to the merged, erased or reset id, and bumps the identity version in its transaction, which
the other replicas poll (`IdentityRepository.watch`) to drop their cached ids within half a second.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from servicekit.database import Database, Executor, Row
from services.router.core.users import ExternalIdRecord, Page, SessionRecord, UserFilter, UserRecord
from services.router.storage import IDENTITY_VERSION_BUMP

ForgetIds = Callable[[set[str], set[str]], None]
"""Called with (user ids, session ids) that no longer exist, so the identity cache drops them."""


def _user_from_row(
    row: Row, external_ids: tuple[ExternalIdRecord, ...] = (), sessions: tuple[SessionRecord, ...] = ()
) -> UserRecord:
    return UserRecord(
        id=row["id"],
        instance_name=row["instance_name"],
        channel=row["channel"],
        identity=row["identity"],
        display_name=row["display_name"] or "",
        phone_number=row["phone_number"] or "",
        created_at=float(row["created_at"]),
        last_seen_at=float(row["last_seen_at"]),
        message_count=int(row["message_count"]),
        external_ids=external_ids,
        sessions=sessions,
    )


def session_from_row(row: Row) -> SessionRecord:
    """A sessions row as the core's record."""
    return SessionRecord(
        id=row["id"],
        instance_name=row["instance_name"],
        chat_id=row["chat_id"],
        channel=row["channel"],
        session_name=row["session_name"],
        user_id=row["user_id"],
        created_at=float(row["created_at"]),
        last_message_at=float(row["last_message_at"]),
        message_count=int(row["message_count"]),
        agent_session_id=row["agent_session_id"] or "",
        agent_user_id=row["agent_user_id"] or "",
    )


def _like(text: str) -> str:
    """A LIKE pattern matching `text` anywhere, its own % and _ taken literally."""
    escaped = text.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


class _Where:
    """A WHERE clause built from optional conditions, numbering the $N placeholders as they come."""

    def __init__(self) -> None:
        self.conditions: list[str] = []
        self.args: list[Any] = []

    def add(self, condition: str, *values: Any) -> None:
        numbers = [f"${len(self.args) + i + 1}" for i in range(len(values))]
        self.conditions.append(condition.format(*numbers))
        self.args.extend(values)

    @property
    def sql(self) -> str:
        return f" WHERE {' AND '.join(self.conditions)}" if self.conditions else ""

    def page(self, page: Page) -> str:
        """The LIMIT/OFFSET placeholders of `page`, its values appended to the args."""
        first = len(self.args) + 1
        self.args.extend([page.limit, page.offset])
        return f" LIMIT ${first} OFFSET ${first + 1}"


class UsersRepository:
    """Reads and changes users and sessions for the users API."""

    def __init__(self, db: Database, forget_ids: ForgetIds | None = None) -> None:
        self._db = db
        self._forget = forget_ids or (lambda users, sessions: None)

    async def list_users(self, where: UserFilter, page: Page) -> tuple[list[UserRecord], int]:
        clause = _Where()
        if where.instance_name:
            clause.add("instance_name = {}", where.instance_name)
        if where.channel:
            clause.add("channel = {}", where.channel)
        if where.external_id:
            clause.add("id IN (SELECT user_id FROM user_identities WHERE external_id = {})", where.external_id.strip())
        if where.search:
            clause.add(
                "(LOWER(display_name) LIKE {0} ESCAPE '\\' OR phone_number LIKE {0} ESCAPE '\\')",
                _like(where.search.strip()),
            )
        total = int(await self._db.fetchval(f"SELECT COUNT(*) FROM users{clause.sql}", *clause.args) or 0)
        sql = f"SELECT * FROM users{clause.sql} ORDER BY last_seen_at DESC, id{clause.page(page)}"
        rows = await self._db.fetch(sql, *clause.args)
        return [_user_from_row(row) for row in rows], total

    async def get_user(self, user_id: str) -> UserRecord | None:
        row = await self._db.fetchrow("SELECT * FROM users WHERE id = $1", user_id)
        if row is None:
            return None
        identities = await self._db.fetch(
            "SELECT instance_name, channel, external_id FROM user_identities WHERE user_id = $1"
            " ORDER BY instance_name, channel, created_at, external_id",
            user_id,
        )
        sessions = await self._db.fetch(
            "SELECT * FROM sessions WHERE user_id = $1 ORDER BY last_message_at DESC, id", user_id
        )
        return _user_from_row(
            row,
            tuple(ExternalIdRecord(r["instance_name"], r["channel"], r["external_id"]) for r in identities),
            tuple(session_from_row(r) for r in sessions),
        )

    async def merge_users(self, user_id: str, other_user_id: str) -> bool:
        async with self._db.transaction() as tx:
            other = await tx.fetchrow("SELECT * FROM users WHERE id = $1", other_user_id)
            if other is None:
                return False
            for table in ("user_identities", "sessions", "routes"):
                await tx.execute(f"UPDATE {table} SET user_id = $1 WHERE user_id = $2", user_id, other_user_id)
            await tx.execute(
                "UPDATE users SET message_count = message_count + $2,"
                " created_at = CASE WHEN created_at < $3 THEN created_at ELSE $3 END,"
                " last_seen_at = CASE WHEN last_seen_at > $4 THEN last_seen_at ELSE $4 END,"
                " display_name = CASE WHEN display_name = '' THEN $5 ELSE display_name END,"
                " phone_number = CASE WHEN phone_number = '' THEN $6 ELSE phone_number END WHERE id = $1",
                user_id,
                int(other["message_count"]),
                float(other["created_at"]),
                float(other["last_seen_at"]),
                other["display_name"] or "",
                other["phone_number"] or "",
            )
            await tx.execute("DELETE FROM users WHERE id = $1", other_user_id)
            await tx.execute(IDENTITY_VERSION_BUMP)
        self._forget({other_user_id}, set())
        return True

    async def delete_user(self, user_id: str) -> int:
        async with self._db.transaction() as tx:
            session_ids = await self._session_ids(tx, user_id)
            await tx.execute("DELETE FROM routes WHERE user_id = $1", user_id)
            sessions = await tx.execute("DELETE FROM sessions WHERE user_id = $1", user_id)
            await tx.execute("DELETE FROM user_identities WHERE user_id = $1", user_id)
            await tx.execute("DELETE FROM users WHERE id = $1", user_id)
            await tx.execute(IDENTITY_VERSION_BUMP)
        self._forget({user_id}, session_ids)
        return sessions

    @staticmethod
    async def _session_ids(tx: Executor, user_id: str) -> set[str]:
        return {str(r["id"]) for r in await tx.fetch("SELECT id FROM sessions WHERE user_id = $1", user_id)}

    async def list_sessions(self, instance_name: str, user_id: str, page: Page) -> tuple[list[SessionRecord], int]:
        clause = _Where()
        if instance_name:
            clause.add("instance_name = {}", instance_name)
        if user_id:
            clause.add("user_id = {}", user_id)
        total = int(await self._db.fetchval(f"SELECT COUNT(*) FROM sessions{clause.sql}", *clause.args) or 0)
        sql = f"SELECT * FROM sessions{clause.sql} ORDER BY last_message_at DESC, id{clause.page(page)}"
        rows = await self._db.fetch(sql, *clause.args)
        return [session_from_row(row) for row in rows], total

    async def get_session(self, session_id: str) -> SessionRecord | None:
        row = await self._db.fetchrow("SELECT * FROM sessions WHERE id = $1", session_id)
        return session_from_row(row) if row is not None else None

    async def reset_session(self, session_id: str, new_id: str, now: float) -> SessionRecord | None:
        async with self._db.transaction() as tx:
            changed = await tx.execute(
                "UPDATE sessions SET id = $2, created_at = $3, last_message_at = $3, message_count = 0,"
                " agent_session_id = '', agent_user_id = '' WHERE id = $1",
                session_id,
                new_id,
                now,
            )
            if changed:
                await tx.execute(IDENTITY_VERSION_BUMP)
        if not changed:
            return None
        self._forget(set(), {session_id})
        return await self.get_session(new_id)
