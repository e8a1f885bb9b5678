"""Every encrypted value the router stores, found by column name: a column ending in `_enc` holds a Fernet token.

Two whole-database passes use it: the start-up check (a wrong or missing master key must stop the router at once,
naming the setting, instead of failing message by message later) and the key rotation (re-encrypt every value under
the newest key, so the old key can be dropped). Columns are discovered from the schema, so a secret column added by
a later migration is covered without touching this module.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from servicekit.database import Database
from services.router.secret_box import KEY_VARIABLES, SecretBox

ENCRYPTED_TABLES: dict[str, str] = {"instances": "name"}
"""Tables that hold `_enc` columns, with the key column a row is addressed by. (API keys are hashed, not encrypted.)"""


class UnreadableSecretsError(RuntimeError):
    """Stored secrets that none of the configured master keys opens."""


@dataclass
class RotationReport:
    """What a rotation did."""

    rows: int = 0
    """Rows looked at."""
    rewritten_rows: int = 0
    """Rows with at least one value re-encrypted."""
    rewritten_values: int = 0
    """Values re-encrypted under the newest key."""
    current_values: int = 0
    """Values already under the newest key (left as they are)."""
    by_table: dict[str, int] = field(default_factory=dict)
    """Rewritten rows per table."""


async def encrypted_columns(db: Database, table: str) -> list[str]:
    """The `_enc` columns of `table`, in schema order."""
    if db.dialect == "postgresql":
        rows = await db.fetch(
            "SELECT column_name AS name FROM information_schema.columns "
            "WHERE table_schema = current_schema() AND table_name = $1 ORDER BY ordinal_position",
            table,
        )
    else:
        rows = await db.fetch("SELECT name FROM pragma_table_info($1) ORDER BY cid", table)
    return [str(r["name"]) for r in rows if str(r["name"]).endswith("_enc")]


async def unreadable_secrets(db: Database, box: SecretBox) -> list[str]:
    """`table/key.column` of every stored value no configured key decrypts (empty when all are readable)."""
    bad: list[str] = []
    for table, key in ENCRYPTED_TABLES.items():
        columns = await encrypted_columns(db, table)
        if not columns:
            continue
        for row in await db.fetch(f"SELECT {key}, {', '.join(columns)} FROM {table} ORDER BY {key}"):
            bad.extend(f"{table}/{row[key]}.{c}" for c in columns if not box.can_decrypt(str(row[c] or "")))
    return bad


async def check_stored_secrets(db: Database, box: SecretBox) -> None:
    """Raise `UnreadableSecretsError` naming the settings when a stored secret cannot be decrypted."""
    bad = await unreadable_secrets(db, box)
    if bad:
        shown = ", ".join(bad[:5]) + (f" and {len(bad) - 5} more" if len(bad) > 5 else "")
        raise UnreadableSecretsError(
            f"{len(bad)} stored secret(s) cannot be decrypted with the configured master keys ({KEY_VARIABLES}): "
            f"{shown}. Configure the key they were encrypted with (keep old keys after the newest in "
            "AUTOMAGIK_OMNI_SECRET_KEYS until `make rotate-secrets` has run)."
        )


async def rotate_stored_secrets(db: Database, box: SecretBox) -> RotationReport:
    """Re-encrypt every stored value under the newest key, one transaction per row (a crash leaves every row whole,
    either form readable while the old key is configured). Refuses to start when any value is unreadable, so a wrong
    key list never half-rotates a database."""
    await check_stored_secrets(db, box)
    report = RotationReport()
    locking = " FOR UPDATE" if db.dialect == "postgresql" else ""
    for table, key in ENCRYPTED_TABLES.items():
        columns = await encrypted_columns(db, table)
        if not columns:
            continue
        report.by_table[table] = 0
        for ident in [r[key] for r in await db.fetch(f"SELECT {key} FROM {table} ORDER BY {key}")]:
            report.rows += 1
            async with db.transaction() as tx:
                row = await tx.fetchrow(f"SELECT {', '.join(columns)} FROM {table} WHERE {key} = $1{locking}", ident)
                if row is None:  # deleted meanwhile
                    continue
                changed: dict[str, str] = {}
                for column in columns:
                    token = str(row[column] or "")
                    if box.is_current(token):
                        report.current_values += 1 if token else 0
                        continue
                    changed[column] = box.rotate(token)
                if not changed:
                    continue
                assignments = ", ".join(f"{c} = ${i}" for i, c in enumerate(changed, start=2))
                await tx.execute(f"UPDATE {table} SET {assignments} WHERE {key} = $1", ident, *changed.values())
            report.rewritten_rows += 1
            report.rewritten_values += len(changed)
            report.by_table[table] += 1
    return report
