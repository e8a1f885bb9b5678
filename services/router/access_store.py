"""Access rules in the router's database, and the in-memory copy every message is checked against.

Messages never read rules from SQL: `AccessRuleCache` holds an `AccessPolicy` built from every rule and polls one
row, `access_rules_version`, which every change bumps in the same transaction. So a rule created through one router
replica applies on every other replica within one poll period (0.5 s by default), at the cost of one tiny query per
period per replica rather than one per message.
"""

from __future__ import annotations

from servicekit.database import Database, Row
from servicekit.instances import Instance
from servicekit.messages import InboundMessage
from servicekit.version_poll import VersionPoller
from services.router.core.access import AccessPolicy, Decision, Rule

_COLUMNS = "id, instance_name, pattern, rule_type, scope, created_at"
_BUMP = "UPDATE access_rules_version SET version = version + 1 WHERE id = 1"


def _rule(row: Row) -> Rule:
    return Rule(
        id=row["id"],
        instance_name=row["instance_name"],
        pattern=row["pattern"],
        rule_type=row["rule_type"],
        scope=row["scope"],
        created_at=float(row["created_at"]),
    )


class AccessRuleRepository:
    """The `access_rules` table; every write bumps the version the caches poll."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def list(self, instance_name: str | None = None) -> list[Rule]:
        """Rules newest first: every rule (None), or one instance's ("" for the global ones)."""
        if instance_name is None:
            rows = await self._db.fetch(f"SELECT {_COLUMNS} FROM access_rules ORDER BY created_at DESC, id")
        else:
            rows = await self._db.fetch(
                f"SELECT {_COLUMNS} FROM access_rules WHERE instance_name = $1 ORDER BY created_at DESC, id",
                instance_name,
            )
        return [_rule(row) for row in rows]

    async def get(self, rule_id: str) -> Rule | None:
        row = await self._db.fetchrow(f"SELECT {_COLUMNS} FROM access_rules WHERE id = $1", rule_id)
        return _rule(row) if row is not None else None

    async def insert(self, rule: Rule) -> None:
        async with self._db.transaction() as tx:
            await tx.execute(
                f"INSERT INTO access_rules ({_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6)",
                rule.id,
                rule.instance_name,
                rule.pattern,
                rule.rule_type,
                rule.scope,
                rule.created_at,
            )
            await tx.execute(_BUMP)

    async def delete(self, rule_id: str) -> bool:
        async with self._db.transaction() as tx:
            deleted = await tx.execute("DELETE FROM access_rules WHERE id = $1", rule_id)
            if deleted:
                await tx.execute(_BUMP)
        return deleted > 0

    async def version(self) -> int:
        """The number of changes so far: a cache reloads when it differs from the one it loaded."""
        return int(await self._db.fetchval("SELECT version FROM access_rules_version WHERE id = 1") or 0)


class AccessRuleCache:
    """Implements `core.ports.AccessChecker`: the rules in memory, reloaded when the stored version moves."""

    def __init__(self, rules: AccessRuleRepository, *, poll_seconds: float = 0.5) -> None:
        self._rules = rules
        self._policy = AccessPolicy()
        self._poller = VersionPoller(rules.version, self._reload, poll_seconds=poll_seconds, what="access rules")

    @property
    def policy(self) -> AccessPolicy:
        return self._policy

    def evaluate(self, instance: Instance, message: InboundMessage) -> Decision:
        """The decision for `message` on `instance`, from memory."""
        return self._policy.evaluate(instance.name, instance.access_mode, message)

    async def _reload(self, version: int) -> None:
        self._policy = AccessPolicy(await self._rules.list())

    async def refresh(self) -> bool:
        """Reload the rules when the stored version changed; True when it did."""
        return await self._poller.check()

    async def start(self) -> None:
        """Load the rules now (a start without them would let blocked senders through), then poll."""
        await self._poller.start()

    async def stop(self) -> None:
        await self._poller.stop()
