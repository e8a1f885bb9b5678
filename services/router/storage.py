"""The router's tables (schema "omni_router") and the SQL that reads and writes them.

Secrets are encrypted by the `SecretBox` before they reach SQL: their columns end in `_enc` and hold Fernet tokens,
so neither the database file nor a query log ever sees a clear secret. The `routes` table makes RouteMessage
idempotent: it records, per inbound message id, the agent reply (once obtained) and the final outcome.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable
from dataclasses import fields
from typing import Any

from servicekit.channels import Channel
from servicekit.database import Database, Executor, Migration, Row
from servicekit.errors import AlreadyExistsError
from servicekit.instances import (
    CONFIG_TYPES,
    INSTANCE_SECRETS,
    ChannelConfig,
    DiscordConfig,
    Instance,
    SlackConfig,
    WhatsAppConfig,
    config_values,
)
from servicekit.retention import delete_in_batches
from servicekit.version_poll import VersionPoller
from services.router.core.models import Person, RouteRecord
from services.router.secret_box import SecretBox

SCHEMA = "omni_router"
"""PostgreSQL schema of the router's tables."""

MIGRATIONS: list[Migration] = [
    Migration(
        1,
        "instances, users, identities, sessions, routes",
        [
            """CREATE TABLE instances (
                name TEXT PRIMARY KEY,
                channel TEXT NOT NULL,
                evolution_url TEXT NOT NULL DEFAULT '',
                evolution_key_enc TEXT NOT NULL DEFAULT '',
                whatsapp_instance TEXT NOT NULL DEFAULT '',
                discord_bot_token_enc TEXT NOT NULL DEFAULT '',
                discord_client_id TEXT NOT NULL DEFAULT '',
                discord_guild_id TEXT NOT NULL DEFAULT '',
                slack_bot_token_enc TEXT NOT NULL DEFAULT '',
                slack_signing_secret_enc TEXT NOT NULL DEFAULT '',
                agent_api_url TEXT NOT NULL DEFAULT '',
                agent_api_key_enc TEXT NOT NULL DEFAULT '',
                default_agent TEXT NOT NULL DEFAULT '',
                agent_timeout_seconds INTEGER NOT NULL DEFAULT 60,
                enable_auto_split BOOLEAN NOT NULL DEFAULT TRUE,
                is_active BOOLEAN NOT NULL DEFAULT TRUE,
                automagik_instance_id TEXT NOT NULL DEFAULT '',
                automagik_instance_name TEXT NOT NULL DEFAULT '',
                fallback_text TEXT NOT NULL DEFAULT '',
                webhook_secret_enc TEXT NOT NULL DEFAULT '',
                created_at DOUBLE PRECISION NOT NULL,
                updated_at DOUBLE PRECISION NOT NULL
            )""",
            "CREATE INDEX instances_channel ON instances (channel, name)",
            """CREATE TABLE users (
                id TEXT PRIMARY KEY,
                instance_name TEXT NOT NULL,
                channel TEXT NOT NULL,
                identity TEXT NOT NULL,
                display_name TEXT NOT NULL DEFAULT '',
                phone_number TEXT NOT NULL DEFAULT '',
                created_at DOUBLE PRECISION NOT NULL,
                last_seen_at DOUBLE PRECISION NOT NULL,
                message_count BIGINT NOT NULL DEFAULT 0
            )""",
            "CREATE INDEX users_instance ON users (instance_name)",
            """CREATE TABLE user_identities (
                instance_name TEXT NOT NULL,
                channel TEXT NOT NULL,
                external_id TEXT NOT NULL,
                user_id TEXT NOT NULL,
                created_at DOUBLE PRECISION NOT NULL,
                PRIMARY KEY (instance_name, channel, external_id)
            )""",
            """CREATE TABLE sessions (
                id TEXT PRIMARY KEY,
                instance_name TEXT NOT NULL,
                chat_id TEXT NOT NULL,
                channel TEXT NOT NULL,
                session_name TEXT NOT NULL,
                user_id TEXT NOT NULL,
                created_at DOUBLE PRECISION NOT NULL,
                last_message_at DOUBLE PRECISION NOT NULL,
                message_count BIGINT NOT NULL DEFAULT 0,
                UNIQUE (instance_name, chat_id)
            )""",
            """CREATE TABLE routes (
                message_id TEXT PRIMARY KEY,
                instance_name TEXT NOT NULL,
                user_id TEXT NOT NULL,
                session_id TEXT NOT NULL,
                agent_reply TEXT,
                outcome TEXT,
                error_message TEXT NOT NULL DEFAULT '',
                sent_message_ids TEXT NOT NULL DEFAULT '[]',
                attempts INTEGER NOT NULL DEFAULT 0,
                created_at DOUBLE PRECISION NOT NULL,
                updated_at DOUBLE PRECISION NOT NULL
            )""",
            "CREATE INDEX routes_instance ON routes (instance_name)",
        ],
    ),
    Migration(
        2,
        "routes_created_at",
        ["CREATE INDEX routes_created ON routes (created_at)"],
    ),
    Migration(
        3,
        "instances_channel_config",
        # Each channel's fields as one JSON object (and its secrets as one encrypted JSON object), so a new channel
        # field needs no migration. Rows written before are rewritten by `InstanceRepository.upgrade_legacy_rows`
        # (their per-field columns are then blank and unused).
        [
            "ALTER TABLE instances ADD COLUMN channel_config TEXT NOT NULL DEFAULT ''",
            "ALTER TABLE instances ADD COLUMN channel_secrets_enc TEXT NOT NULL DEFAULT ''",
        ],
    ),
    Migration(
        4,
        "instance ids, webhook auth, agent signing secrets, scoped api keys",
        # Instances stored before keep working as they did: those without a webhook secret accepted every webhook,
        # so they get webhook_auth 'none' (logged at start) instead of suddenly refusing their channel. Their ids
        # are filled in by `InstanceRepository.assign_missing_ids`.
        [
            "ALTER TABLE instances ADD COLUMN id TEXT NOT NULL DEFAULT ''",
            "ALTER TABLE instances ADD COLUMN webhook_auth TEXT NOT NULL DEFAULT 'secret'",
            "ALTER TABLE instances ADD COLUMN previous_webhook_secret_enc TEXT NOT NULL DEFAULT ''",
            "ALTER TABLE instances ADD COLUMN previous_webhook_secret_expires_at DOUBLE PRECISION NOT NULL DEFAULT 0",
            "ALTER TABLE instances ADD COLUMN agent_signing_secret_enc TEXT NOT NULL DEFAULT ''",
            "UPDATE instances SET webhook_auth = 'none' WHERE webhook_secret_enc = ''",
            """CREATE TABLE api_keys (
                id TEXT PRIMARY KEY,
                instance_name TEXT NOT NULL,
                instance_id TEXT NOT NULL,
                key_hash TEXT NOT NULL UNIQUE,
                prefix TEXT NOT NULL,
                created_at DOUBLE PRECISION NOT NULL,
                last_used_at DOUBLE PRECISION NOT NULL DEFAULT 0
            )""",
            "CREATE INDEX api_keys_instance ON api_keys (instance_name, created_at)",
        ],
    ),
    Migration(
        5,
        "group replies and voice-note transcription per instance",
        [
            "ALTER TABLE instances ADD COLUMN group_reply TEXT NOT NULL DEFAULT 'mention'",
            "ALTER TABLE instances ADD COLUMN transcription_url TEXT NOT NULL DEFAULT ''",
            "ALTER TABLE instances ADD COLUMN transcription_api_key_enc TEXT NOT NULL DEFAULT ''",
            "ALTER TABLE instances ADD COLUMN transcription_model TEXT NOT NULL DEFAULT ''",
        ],
    ),
    Migration(
        6,
        "access mode, blocked text, agent attempts and session prefix per instance",
        [
            "ALTER TABLE instances ADD COLUMN access_mode TEXT NOT NULL DEFAULT 'open'",
            "ALTER TABLE instances ADD COLUMN blocked_text TEXT NOT NULL DEFAULT ''",
            "ALTER TABLE instances ADD COLUMN agent_max_attempts INTEGER NOT NULL DEFAULT 0",
            "ALTER TABLE instances ADD COLUMN session_id_prefix TEXT NOT NULL DEFAULT ''",
        ],
    ),
    Migration(
        7,
        "access rules, and the version every router replica polls to reload them",
        # Rules are evaluated from memory (access_store.AccessRuleCache); a change bumps access_rules_version so
        # every replica reloads within its poll period instead of reading rules per message.
        [
            """CREATE TABLE access_rules (
                id TEXT PRIMARY KEY,
                instance_name TEXT NOT NULL,
                pattern TEXT NOT NULL,
                rule_type TEXT NOT NULL,
                scope TEXT NOT NULL,
                created_at DOUBLE PRECISION NOT NULL
            )""",
            "CREATE INDEX access_rules_instance ON access_rules (instance_name, created_at)",
            "CREATE TABLE access_rules_version (id INTEGER PRIMARY KEY, version BIGINT NOT NULL)",
            "INSERT INTO access_rules_version (id, version) VALUES (1, 0)",
        ],
    ),
    Migration(
        8,
        "the agent's own session and user ids per session; user lookups for the users API",
        # The ids an agent returns are sent back on the next turn (users_store.py); the indexes serve
        # GetUser, LinkUsers and DeleteUser, which select a user's identities and sessions.
        [
            "ALTER TABLE sessions ADD COLUMN agent_session_id TEXT NOT NULL DEFAULT ''",
            "ALTER TABLE sessions ADD COLUMN agent_user_id TEXT NOT NULL DEFAULT ''",
            "CREATE INDEX sessions_user ON sessions (user_id)",
            "CREATE INDEX user_identities_user ON user_identities (user_id)",
        ],
    ),
    Migration(
        9,
        "the version every router replica polls to forget its cached user and session ids",
        # A merge, erasure or reset (users_store.py) bumps it in its own transaction; each replica's identity
        # cache is dropped when it moves (IdentityRepository.watch), so no replica keeps routing to a retired id.
        [
            "CREATE TABLE identity_cache_version (id INTEGER PRIMARY KEY, version BIGINT NOT NULL)",
            "INSERT INTO identity_cache_version (id, version) VALUES (1, 0)",
        ],
    ),
]

IDENTITY_VERSION_BUMP = "UPDATE identity_cache_version SET version = version + 1 WHERE id = 1"
"""Run in the transaction of every change that retires a user or session id (users_store.py)."""

_LEGACY_PLAIN = ("evolution_url", "whatsapp_instance", "discord_client_id", "discord_guild_id")
_LEGACY_SECRETS = ("evolution_key", "discord_bot_token", "slack_bot_token", "slack_signing_secret")
_PLAIN_COLUMNS = [f.name for f in fields(Instance) if f.name not in (*INSTANCE_SECRETS, "config")]
_COLUMNS = [
    *_PLAIN_COLUMNS,
    "channel",
    "channel_config",
    "channel_secrets_enc",
    *(f"{name}_enc" for name in INSTANCE_SECRETS),
]


class InstanceRepository:
    """Instances, with secrets encrypted on the way in and decrypted on the way out."""

    def __init__(
        self,
        db: Database,
        box: SecretBox,
        *,
        cache_seconds: float = 0.0,
        on_delete: Callable[[str], None] | None = None,
    ) -> None:
        self._db = db
        self._box = box
        self._on_delete = on_delete
        self._cache_seconds = cache_seconds
        self._cache: dict[str, tuple[float, Instance | None]] = {}

    def _values(self, instance: Instance) -> list[Any]:
        config = config_values(instance.config)
        secrets = {name: config.pop(name) for name in instance.config.SECRETS}
        return [
            *(getattr(instance, name) for name in _PLAIN_COLUMNS),
            instance.channel.value,
            json.dumps(config),
            self._box.encrypt(json.dumps(secrets)),
            *(self._box.encrypt(getattr(instance, name)) for name in INSTANCE_SECRETS),
        ]

    def _from_row(self, row: Row) -> Instance:
        values: dict[str, Any] = {name: row[name] for name in _PLAIN_COLUMNS}
        values["enable_auto_split"] = bool(values["enable_auto_split"])
        values["is_active"] = bool(values["is_active"])
        values["agent_timeout_seconds"] = int(values["agent_timeout_seconds"])
        values["agent_max_attempts"] = int(values["agent_max_attempts"] or 0)
        values["previous_webhook_secret_expires_at"] = float(values["previous_webhook_secret_expires_at"] or 0)
        for name in INSTANCE_SECRETS:
            values[name] = self._box.decrypt(row[f"{name}_enc"] or "")
        kind = CONFIG_TYPES[Channel(row["channel"])]
        config = json.loads(row["channel_config"] or "{}")
        config.update(json.loads(self._box.decrypt(row["channel_secrets_enc"] or "") or "{}"))
        known = {f.name for f in fields(kind)}
        return Instance(config=kind(**{k: str(v) for k, v in config.items() if k in known}), **values)

    async def upgrade_legacy_rows(self) -> int:
        """Rewrite instances stored before migration 3 (one column per channel field) in the JSON form."""
        legacy = ", ".join([*_LEGACY_PLAIN, *(f"{name}_enc" for name in _LEGACY_SECRETS)])
        rows = await self._db.fetch(
            f"SELECT name, channel, {legacy} FROM instances WHERE channel_config = '' AND channel_secrets_enc = ''"
        )
        for row in rows:
            old = {name: str(row[name] or "") for name in _LEGACY_PLAIN}
            old.update({name: self._box.decrypt(row[f"{name}_enc"] or "") for name in _LEGACY_SECRETS})
            config = _legacy_config(Channel(row["channel"]), old)
            plain = config_values(config)
            secrets = {name: plain.pop(name) for name in config.SECRETS}
            blanks = ", ".join(f"{name} = ''" for name in (*_LEGACY_PLAIN, *(f"{n}_enc" for n in _LEGACY_SECRETS)))
            await self._db.execute(
                f"UPDATE instances SET channel_config = $2, channel_secrets_enc = $3, {blanks} WHERE name = $1",
                row["name"],
                json.dumps(plain),
                self._box.encrypt(json.dumps(secrets)),
            )
        self._cache.clear()
        return len(rows)

    async def assign_missing_ids(self) -> int:
        """Give every instance stored before migration 4 its immutable id."""
        rows = await self._db.fetch("SELECT name FROM instances WHERE id = ''")
        for row in rows:
            await self._db.execute("UPDATE instances SET id = $2 WHERE name = $1 AND id = ''", row["name"], new_id())
        self._cache.clear()
        return len(rows)

    async def create(self, instance: Instance) -> None:
        try:
            await self._create(instance)
        finally:
            self._cache.pop(instance.name, None)

    async def _create(self, instance: Instance) -> None:
        """Insert; raises `AlreadyExistsError` when the name is taken."""
        placeholders = ", ".join(f"${i}" for i in range(1, len(_COLUMNS) + 1))
        inserted = await self._db.execute(
            f"INSERT INTO instances ({', '.join(_COLUMNS)}) VALUES ({placeholders}) ON CONFLICT (name) DO NOTHING",
            *self._values(instance),
        )
        if inserted == 0:
            raise AlreadyExistsError(f"instance {instance.name!r} already exists", reason="INSTANCE_EXISTS")

    async def get(self, name: str) -> Instance | None:
        """The instance called `name`. With `cache_seconds`, a read is reused that long: every message reads its
        instance, and the read + Fernet decryption was ~10% of the router's CPU. Changes made through this
        repository show at once; changes made by another router replica show within `cache_seconds`."""
        now = time.monotonic()
        cached = self._cache.get(name)
        if cached is not None and now - cached[0] < self._cache_seconds:
            return cached[1]
        row = await self._db.fetchrow(f"SELECT {', '.join(_COLUMNS)} FROM instances WHERE name = $1", name)
        instance = self._from_row(row) if row is not None else None
        if self._cache_seconds > 0:
            if len(self._cache) > 10_000:
                self._cache.clear()
            self._cache[name] = (now, instance)
        return instance

    async def list_page(self, *, offset: int, limit: int, channel: str = "") -> tuple[list[Instance], int]:
        """One page ordered by name, and the total matching `channel` ("" for all)."""
        where, args = ("WHERE channel = $1", [channel]) if channel else ("", [])
        n = len(args)
        rows = await self._db.fetch(
            f"SELECT {', '.join(_COLUMNS)} FROM instances {where} ORDER BY name LIMIT ${n + 1} OFFSET ${n + 2}",
            *args,
            limit,
            offset,
        )
        total = await self._db.fetchval(f"SELECT COUNT(*) FROM instances {where}", *args)
        return [self._from_row(r) for r in rows], int(total or 0)

    async def list_all(self) -> list[Instance]:
        rows = await self._db.fetch(f"SELECT {', '.join(_COLUMNS)} FROM instances ORDER BY name")
        return [self._from_row(r) for r in rows]

    async def update(self, instance: Instance) -> bool:
        try:
            return await self._update(instance)
        finally:
            self._cache.pop(instance.name, None)

    async def _update(self, instance: Instance) -> bool:
        """Rewrite every column of the named instance; False when it no longer exists."""
        assignments = ", ".join(f"{col} = ${i}" for i, col in enumerate(_COLUMNS[1:], start=2))
        changed = await self._db.execute(f"UPDATE instances SET {assignments} WHERE name = $1", *self._values(instance))
        return changed > 0

    async def delete(self, name: str) -> bool:
        try:
            return await self._delete(name)
        finally:
            self._cache.pop(name, None)
            if self._on_delete is not None:
                self._on_delete(name)

    async def _delete(self, name: str) -> bool:
        """Delete the instance with its users, identities, sessions, routes, keys and access rules (bumping the rules'
        version, so every router's cache drops them); False when it did not exist."""
        async with self._db.transaction() as tx:
            deleted = await tx.execute("DELETE FROM instances WHERE name = $1", name)
            for table in ("user_identities", "users", "sessions", "routes", "api_keys"):
                await tx.execute(f"DELETE FROM {table} WHERE instance_name = $1", name)
            if await tx.execute("DELETE FROM access_rules WHERE instance_name = $1", name):
                await tx.execute("UPDATE access_rules_version SET version = version + 1 WHERE id = 1")
        return deleted > 0


def _legacy_config(channel: Channel, old: dict[str, str]) -> ChannelConfig:
    if channel is Channel.DISCORD:
        return DiscordConfig(
            bot_token=old["discord_bot_token"], client_id=old["discord_client_id"], guild_id=old["discord_guild_id"]
        )
    if channel is Channel.SLACK:
        return SlackConfig(bot_token=old["slack_bot_token"], signing_secret=old["slack_signing_secret"])
    return WhatsAppConfig(
        evolution_url=old["evolution_url"],
        evolution_key=old["evolution_key"],
        whatsapp_instance=old["whatsapp_instance"],
    )


_NAMESPACE = uuid.UUID("5f0b6a52-8f7e-4f63-9c55-0d7f1c1b1e10")


def new_id() -> str:
    """A fresh random id (UUID4, as text)."""
    return str(uuid.uuid4())


def stable_id(*parts: str) -> str:
    """A deterministic UUID for the parts, so concurrent resolvers of one identity agree on the id."""
    return str(uuid.uuid5(_NAMESPACE, "\x1f".join(parts)))


class IdentityRepository:
    """Users (one per person per instance, known under several external ids) and sessions (one per chat)."""

    def __init__(self, db: Database) -> None:
        self._db = db
        # A person's user id and a chat's session id only change through the users API (merge, erase, reset), so
        # after the first message they are served from memory (a returning sender costs no identity statement).
        # forget_instance drops an instance's entries when it is deleted; forget_ids drops retired ids on the replica
        # that retired them, and `watch` drops everything on the others when the identity version moves.
        # Keys start with (instance name, instance id): a recreated instance of the same name has another id, so
        # even a replica that did not see the delete never serves it the old instance's ids.
        self._users: dict[tuple[str, str, str, tuple[str, ...]], str] = {}
        self._sessions: dict[tuple[str, str, str], str] = {}
        self._generation = 0
        """Moves on every forget: a lookup that read the database before a forget does not cache what it read."""

    def forget_instance(self, instance_name: str) -> None:
        """Drop the cached ids of a deleted instance."""
        self._generation += 1
        self._users = {k: v for k, v in self._users.items() if k[0] != instance_name}
        self._sessions = {k: v for k, v in self._sessions.items() if k[0] != instance_name}

    def forget_ids(self, user_ids: set[str], session_ids: set[str]) -> None:
        """Drop cached entries resolving to users or sessions that were merged away, erased or reset (users API)."""
        self._generation += 1
        self._users = {k: v for k, v in self._users.items() if v not in user_ids}
        self._sessions = {k: v for k, v in self._sessions.items() if v not in session_ids}

    def forget_all(self) -> None:
        """Drop every cached id (another replica merged, erased or reset someone)."""
        self._generation += 1
        self._users = {}
        self._sessions = {}

    async def cache_version(self) -> int:
        """The identity version (`IDENTITY_VERSION_BUMP`)."""
        return int(await self._db.fetchval("SELECT version FROM identity_cache_version WHERE id = 1") or 0)

    def watch(self, *, poll_seconds: float = 0.5) -> VersionPoller:
        """A poller (to start and stop with the process) that forgets every cached id when another replica changed
        users or sessions: within `poll_seconds`, every replica routes to the surviving, new or reset ids."""

        async def forget(version: int) -> None:
            self.forget_all()

        return VersionPoller(self.cache_version, forget, poll_seconds=poll_seconds, what="identity cache")

    async def resolve_user(self, person: Person, now: float) -> str:
        """The user id of `person`, creating the user and recording any id not seen before."""
        key = (person.instance_name, person.instance_id, person.channel, tuple(person.external_ids))
        cached = self._users.get(key)
        if cached is not None:
            return cached
        generation = self._generation
        user_id = await self._resolve_user(person, now)
        if generation == self._generation:
            if len(self._users) > 100_000:
                self._users.clear()
            self._users[key] = user_id
        return user_id

    async def _resolve_user(self, person: Person, now: float) -> str:
        async with self._db.transaction() as tx:
            user_id = await self._find(tx, person)
            if user_id is None:
                user_id = stable_id("user", person.instance_id or person.instance_name, person.channel, person.identity)
                await tx.execute(
                    "INSERT INTO users (id, instance_name, channel, identity, display_name, phone_number, created_at,"
                    " last_seen_at, message_count) VALUES ($1, $2, $3, $4, $5, $6, $7, $7, 0)"
                    " ON CONFLICT (id) DO NOTHING",
                    user_id,
                    person.instance_name,
                    person.channel,
                    person.identity,
                    person.display_name,
                    person.phone_number,
                    now,
                )
            for external_id in person.external_ids:
                await tx.execute(
                    "INSERT INTO user_identities (instance_name, channel, external_id, user_id, created_at)"
                    " VALUES ($1, $2, $3, $4, $5) ON CONFLICT (instance_name, channel, external_id) DO NOTHING",
                    person.instance_name,
                    person.channel,
                    external_id,
                    user_id,
                    now,
                )
        return user_id

    @staticmethod
    async def _find(tx: Executor, person: Person) -> str | None:
        for external_id in person.external_ids:
            found = await tx.fetchval(
                "SELECT user_id FROM user_identities WHERE instance_name = $1 AND channel = $2 AND external_id = $3",
                person.instance_name,
                person.channel,
                external_id,
            )
            if found:
                return str(found)
        return None

    async def resolve_session(
        self,
        instance_name: str,
        channel: str,
        chat_id: str,
        session_name: str,
        user_id: str,
        now: float,
        *,
        instance_id: str = "",
    ) -> str:
        """The session id of the chat, creating the session on its first message."""
        cached = self._sessions.get((instance_name, instance_id, chat_id))
        if cached is not None:
            return cached
        generation = self._generation
        session_id = stable_id("session", instance_id or instance_name, chat_id)
        await self._db.execute(
            "INSERT INTO sessions (id, instance_name, chat_id, channel, session_name, user_id, created_at,"
            " last_message_at, message_count) VALUES ($1, $2, $3, $4, $5, $6, $7, $7, 0)"
            # No conflict target: two first messages of one chat resolved at once insert the same id, and with
            # only (instance_name, chat_id) as the arbiter PostgreSQL raised the primary key's violation instead.
            " ON CONFLICT DO NOTHING",
            session_id,
            instance_name,
            chat_id,
            channel,
            session_name,
            user_id,
            now,
        )
        stored = await self._db.fetchval(
            "SELECT id FROM sessions WHERE instance_name = $1 AND chat_id = $2", instance_name, chat_id
        )
        if generation == self._generation:
            if len(self._sessions) > 100_000:
                self._sessions.clear()
            self._sessions[(instance_name, instance_id, chat_id)] = str(stored or session_id)
        return str(stored or session_id)

    async def record_message(self, user_id: str, session_id: str, person: Person, now: float) -> None:
        """Count one message for the user and the session, and refresh the user's name and phone.

        Not a transaction: these are counters for display. On PostgreSQL both updates travel as one statement (a
        data-modifying CTE), one round trip per message; SQLite runs them as two local statements (its UPDATE
        has no CTE form), which cost microseconds."""
        update_user = (
            "UPDATE users SET message_count = message_count + 1, last_seen_at = $2,"
            " display_name = CASE WHEN $3 = '' THEN display_name ELSE $3 END,"
            " phone_number = CASE WHEN $4 = '' THEN phone_number ELSE $4 END WHERE id = $1"
        )
        update_session = (
            "UPDATE sessions SET message_count = message_count + 1, last_message_at = $2, user_id = $1 WHERE id = $5"
        )
        args = (user_id, now, person.display_name, person.phone_number, session_id)
        if self._db.dialect == "postgresql":
            await self._db.execute(f"WITH counted_user AS ({update_user}) {update_session}", *args)
            return
        await self._db.execute(update_user, *args[:4])  # SQLite wants exactly as many values as $N numbers
        await self._db.execute(update_session, *args)

    async def get_user(self, user_id: str) -> Row | None:
        return await self._db.fetchrow("SELECT * FROM users WHERE id = $1", user_id)

    async def get_session(self, session_id: str) -> Row | None:
        return await self._db.fetchrow("SELECT * FROM sessions WHERE id = $1", session_id)

    async def agent_ids(self, session_id: str) -> tuple[str, str]:
        """The (session id, user id) the agent returned in its last reply in this session ("" when none)."""
        row = await self._db.fetchrow("SELECT agent_session_id, agent_user_id FROM sessions WHERE id = $1", session_id)
        return (str(row["agent_session_id"] or ""), str(row["agent_user_id"] or "")) if row is not None else ("", "")

    async def store_agent_ids(self, session_id: str, agent_session_id: str, agent_user_id: str) -> None:
        """Remember the ids the agent returned, to send them back on the session's next turn."""
        await self._db.execute(
            "UPDATE sessions SET agent_session_id = $2, agent_user_id = $3 WHERE id = $1",
            session_id,
            agent_session_id,
            agent_user_id,
        )


class RouteRepository:
    """The idempotency record of RouteMessage, keyed by inbound message id."""

    def __init__(self, db: Database) -> None:
        self._db = db

    @staticmethod
    def _from_row(row: Row) -> RouteRecord:
        return RouteRecord(
            message_id=row["message_id"],
            instance_name=row["instance_name"],
            user_id=row["user_id"],
            session_id=row["session_id"],
            agent_reply=json.loads(row["agent_reply"]) if row["agent_reply"] else None,
            outcome=row["outcome"],
            error_message=row["error_message"] or "",
            sent_message_ids=tuple(json.loads(row["sent_message_ids"] or "[]")),
            attempts=int(row["attempts"]),
        )

    async def get(self, message_id: str) -> RouteRecord | None:
        row = await self._db.fetchrow("SELECT * FROM routes WHERE message_id = $1", message_id)
        return self._from_row(row) if row is not None else None

    async def claim(self, record: RouteRecord, now: float) -> bool:
        """Insert the record of a new message; False when another attempt already did."""
        inserted = await self._db.execute(
            "INSERT INTO routes (message_id, instance_name, user_id, session_id, attempts, created_at, updated_at)"
            " VALUES ($1, $2, $3, $4, 1, $5, $5) ON CONFLICT (message_id) DO NOTHING",
            record.message_id,
            record.instance_name,
            record.user_id,
            record.session_id,
            now,
        )
        return inserted > 0

    async def purge_finished(self, cutoff: float) -> int:
        """Delete the records of messages finished (with an outcome) and created before `cutoff`; returns the count.

        Records without an outcome stay: their message may still be redelivered (a dead letter), and the stored
        agent reply must then be reused rather than asked for again."""
        return await delete_in_batches(
            self._db,
            "DELETE FROM routes WHERE message_id IN (SELECT message_id FROM routes WHERE created_at < $1 "
            "AND outcome IS NOT NULL ORDER BY created_at LIMIT $2)",
            cutoff,
        )

    async def count_attempt(self, message_id: str, now: float) -> None:
        await self._db.execute(
            "UPDATE routes SET attempts = attempts + 1, updated_at = $2 WHERE message_id = $1", message_id, now
        )

    async def store_reply(self, message_id: str, reply: dict[str, Any], now: float) -> dict[str, Any]:
        """Store the agent reply unless one is stored already; returns the stored one (the first wins)."""
        stored = await self._db.fetchval(
            "UPDATE routes SET agent_reply = $2, updated_at = $3 WHERE message_id = $1 AND agent_reply IS NULL"
            " RETURNING agent_reply",
            message_id,
            json.dumps(reply),
            now,
        )
        if stored is None:  # an earlier attempt stored one first
            stored = await self._db.fetchval("SELECT agent_reply FROM routes WHERE message_id = $1", message_id)
        result: dict[str, Any] = json.loads(stored) if stored else reply
        return result

    async def finish(
        self, message_id: str, outcome: str, error_message: str, sent_message_ids: list[str], now: float
    ) -> None:
        """Record the final outcome; later attempts return it without doing anything."""
        await self._db.execute(
            "UPDATE routes SET outcome = $2, error_message = $3, sent_message_ids = $4, updated_at = $5"
            " WHERE message_id = $1",
            message_id,
            outcome,
            error_message,
            json.dumps(sent_message_ids),
            now,
        )
